"""The daemon end to end against real parts: ingest, seals, proofs, anchors, bad input, refusal to run."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import sqlite3
import subprocess
import urllib.request

import pytest

from anchors.s3 import SealReader
from notary import merkle
from notary.checkpoint import verify_signed_checkpoint
from notary.client import ClientError, submit_unix
from notary.store import LogStore
from notary.tlogproof import verify_tlog_proof


def digests(n: int, tag: str) -> list[bytes]:
    return [hashlib.sha256(f"{tag}-{i}".encode()).digest() for i in range(n)]


def http(daemon, method: str, path: str, body: bytes | None = None, token: str | None = "default"):
    headers = {"Content-Type": "application/json"}
    token = daemon.stack.token if token == "default" else token
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(daemon.url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_submit_seal_anchor_prove_verify(daemon_factory, stack, tmp_path):
    d = daemon_factory("e2e", max_age=0.3).start()
    client = d.client()
    ds = digests(5, "e2e")
    answers = client.submit(ds[:3], wait_sealed=True)
    indices = [a["index"] for a in answers]
    assert indices == list(range(indices[0], indices[0] + 3))  # request order, consecutive
    vkeys = d.vkeys()
    for digest, answer in zip(ds, answers):
        record = verify_tlog_proof(answer["proof"], vkeys, origin="dev.notary.localhost/log")
        assert (record.entry.digest, record.entry.source, record.index) == (digest, "dev-producer", answer["index"])

    # The unix socket: the source is the peer's uid, mapped in the configuration.
    unix_indices = submit_unix(d.socket, ds[3:])
    assert unix_indices == [indices[-1] + 1, indices[-1] + 2]
    d.wait_anchored(unix_indices[-1] + 1)
    record = verify_tlog_proof(client.proof(digest=ds[4]), vkeys)
    assert (record.index, record.entry.source) == (unix_indices[1], "local-user")

    # The seal as published: signed checkpoint, RFC 3161 token that openssl accepts,
    # consistency with the previous seal, and a COMPLIANCE lock read back from S3.
    status, _, body = http(d, "GET", f"/v1/seals/{record.tree_size}")
    assert status == 200
    seal, where = json.loads(body)["seal"], json.loads(body)["s3"]
    signed, keys = verify_signed_checkpoint(seal["checkpoint"], vkeys)
    assert signed.checkpoint.size == seal["tree_size"] == record.tree_size
    (tmp_path / "checkpoint").write_bytes(seal["checkpoint"].encode())
    (tmp_path / "token.der").write_bytes(base64.b64decode(seal["timestamp_token"]))
    ok = subprocess.run(["openssl", "ts", "-verify", "-data", str(tmp_path / "checkpoint"), "-token_in",
                         "-in", str(tmp_path / "token.der"), "-CAfile", str(stack.data_dir / "tsa" / "root.pem")],
                        capture_output=True, text=True)
    assert "Verification: OK" in ok.stdout, ok.stdout + ok.stderr
    prev = seal["previous_tree_size"]
    if prev:
        prev_root = json.loads(http(d, "GET", f"/v1/seals/{prev}")[2])["seal"]["root_hash"]
        merkle.verify_consistency(prev, seal["tree_size"], base64.b64decode(prev_root),
                                  base64.b64decode(seal["root_hash"]),
                                  [base64.b64decode(h) for h in seal["consistency_proof"]])
    assert where["lock_mode"] == "COMPLIANCE" and where["bucket"] == "notary-dev-seals"
    import asyncio

    reader = SealReader(stack.s3.client(), "notary-dev-seals", prefix="e2e/")
    records = asyncio.run(reader.seals())
    ours = next(r for r in records if r.tree_size == record.tree_size)
    assert len(ours.versions) == 1 and not ours.tampered
    lock = ours.versions[0].lock
    assert lock.mode == "COMPLIANCE" and lock.retain_until > datetime.datetime.now(datetime.UTC)

    # The consistency endpoint agrees with the RFC 9162 verifier, between two seals.
    if prev:
        body = json.loads(http(d, "GET", f"/v1/consistency?from={prev}&to={record.tree_size}")[2])
        merkle.verify_consistency(prev, record.tree_size, base64.b64decode(prev_root), base64.b64decode(seal["root_hash"]),
                                  [base64.b64decode(h) for h in body["proof"]])
    assert d.stop() == 0


def test_bad_requests_are_refused_and_append_nothing(daemon_factory):
    d = daemon_factory("bad", max_age=0.2, limits={"max_request_digests": 10, "max_request_bytes": 4096}).start()
    good = digests(1, "bad")[0].hex()
    before = d.client().submit([bytes.fromhex(good)], wait_sealed=True)[0]["index"]

    status, _, body = http(d, "POST", "/v1/entries", json.dumps({"digests": [good, "zz" * 32, good]}).encode())
    assert status == 400 and "digests[1]" in json.loads(body)["error"]
    status, _, body = http(d, "POST", "/v1/entries", json.dumps({"digests": [good, 42]}).encode())
    assert status == 400 and "digests[1]" in json.loads(body)["error"]
    status, _, body = http(d, "POST", "/v1/entries", b"{not json")
    assert status == 400 and "not JSON" in json.loads(body)["error"]
    status, headers, _ = http(d, "POST", "/v1/entries", json.dumps({"digests": [good]}).encode(), token="wrong")
    assert status == 401 and headers.get("WWW-Authenticate") == "Bearer"
    status, _, _ = http(d, "POST", "/v1/entries", json.dumps({"digests": [good]}).encode(), token=None)
    assert status == 401
    status, _, body = http(d, "POST", "/v1/entries", json.dumps({"digests": [good] * 11}).encode())
    assert status == 413 and "limit 10" in json.loads(body)["error"]
    status, _, body = http(d, "POST", "/v1/entries", json.dumps({"digests": [good], "pad": "x" * 5000}).encode())
    assert status == 413

    status, _, body = http(d, "GET", "/v1/proof?digest=" + "00" * 32)
    assert status == 404 and "not in the log" in json.loads(body)["error"]
    status, _, body = http(d, "GET", "/v1/proof?digest=xyz")
    assert status == 400
    status, _, body = http(d, "GET", "/v1/proof?index=-1")
    assert status == 400

    # Nothing was appended by any refused request.
    after = d.client().submit([bytes.fromhex(good)])[0]["index"]
    assert after == before + 1
    assert d.stop() == 0


def test_unix_socket_reports_bad_lines_in_order(daemon_factory):
    d = daemon_factory("unixbad", max_age=0.2).start()
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(d.socket))
        sock.sendall(b"ab" * 32 + b"\nnot-a-digest\n" + b"cd" * 32 + b"\n")
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    first, second, third = answer.decode().splitlines()
    assert second.startswith("error: digest 'not-a-digest' is not 64 hex digits")
    assert int(third) == int(first) + 1  # nothing appended for the bad line
    with pytest.raises(ClientError, match="not 64 hex digits"):
        submit_unix(d.socket, [b"\x01" * 32, b"\x02" * 31])  # a short digest is a malformed line
    assert d.stop() == 0


def test_proof_before_the_seal_is_425(daemon_factory):
    d = daemon_factory("early", max_age=30, max_entries=100000).start()
    index = d.client().submit(digests(1, "early"))[0]["index"]
    status, headers, _ = http(d, "GET", f"/v1/proof?index={index}")
    assert status == 425 and int(headers["Retry-After"]) >= 1
    assert d.stop() == 0  # SIGTERM seals what was accepted


def test_restart_on_an_altered_store_refuses_to_seal(daemon_factory):
    d = daemon_factory("altered", max_age=0.2).start()
    d.client().submit(digests(20, "altered"), wait_sealed=True)
    assert d.stop() == 0
    log_db = d.data_dir / "log.db"
    with LogStore(log_db) as store:
        size = store.size
    # A DBA with full rights rewrites history: the stored hash of the first 16
    # leaves (tile level 1), so the tree of the same size has another root.
    db = sqlite3.connect(log_db)
    (tile,) = db.execute("SELECT hashes FROM tiles WHERE id = ?", (1 << 48,)).fetchone()
    db.execute("UPDATE tiles SET hashes = ? WHERE id = ?", (b"\xee" * 32 + tile[32:], 1 << 48))
    db.commit()
    db.close()
    d.start(wait=False)
    assert d.process.wait(60) == 3
    d.process = None
    assert "the store was altered" in d.log_tail()
    assert f"at size {size}" in d.log_tail()


def test_restart_on_a_truncated_store_refuses_to_seal(daemon_factory):
    d = daemon_factory("truncated", max_age=0.2).start()
    d.client().submit(digests(5, "truncated"), wait_sealed=True)
    assert d.stop() == 0
    log_db = d.data_dir / "log.db"
    log_db.unlink()
    for extra in ("-wal", "-shm"):
        (d.data_dir / f"log.db{extra}").unlink(missing_ok=True)
    d.start(wait=False)
    assert d.process.wait(60) == 3
    d.process = None
    assert "the store was truncated or replaced" in d.log_tail()


def test_restart_on_a_data_directory_older_than_the_bucket_refuses_to_seal(daemon_factory, stack):
    """log.db and seals.db restored together from an older backup: consistent with each other, behind the bucket.

    Sealing on would reuse indices the bucket's seals cover and publish a seal
    that contradicts them (a fork, locked for good); the daemon refuses to start.
    Also a second notary on the same prefix, with no seals of its own.
    """
    import shutil

    d = daemon_factory("restored", max_age=0.2).start()
    first = d.client().submit(digests(5, "restored-a"), wait_sealed=True)[-1]["index"] + 1
    assert d.stop() == 0
    backup = d.data_dir.parent / "restored-backup"
    shutil.copytree(d.data_dir, backup)
    d.start()
    second = d.client().submit(digests(5, "restored-b"), wait_sealed=True)[-1]["index"] + 1
    assert d.stop() == 0
    shutil.rmtree(d.data_dir)
    shutil.copytree(backup, d.data_dir)
    d.start(wait=False)
    assert d.process.wait(60) == 3, d.log_tail()
    d.process = None
    tail = d.log_tail()
    assert f"already holds the seal of tree size {second}" in tail, tail
    assert f"this host's seals database has seals up to tree size {first}" in tail, tail
    # A fresh data directory on the same prefix: the bucket is ahead of it too.
    other = daemon_factory("restored-other", max_age=0.2)
    other.config_path.write_text(other.config_path.read_text().replace('prefix = "restored-other/"',
                                                                       'prefix = "restored/"'))
    other.start(wait=False)
    assert other.process.wait(60) == 3, other.log_tail()
    other.process = None
    assert "but this host's seals database has no seals" in other.log_tail()


def test_daemon_stops_when_its_store_writer_dies(daemon_factory):
    """The writer process is the only one that commits: without it the daemon exits (systemd restarts it)."""
    import psutil

    d = daemon_factory("writer-dies").start()
    first = d.client().submit(digests(3, "before"))
    writers = [p for p in psutil.Process(d.process.pid).children()
               if "spawn_main" in " ".join(p.cmdline()) and "resource_tracker" not in " ".join(p.cmdline())]
    assert len(writers) == 1, [p.cmdline() for p in psutil.Process(d.process.pid).children()]
    writers[0].kill()
    assert d.process.wait(30) == 1
    d.process = None
    assert "the writer process of log store" in d.log_tail() and "ended unexpectedly" in d.log_tail()
    d.start()  # a restart takes the lock the dead writer held and keeps what it committed
    status, _, body = http(d, "GET", f"/v1/proof?index={first[-1]['index']}")
    assert status in (200, 425), body
    assert d.stop() == 0
    with LogStore(d.data_dir / "log.db") as store:
        assert store.size >= 3


def test_check_store_beside_a_daemon_under_ingest_finds_nothing_wrong(daemon_factory, capsys):
    """``notary check-store`` is scheduled on live hosts (config/merkle-notary-check.timer): no false alarm while seals land."""
    import threading
    import time

    from notary.cli import main

    d = daemon_factory("live-check", max_age=0.05, max_entries=300).start()
    client = d.client()
    client.submit(digests(2000, "live-check-0"), wait_sealed=True)
    stop, sent, errors = threading.Event(), [0], []

    def ingest() -> None:
        try:
            while not stop.is_set():
                client.submit(digests(200, f"live-check-{sent[0] + 1}"))
                sent[0] += 1
        except Exception as exc:  # reported below, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=ingest)
    thread.start()
    try:
        results = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline or len(results) < 3:
            results.append(main(["check-store", str(d.data_dir)]))
    finally:
        stop.set()
        thread.join()
    out = capsys.readouterr().out
    assert not errors and sent[0] > 5
    assert results == [0] * len(results), out
    assert out.count("OK: ") == len(results) and "seals agree with the log" in out
    assert d.stop() == 0


def _post_waiting(d, hex_digests: list[str], answer: dict):
    """POST ?wait=sealed in a thread; ``answer`` gets the status and the JSON body."""
    import threading

    def post():
        req = urllib.request.Request(d.url + "/v1/entries?wait=sealed", method="POST",
                                     data=json.dumps({"digests": hex_digests}).encode(),
                                     headers={"Authorization": f"Bearer {d.stack.token}"})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                answer["status"], answer["body"] = resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            answer["status"], answer["body"] = exc.code, json.loads(exc.read())

    thread = threading.Thread(target=post)
    thread.start()
    return thread


def _stop_once_committed(d, size: int) -> int:
    import signal
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
            line.startswith("notary_log_entries ") and float(line.split()[1]) >= size
            for line in d.client().metrics().splitlines()):
        time.sleep(0.05)
    d.process.send_signal(signal.SIGTERM)
    code = d.process.wait(120)
    d.process = None
    return code


def test_sigterm_answers_a_waiting_submission_with_its_proofs(daemon_factory):
    """SIGTERM seals and anchors what was accepted; a ?wait=sealed request in flight gets its proofs.

    Before, the store closed while the answer's proofs were being built: a 500 for entries that were
    durable and anchored, which a producer would submit again.
    """
    d = daemon_factory("sigterm-wait", max_age=60, max_entries=1_000_000).start()
    hex_digests = [h.hex() for h in digests(2000, "sigterm-wait")]
    answer: dict = {}
    thread = _post_waiting(d, hex_digests, answer)
    assert _stop_once_committed(d, len(hex_digests)) == 0
    thread.join(60)
    assert answer["status"] == 200, (answer, d.log_tail())
    entries = answer["body"]["entries"]
    first = entries[0]["index"]  # after the key events the daemon logged at its first start
    assert [e["index"] for e in entries] == list(range(first, first + len(hex_digests)))
    for e in entries[:: len(entries) // 4]:
        proof = verify_tlog_proof(e["proof"].encode(), d.vkeys())
        assert proof.index == e["index"]


def test_sigterm_before_anchoring_answers_a_waiting_submission_with_its_indices(daemon_factory, stack):
    """The TSA unreachable and the drain timeout short: the entries are durable but not anchored before the
    daemon exits. The waiting request gets a 503 that carries their indices and says not to submit again."""
    d = daemon_factory("sigterm-unanchored", max_age=60, max_entries=1_000_000, shutdown_timeout=1)
    d.config_path.write_text(d.config_path.read_text().replace(stack.tsa_url, "http://127.0.0.1:9/"))
    d.start()
    hex_digests = [h.hex() for h in digests(10, "sigterm-unanchored")]
    answer: dict = {}
    thread = _post_waiting(d, hex_digests, answer)
    assert _stop_once_committed(d, len(hex_digests)) == 0
    thread.join(60)
    assert answer["status"] == 503, (answer, d.log_tail())
    first = answer["body"]["entries"][0]["index"]
    assert answer["body"]["entries"] == [{"index": i} for i in range(first, first + len(hex_digests))]
    assert "do not submit again" in answer["body"]["error"]


def test_seals_waiting_through_a_key_rotation_are_signed_again_and_audit_clean(daemon_factory, stack, tmp_path):
    """The daemon stops with seals in its outbox (the TSA down); the operator rotates the key while it is
    stopped (a successor activated, the old key retired). Auditors judge a key at the token's time, which
    comes after the retirement: a seal signed by the old key alone would never verify, locked for years.
    At the restart the waiting seals are signed again by the active key before they are timestamped."""
    import asyncio
    import shutil
    import sys
    import time

    from anchors.tsa import load_roots
    from hsm.keyring import Keyring
    from notary.audit import audit_seals, fetch_seals
    from notary.devstack import BUCKET, TOKEN_LABEL
    from notary.trust import TrustedKeys

    keyring = tmp_path / "keyring.json"
    shutil.copy(stack.keyring_path, keyring)
    d = daemon_factory("rotate-outbox", max_age=0.2, shutdown_timeout=1)
    config = d.config_path.read_text().replace(str(stack.keyring_path), str(keyring))
    d.config_path.write_text(config.replace(stack.tsa_url, "http://127.0.0.1:9/"))
    d.start()
    size = d.client().submit(digests(5, "rotate-outbox"))[-1]["index"] + 1
    deadline = time.monotonic() + 60
    while not any(line.startswith("notary_sealed_tree_size ") and float(line.split()[1]) >= size
                  for line in d.client().metrics().splitlines()):
        assert time.monotonic() < deadline, d.log_tail()
        time.sleep(0.1)
    assert d.stop() == 0
    old = [k.label for k in Keyring.load(keyring).active_keys()]  # the stack's key (and one another test added)
    token = ["--token", TOKEN_LABEL, "--pin", f"file:{stack.data_dir / 'hsm' / 'user.pin'}"]
    for args in (["generate", "--label", "rotate-outbox-new", "--algorithm", "ed25519", *token],
                 ["activate", "rotate-outbox-new", *token], *[["retire", label] for label in old]):
        time.sleep(1.1)  # keyring times are whole seconds: each event after the one before
        result = subprocess.run([sys.executable, "-m", "notary.cli", "keys", *args, "--keyring", str(keyring)],
                                env=stack.env(), capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    time.sleep(1.1)
    d.config_path.write_text(config)  # the TSA is back
    d.start()
    d.wait_anchored(size)
    assert d.stop() == 0
    stored = asyncio.run(fetch_seals(SealReader(stack.s3.client(), BUCKET, "rotate-outbox/")))
    report = audit_seals(stored, TrustedKeys.from_keyring(Keyring.load(keyring)),
                         load_roots(stack.data_dir / "tsa" / "root.pem"), prefix="rotate-outbox/")
    assert report.ok and report.seals, [f.line() for f in report.findings]
    assert [k.label for k in Keyring.load(keyring).active_keys()] == ["rotate-outbox-new"]
    assert all([k.label for k in s.verified.signed_by] == ["rotate-outbox-new"] for s in report.seals)
    assert "signed again with the 1 active keys before it is timestamped" in d.log_path.read_text()
