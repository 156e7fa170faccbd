"""``notary audit`` on a real daemon's bucket (SeaweedFS with Object Lock): the untouched seals audit clean,
and each kind of tampering, done for real with boto3, is reported naming the object key and version."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json

import pytest

from anchors.s3 import SealReader, seal_key
from anchors.tsa import load_roots
from hsm.keyring import Keyring
from notary.audit import audit_bucket
from notary.cli_verify import EXIT_FINDINGS
from notary.devstack import BUCKET
from notary.trust import TrustedKeys
from tests.daemon.sealtamper import (
    copy_chain, encode_seal, put_seal, resigned_checkpoint, rogue_token, run_cli, s3_args, s3_env, seal_docs,
    trusted_token, trust_args,
)


@pytest.fixture(scope="module")
def sealed(stack, tmp_path_factory):
    """A daemon's bucket prefix with four seals, each from its own batch; the daemon is stopped after."""
    from tests.daemon.conftest import Daemon

    d = Daemon(stack, "aud", max_age=0.2).start()
    try:
        for batch in range(4):
            last = d.client().submit([hashlib.sha256(f"aud-{batch}-{i}".encode()).digest() for i in range(3)],
                                     wait_sealed=True)[-1]
        d.wait_anchored(last["index"] + 1)
    finally:
        assert d.stop() == 0
    docs = seal_docs(stack, "aud/")
    assert len(docs) >= 4
    return docs


def audit(stack, prefix: str, min_retention=None):
    trust = TrustedKeys.from_keyring(Keyring.load(stack.keyring_path))
    reader = SealReader(stack.s3.client(), BUCKET, prefix)
    return asyncio.run(audit_bucket(reader, trust, load_roots(stack.data_dir / "tsa" / "root.pem"),
                                    min_retention=min_retention))


def kinds(report) -> set[tuple[str, str]]:
    return {(f.kind, f.key) for f in report.findings}


def test_untouched_bucket_audits_clean(stack, sealed, capsys, monkeypatch, tmp_path):
    s3_env(monkeypatch, stack)
    code, out, err = run_cli(capsys, "audit", *trust_args(stack), *s3_args(stack, "aud/"))
    assert code == 0, out + err
    assert out.startswith(f"CLEAN: {len(sealed)} seals in s3://{BUCKET}/aud/, tree sizes {min(sealed)} to {max(sealed)}")
    code, out, _ = run_cli(capsys, "audit", *trust_args(stack), *s3_args(stack, "aud/"), "--json",
                           "--min-retention-days", "1")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["findings"] == [] and report["seal_count"] == len(sealed)
    assert all(s["verified"] and s["lock_mode"] == "COMPLIANCE" for s in report["seals"])
    # The dev stack's dev.json is enough: verifier keys, TSA roots, bucket and credentials.
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    dev_json = tmp_path / "dev.json"
    dev_json.write_text(json.dumps(stack.dev_info("http://unused")))
    code, out, err = run_cli(capsys, "audit", "--dev-json", dev_json, "--prefix", "aud/")
    assert code == 0 and out.startswith(f"CLEAN: {len(sealed)} seals"), out + err


def test_overwritten_seal_is_an_extra_version_and_a_fork(stack, sealed, capsys, monkeypatch):
    copy_chain(stack, sealed, "aud-overwrite/")
    size = sorted(sealed)[1]
    doc = sealed[size]
    other_root = hashlib.sha256(b"another history").digest()
    forged = encode_seal(doc, root_hash=base64.b64encode(other_root).decode(),
                         checkpoint=resigned_checkpoint(doc, root=other_root).decode())
    version = put_seal(stack, "aud-overwrite/", size, forged)
    key = seal_key("aud-overwrite/", size)
    report = audit(stack, "aud-overwrite/")
    assert {("extra-version", key), ("fork", key)} <= kinds(report)
    overwrite = next(f for f in report.findings if f.kind == "extra-version")
    assert overwrite.version_id == version and "holds 2 versions" in overwrite.message
    fork = next(f for f in report.findings if f.kind == "fork")
    assert other_root.hex() in fork.message and base64.b64decode(doc["root_hash"]).hex() in fork.message
    # The CLI names the key and the version, and exits non-zero.
    s3_env(monkeypatch, stack)
    code, out, _ = run_cli(capsys, "audit", *trust_args(stack), *s3_args(stack, "aud-overwrite/"))
    assert code == EXIT_FINDINGS and f"[extra-version] {key} version {version}:" in out


def replace_last(stack, sealed, prefix: str, body: bytes, mode: str = "COMPLIANCE"):
    """The chain copied under ``prefix`` with its last seal replaced by ``body``: the audit's findings, as
    (kind, key, version), the version written, and the first finding's message."""
    last = max(sealed)
    copy_chain(stack, sealed, prefix, skip=(last,))
    version = put_seal(stack, prefix, last, body, mode=mode)
    report = audit(stack, prefix)
    return [(f.kind, f.key, f.version_id) for f in report.findings], (seal_key(prefix, last), version), \
        report.findings[0].message if report.findings else ""


def test_governance_mode_seal_is_reported(stack, sealed):
    found, (key, version), message = replace_last(stack, sealed, "aud-governance/", encode_seal(sealed[max(sealed)]),
                                                  mode="GOVERNANCE")
    assert found == [("governance", key, version)] and "locked in GOVERNANCE mode" in message


def test_seal_signed_by_a_key_not_in_the_keyring_is_reported(stack, sealed):
    checkpoint = resigned_checkpoint(sealed[max(sealed)])  # same tree, genuinely timestamped, foreign signature
    doc = sealed[max(sealed)] | {"checkpoint": checkpoint.decode(), "timestamp_token": trusted_token(stack, checkpoint)}
    found, (key, version), message = replace_last(stack, sealed, "aud-untrusted-key/", encode_seal(doc))
    assert found == [("signature", key, version)] and "no signature by a trusted key" in message


def test_token_from_an_untrusted_tsa_is_reported(stack, sealed, tmp_path):
    doc = sealed[max(sealed)]
    token = rogue_token(tmp_path / "rogue-tsa", doc["checkpoint"].encode())
    found, (key, version), message = replace_last(stack, sealed, "aud-rogue-tsa/", encode_seal(doc, timestamp_token=token))
    assert found == [("timestamp", key, version)] and "not signed by a TSA the configured roots trust" in message


def test_broken_consistency_chain_and_gap_are_reported(stack, sealed):
    sizes = sorted(sealed)
    copy_chain(stack, sealed, "aud-chain/", skip=(sizes[1], sizes[2]))
    # sizes[1]: a consistency proof that does not link; sizes[2]: missing; sizes[3] then names a seal not there.
    doc = sealed[sizes[1]]
    proof = [base64.b64encode(hashlib.sha256(b"not the tree").digest()).decode()] + doc["consistency_proof"][1:]
    put_seal(stack, "aud-chain/", sizes[1], encode_seal(doc, consistency_proof=proof))
    report = audit(stack, "aud-chain/")
    assert kinds(report) == {("chain", seal_key("aud-chain/", sizes[1])), ("gap", seal_key("aud-chain/", sizes[3]))}
    chain = next(f for f in report.findings if f.kind == "chain")
    assert f"consistency proof from tree size {sizes[0]} to {sizes[1]} fails" in chain.message
    gap = next(f for f in report.findings if f.kind == "gap")
    assert f"no valid seal for tree size {sizes[2]}" in gap.message


def test_previous_tree_size_that_does_not_link_is_reported(stack, sealed):
    sizes = sorted(sealed)
    copy_chain(stack, sealed, "aud-prev/", skip=(sizes[2],))
    doc = sealed[sizes[2]]
    put_seal(stack, "aud-prev/", sizes[2], encode_seal(doc, previous_tree_size=sizes[0]))
    report = audit(stack, "aud-prev/")
    assert kinds(report) == {("chain", seal_key("aud-prev/", sizes[2]))}
    assert f"names previous_tree_size {sizes[0]}, but the seal before it is for tree size {sizes[1]}" \
        in report.findings[0].message


def test_retention_shorter_than_the_policy_is_reported(stack, sealed):
    import datetime

    report = audit(stack, "aud/", min_retention=datetime.timedelta(days=2))  # the dev stack keeps seals 1 day
    assert kinds(report) == {("retention", seal_key("aud/", s)) for s in sealed}
    assert "expected at least" in report.findings[0].message


def test_unlocked_seal_and_delete_marker_are_reported(stack, sealed):
    sizes = sorted(sealed)
    copy_chain(stack, sealed, "aud-unlocked/", skip=(sizes[-1],))
    unlocked = put_seal(stack, "aud-unlocked/", sizes[-1], encode_seal(sealed[sizes[-1]]), mode=None)
    hidden = seal_key("aud-unlocked/", sizes[0])
    marker = stack.s3.client().delete_object(Bucket=BUCKET, Key=hidden)  # allowed: it only hides the locked version
    assert marker["DeleteMarker"]
    report = audit(stack, "aud-unlocked/")
    found = {(f.kind, f.key, f.version_id) for f in report.findings}
    assert found == {("unlocked", seal_key("aud-unlocked/", sizes[-1]), unlocked),
                     ("delete-marker", hidden, marker["VersionId"])}
    assert "has no object lock" in next(f.message for f in report.findings if f.kind == "unlocked")


def put_object(stack, key: str, body: bytes) -> str:
    """PUT ``body`` at any ``key``, COMPLIANCE-locked for a day, as anyone with write access could; the version id."""
    import datetime

    until = datetime.datetime.now(datetime.UTC).replace(microsecond=0) + datetime.timedelta(days=1)
    reply = stack.s3.client().put_object(
        Bucket=BUCKET, Key=key, Body=body, ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until,
        ChecksumSHA256=base64.b64encode(hashlib.sha256(body).digest()).decode())
    return reply["VersionId"]


def test_objects_under_seals_at_other_keys_are_reported_and_a_second_seal_there_is_a_fork(stack, sealed):
    """A seal key is seals/<20 ASCII digits>.json; whatever else is under seals/ is reported, never skipped."""
    prefix = "aud-stray/"
    copy_chain(stack, sealed, prefix)
    size = sorted(sealed)[1]
    doc = sealed[size]
    other_root = hashlib.sha256(b"another history").digest()
    forged = encode_seal(doc, root_hash=base64.b64encode(other_root).decode(),
                         checkpoint=resigned_checkpoint(doc, root=other_root).decode())
    stray = f"{prefix}seals/{size}.json"  # not zero-padded: not a seal key
    arabic = f"{prefix}seals/{''.join(chr(0x660 + int(c)) for c in f'{size:020d}')}.json"  # digits, but not 0-9
    versions = {stray: put_object(stack, stray, forged), arabic: put_object(stack, arabic, encode_seal(doc)),
                f"{prefix}seals/notes.txt": put_object(stack, f"{prefix}seals/notes.txt", b"hello")}
    report = audit(stack, prefix)
    found = {(f.kind, f.key, f.version_id) for f in report.findings}
    assert found == {("misplaced", key, version) for key, version in versions.items()} | {("fork", stray, versions[stray])}
    fork = next(f for f in report.findings if f.kind == "fork")
    assert other_root.hex() in fork.message and "does not verify" in fork.message
    assert len(report.seals) == len(sealed)  # the chain itself is intact


def test_an_object_too_large_for_a_seal_is_malformed_and_the_audit_goes_on(stack, sealed, capsys, monkeypatch):
    prefix = "aud-large/"
    copy_chain(stack, sealed, prefix)
    key = seal_key(prefix, max(sealed) + 1000)
    version = put_object(stack, key, b"{" + b" " * (1024 * 1024) + b"}")
    report = audit(stack, prefix)
    assert [(f.kind, f.key, f.version_id) for f in report.findings] == [("malformed", key, version)]
    assert "larger than 1048576 bytes" in report.findings[0].message and len(report.seals) == len(sealed)


def test_a_prefix_with_no_seals_is_no_clean_audit(stack, sealed, capsys, monkeypatch):
    from notary.cli_verify import EXIT_NO_SEALS

    s3_env(monkeypatch, stack)
    code, out, err = run_cli(capsys, "audit", *trust_args(stack), *s3_args(stack, "aud"))  # the prefix without its '/'
    assert code == EXIT_NO_SEALS and out.startswith(f"NO SEALS: nothing under s3://{BUCKET}/audseals/"), out + err


def test_a_log_not_sealed_within_the_freshness_bound_is_stale(stack, sealed, capsys, monkeypatch):
    import datetime

    from notary.audit import audit_seals, fetch_seals

    s3_env(monkeypatch, stack)
    code, out, err = run_cli(capsys, "audit", *trust_args(stack), *s3_args(stack, "aud/"), "--newest-within", "1")
    assert code == 0 and out.startswith("CLEAN:") and "Freshness checked: a seal timestamped at most 1 hour before" in out, \
        out + err
    # The same seals audited two hours later: the newest one is named, with its timestamp.
    trust = TrustedKeys.from_keyring(Keyring.load(stack.keyring_path))
    roots = load_roots(stack.data_dir / "tsa" / "root.pem")
    stored = asyncio.run(fetch_seals(SealReader(stack.s3.client(), BUCKET, "aud/")))
    clean = audit_seals(stored, trust, roots, prefix="aud/")
    newest = max(s.verified.time for s in clean.seals)
    later = newest + datetime.timedelta(hours=2)
    report = audit_seals(stored, trust, roots, prefix="aud/", newest_within=datetime.timedelta(hours=1), now=later)
    assert [(f.kind, f.key, f.tree_size) for f in report.findings] == [("stale", seal_key("aud/", max(sealed)),
                                                                         max(sealed))]
    assert "2.0 hours before this audit, past the freshness bound of 1 hour:" in report.findings[0].message
    assert audit_seals(stored, trust, roots, prefix="aud/", newest_within=datetime.timedelta(hours=2.5),
                       now=later).ok
    assert report.to_json()["newest_within_hours"] == 1.0 and clean.to_json()["newest_within_hours"] is None
    # No seal verifies (the wrong TSA roots): nothing shows the log is being sealed.
    blind = audit_seals(stored, trust, (), prefix="aud/", newest_within=datetime.timedelta(hours=1), now=newest)
    assert ("stale", "aud/seals/") in kinds(blind)
    # A bound of zero, a negative or an endless one is refused, naming the option.
    for bad in ("0", "-1", "nan", "inf", "1e9"):
        code, _, err = run_cli(capsys, "audit", *trust_args(stack), *s3_args(stack, "aud/"), "--newest-within", bad)
        assert code == 2 and "--newest-within" in err, (bad, err)


def test_concurrent_reads_give_the_same_seals_in_order_and_the_first_error_stops_them(stack, sealed):
    from anchors.errors import S3UnavailableError
    from anchors.s3 import make_client
    from botocore.exceptions import EndpointConnectionError

    from notary.audit import fetch_seals

    copy_chain(stack, sealed, "aud-concurrent/")
    put_seal(stack, "aud-concurrent/", max(sealed), encode_seal(sealed[max(sealed)]))  # a second version
    one = asyncio.run(fetch_seals(SealReader(stack.s3.client(), BUCKET, "aud-concurrent/")))
    client = make_client(stack.s3.endpoint_url, "us-east-1", access_key=stack.s3.access_key,
                         secret_key=stack.s3.secret_key, connections=8)
    many = SealReader(client, BUCKET, "aud-concurrent/", concurrency=8)
    try:
        assert asyncio.run(fetch_seals(many)) == one
        assert len(one) == len(sealed) and len(one[-1].versions) == 2

        class Failing:  # the same client, but one read of the third seal cannot reach S3
            def __getattr__(self, name):
                return getattr(client, name)

            def get_object(self, **params):
                if params["Key"] == one[2].key:
                    raise EndpointConnectionError(endpoint_url=stack.s3.endpoint_url)
                return client.get_object(**params)

        many.client = Failing()
        with pytest.raises(S3UnavailableError, match="could not be reached for get_object"):
            asyncio.run(fetch_seals(many))
    finally:
        many.close()


def test_freshness_is_judged_at_the_listing_not_after_a_long_read(stack, sealed, monkeypatch):
    """The audit sees the seals that existed when it listed the bucket; a read taking longer than the bound
    made a healthy notary stale (the clock was read after the last object)."""
    import datetime
    import time

    from notary import audit as audit_module

    trust = TrustedKeys.from_keyring(Keyring.load(stack.keyring_path))
    roots = load_roots(stack.data_dir / "tsa" / "root.pem")
    reader = SealReader(stack.s3.client(), BUCKET, "aud/")
    stored = asyncio.run(audit_module.fetch_seals(reader))
    newest = max(s.verified.time for s in audit_module.audit_seals(stored, trust, roots, prefix="aud/").seals)
    bound = datetime.datetime.now(datetime.UTC) - newest + datetime.timedelta(seconds=2)

    async def slow_fetch(reader):
        time.sleep(4)  # a big bucket, read for longer than the bound's slack
        return stored

    monkeypatch.setattr(audit_module, "fetch_seals", slow_fetch)
    report = asyncio.run(audit_bucket(reader, trust, roots, newest_within=bound))
    assert report.ok, [f.line() for f in report.findings]
