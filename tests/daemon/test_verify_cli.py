"""``notary verify`` against a real daemon's proofs and seals (SoftHSM2, dev TSA, SeaweedFS):
a clean record verifies with exit 0, each failure class exits with its own code and names the record or object."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import subprocess
import sys

from anchors.tsa import load_roots, verify_token
from hsm.keyring import Keyring
from notary.devstack import ORIGIN
from notary.tlogproof import TlogProof, parse_tlog_proof
from notary.checkpoint import parse_signed_checkpoint
from notary.verify import EXIT_LOCK, EXIT_MALFORMED, EXIT_RECORD, EXIT_SIGNATURE, EXIT_TIMESTAMP, EXIT_USAGE
from tests.daemon.sealtamper import (
    encode_seal, put_seal, resigned_checkpoint, rogue_token, run_cli, s3_args, s3_env, seal_docs, trust_args,
)

LINE = "user=alice action=login"


def notarize(daemon, tmp_path, line: str = LINE):
    """Submit one record, wait for its anchored seal; return the proof file and the seal's JSON."""
    answer = daemon.client().submit([hashlib.sha256(line.encode()).digest()], wait_sealed=True)[0]
    proof = tmp_path / "record.tlog-proof"
    proof.write_text(answer["proof"])
    size = parse_tlog_proof(answer["proof"]).signed.checkpoint.size
    daemon.wait_anchored(size)
    doc = seal_docs(daemon.stack, daemon.name + "/")[size]
    seal = tmp_path / "seal.json"
    seal.write_bytes(encode_seal(doc))
    return proof, seal, doc


def test_untouched_record_verifies_with_keyring_timestamp_and_lock(daemon_factory, stack, tmp_path, capsys, monkeypatch):
    d = daemon_factory("vfy-clean", max_age=0.2).start()
    proof, seal, doc = notarize(d, tmp_path)
    s3_env(monkeypatch, stack)
    code, out, err = run_cli(capsys, "verify", proof, "--line", LINE, *trust_args(stack), "--s3", *s3_args(stack, "vfy-clean/"))
    assert code == 0, out + err
    digest = hashlib.sha256(LINE.encode()).hexdigest()
    assert out.startswith(f"VERIFIED: record {digest} (the record given) was notarized by source 'dev-producer' "
                          f"in log {ORIGIN} at index "), out
    assert f"sealed at tree size {doc['tree_size']}" in out
    assert "timestamped 20" in out and "by TSA CN=merkle-notary development TSA" in out
    assert f"vfy-clean/seals/{doc['tree_size']:020d}.json version " in out and "locked in COMPLIANCE mode until" in out

    # --json says the same, with every check ok; the seal file alone (no S3) verifies too.
    code, out, _ = run_cli(capsys, "verify", proof, "--line", LINE, *trust_args(stack), "--seal", seal, "--json")
    verdict = json.loads(out)
    assert code == 0 and verdict["verified"] and verdict["digest"] == digest
    assert {c["check"]: c["status"] for c in verdict["checks"]} == {
        "record": "ok", "inclusion": "ok", "signature": "ok", "timestamp": "ok", "s3": "not checked"}

    # The README flow, as a user runs it: a subprocess with dev.json.
    dev_json = tmp_path / "dev.json"
    dev_json.write_text(json.dumps(stack.dev_info(d.url)))
    run = subprocess.run([sys.executable, "-m", "notary.cli", "verify", str(proof), "--dev-json", str(dev_json),
                          "--line", LINE], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.startswith("VERIFIED: record "), run.stdout + run.stderr
    run = subprocess.run([sys.executable, "-m", "notary.cli", "verify", str(proof), "--dev-json", str(dev_json),
                          "--line", LINE, "--s3", "--prefix", "vfy-clean/"], capture_output=True, text=True)
    assert run.returncode == 0 and "locked in COMPLIANCE mode until" in run.stdout, run.stdout + run.stderr
    assert d.stop() == 0


def test_verify_exit_codes_name_the_failure(daemon_factory, stack, tmp_path, capsys, monkeypatch):
    d = daemon_factory("vfy-bad", max_age=0.2).start()
    proof, seal, doc = notarize(d, tmp_path)
    trust = trust_args(stack)

    # 4: another record than the one the proof covers.
    code, out, _ = run_cli(capsys, "verify", proof, "--line", LINE + " ", *trust, "--seal", seal)
    assert code == EXIT_RECORD, out
    assert f"the record's SHA-256 is {hashlib.sha256((LINE + ' ').encode()).hexdigest()}, but the proof is for " \
           f"{hashlib.sha256(LINE.encode()).hexdigest()}" in out

    # 6: the same tree head signed by a key no one trusts (the keyring's keys as strings: trusted at any time).
    forged = tmp_path / "forged.tlog-proof"
    original = parse_tlog_proof(proof.read_bytes())
    signed = parse_signed_checkpoint(resigned_checkpoint(doc))
    forged.write_bytes(TlogProof(original.entry, original.index, original.path, signed).encode())
    vkeys = [a for k in stack.dev_info(d.url)["vkeys"] for a in ("--vkey", k)]
    code, out, _ = run_cli(capsys, "verify", forged, "--line", LINE, *vkeys)
    assert code == EXIT_SIGNATURE, out
    assert "NOT VERIFIED" in out and "no signature by a trusted key" in out

    # 6: the genuine seal, but the keyring says its key was retired (for a successor) before the token's time.
    token_time = verify_token(base64.b64decode(doc["timestamp_token"]), doc["checkpoint"].encode(),
                              load_roots(stack.data_dir / "tsa" / "root.pem")).gen_time
    retired_at = token_time.replace(microsecond=0) - datetime.timedelta(seconds=1)
    keyring = Keyring.load(stack.keyring_path)
    history = _successor(keyring, retired_at)
    for key in keyring.active_keys():
        history = history.retire(key.key_id.hex(), now=retired_at)
    retired = tmp_path / "retired-keyring.json"
    retired.write_bytes(history.encode())
    code, out, _ = run_cli(capsys, "verify", proof, "--line", LINE, "--keyring", retired,
                           "--tsa-roots", stack.data_dir / "tsa" / "root.pem", "--seal", seal)
    assert code == EXIT_SIGNATURE, out
    assert f"until {retired_at:%Y-%m-%dT%H:%M:%SZ}, and the signature is judged at the timestamp's time" in out

    # 7: the seal's token replaced by one from another TSA (its own CA) over the very same checkpoint.
    rogue = tmp_path / "rogue-seal.json"
    rogue.write_bytes(encode_seal(doc, timestamp_token=rogue_token(tmp_path / "rogue-tsa", doc["checkpoint"].encode())))
    code, out, _ = run_cli(capsys, "verify", proof, "--line", LINE, *trust, "--seal", rogue)
    assert code == EXIT_TIMESTAMP, out
    assert f"the timestamp token of the seal of tree size {doc['tree_size']} fails" in out and "not signed by a TSA" in out

    # 8: a second version written at the seal's key in S3.
    version = put_seal(stack, "vfy-bad/", doc["tree_size"], encode_seal(doc, sealed_at="2026-01-01T00:00:00.000000Z"))
    s3_env(monkeypatch, stack)
    code, out, _ = run_cli(capsys, "verify", proof, "--line", LINE, *trust, "--s3", *s3_args(stack, "vfy-bad/"))
    assert code == EXIT_LOCK, out
    assert f"vfy-bad/seals/{doc['tree_size']:020d}.json: the key holds 2 versions" in out and version in out

    # 3 and 2: a malformed proof, and a keyring without a seal to say when.
    bad = tmp_path / "bad.tlog-proof"
    bad.write_text("not a proof\n\n")
    assert run_cli(capsys, "verify", bad, *vkeys)[0] == EXIT_MALFORMED
    code, _, err = run_cli(capsys, "verify", proof, *trust)
    assert code == EXIT_USAGE and "give --seal FILE or --s3" in err
    assert d.stop() == 0


def _successor(keyring: Keyring, when: datetime.datetime) -> Keyring:
    """The keyring with a second (Ed25519, RFC 8032 test 1) key generated and activated at ``when``."""
    public = base64.b64decode("11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
    key_id = hashlib.sha256(public).digest()[:16]
    if any(k.key_id == key_id for k in keyring.keys()):
        return keyring
    return keyring.generate(key_id, "successor", "ed25519", public, now=when).activate(key_id.hex(), now=when)


def test_a_proof_without_a_record_says_so_and_a_line_is_hashed_as_its_own_bytes(daemon_factory, stack, tmp_path, capsys):
    d = daemon_factory("vfy-bytes", max_age=0.2).start()
    latin1 = "caf\xe9 ouvert".encode("latin-1")  # a log line that is not UTF-8
    answer = d.client().submit([hashlib.sha256(latin1).digest()], wait_sealed=True)[0]
    proof = tmp_path / "latin1.tlog-proof"
    proof.write_text(answer["proof"])
    vkeys = [arg for key in stack.dev_info(d.url)["vkeys"] for arg in ("--vkey", key)]  # keys alone: no seal needed
    code, out, err = run_cli(capsys, "verify", proof, *vkeys)
    assert code == 0 and out.startswith("VERIFIED (proof only, no record given to compare): digest "), out + err
    # argv holds the line's bytes as the shell passed them (os.fsdecode): they are what is hashed.
    code, out, err = run_cli(capsys, "verify", proof, "--line", os.fsdecode(latin1), *vkeys)
    assert code == 0 and out.startswith(f"VERIFIED: record {hashlib.sha256(latin1).hexdigest()} (the record given)"), \
        out + err
    assert d.stop() == 0
