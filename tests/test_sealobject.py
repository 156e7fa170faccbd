"""Seal objects read back (notary/sealobject.py), trust intervals from the keyring (notary/trust.py),
and the audit's object checks (notary/audit.py) on seals held in memory: no S3, no TSA."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json

import pytest

from anchors.s3 import LockStatus, SealVersion
from hsm.algorithms import key_id_for
from hsm.keyring import Keyring
from notary.audit import StoredSeal, StoredVersion, audit_seals
from notary.checkpoint import Checkpoint, sign_checkpoint
from notary.entry import Entry
from notary.errors import FormatError
from notary.sealobject import ChainError, TimestampError, parse_seal, verify_link, verify_seal
from notary.seals import Seal
from notary.store import LogStore
from notary.trust import SignatureError, TrustedKeys
from tests.support import SoftwareSigner, relabelled_checkpoint

ORIGIN = "example.com/log"
T = [datetime.datetime(2026, 1, 1 + i, tzinfo=datetime.UTC) for i in range(8)]
KEY_A, KEY_B = SoftwareSigner.ed25519(bytes(32)), SoftwareSigner.ed25519(bytes([1] * 32))


def keyring() -> Keyring:
    """A generated at T0, active T1..T4; B active from T3; C pending; D retired without ever being active."""
    ring = Keyring(ORIGIN)
    ring = ring.generate(key_id_for(KEY_A.public_key), "a", "ed25519", KEY_A.public_key, now=T[0]).activate("a", now=T[1])
    ring = ring.generate(key_id_for(KEY_B.public_key), "b", "ed25519", KEY_B.public_key, now=T[2]).activate("b", now=T[3])
    ring = ring.retire("a", now=T[4])
    for label, seed in (("c", 2), ("d", 3)):
        key = SoftwareSigner.ed25519(bytes([seed] * 32))
        ring = ring.generate(key_id_for(key.public_key), label, "ed25519", key.public_key, now=T[5])
    return ring.retire("d", now=T[6])


def test_keyring_keys_are_trusted_from_activation_until_retirement():
    keys = {k.label: k for k in TrustedKeys.from_keyring(keyring()).keys}
    assert [keys["a"].valid_at(t) for t in T[:6]] == [False, True, True, True, False, False]
    assert [keys["b"].valid_at(t) for t in T[:6]] == [False, False, False, True, True, True]
    assert not any(keys[label].valid_at(t) for label in "cd" for t in T)
    assert not any(k.valid_at(None) for k in keys.values())  # bounded keys need a time
    assert TrustedKeys.from_strings([str(KEY_A.verifier(ORIGIN))]).keys[0].valid_at(None)


def test_a_signature_counts_only_inside_its_keys_interval():
    trust = TrustedKeys.from_keyring(keyring())
    checkpoint = asyncio.run(sign_checkpoint(Checkpoint(ORIGIN, 1, bytes(32)), [KEY_A])).encode()
    _, keys = trust.verify_checkpoint(checkpoint, T[2])
    assert [k.label for k in keys] == ["a"]
    with pytest.raises(SignatureError, match=r"key example.com/log\+[0-9a-f]{8} \(a\) is known but valid from "
                       r"2026-01-02T00:00:00Z until 2026-01-05T00:00:00Z, and the signature is judged at the "
                       r"timestamp's time 2026-01-06T00:00:00Z"):
        trust.verify_checkpoint(checkpoint, T[5])
    other = asyncio.run(sign_checkpoint(Checkpoint("other.example/log", 1, bytes(32)), [KEY_A])).encode()
    with pytest.raises(SignatureError, match="is for log 'other.example/log', but the keyring is for 'example.com/log'"):
        trust.verify_checkpoint(other, T[2])


def chain(tmp_path, sizes: list[int]) -> list[Seal]:
    """Seals of a real log at ``sizes``, each with its consistency proof from the one before (token: junk)."""
    seals, prev = [], 0
    with LogStore(tmp_path / "log.db", create=True) as log:
        log.append_entries([Entry(bytes([i]) * 32, "src").encode() for i in range(max(sizes))])
        for size in sizes:
            cp = asyncio.run(sign_checkpoint(Checkpoint(ORIGIN, size, log.tree_hash(size)), [KEY_B]))
            seals.append(Seal(size, log.tree_hash(size), cp.encode(), prev, tuple(log.consistency_proof(prev, size)),
                              "2026-01-05T00:00:00.000000Z", timestamp_token=b"not a token"))
            prev = size
    return seals


def test_seal_parses_and_links_to_the_one_before(tmp_path):
    first, second = (parse_seal(s.seal_json(ORIGIN)) for s in chain(tmp_path, [3, 7]))
    assert (first.tree_size, second.previous_tree_size, second.canonical) == (3, 3, True)
    verify_link(None, first)
    verify_link(first, second)
    with pytest.raises(ChainError, match="names previous_tree_size 3, but the seal before it is for tree size 0"):
        verify_link(None, second)
    broken = parse_seal(json.dumps(json.loads(second.raw) | {"consistency_proof": [base64.b64encode(bytes(32)).decode()]}).encode())
    assert not broken.canonical  # json.dumps with spaces: not the notary's bytes
    with pytest.raises(ChainError, match="consistency proof from tree size 3 to 7 fails"):
        verify_link(first, broken)
    with pytest.raises(TimestampError, match="the timestamp token of the seal of tree size 3 fails"):
        verify_seal(first, TrustedKeys.from_keyring(keyring()), roots=())


@pytest.mark.parametrize("change, message", [
    ({"tree_size": 4}, "seal tree_size is 4, but its checkpoint is for size 3"),
    ({"root_hash": base64.b64encode(bytes(32)).decode()}, "seal root_hash is 0000"),
    ({"origin": "other.example/log"}, "seal origin is 'other.example/log', but its checkpoint is for log 'example.com/log'"),
    ({"previous_tree_size": 3}, "previous_tree_size 3 is not below its tree_size 3"),
    ({"format": "notary-seal/v2"}, "seal format is 'notary-seal/v2'"),
    ({"extra": 1}, "expected exactly"),
    ({"tree_size": True}, "seal field tree_size is not an integer"),
])
def test_seal_whose_fields_disagree_is_refused(tmp_path, change, message):
    doc = json.loads(chain(tmp_path, [3])[0].seal_json(ORIGIN)) | change
    with pytest.raises(FormatError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_seal(json.dumps(doc).encode())


def test_audit_names_malformed_misplaced_and_noncanonical_objects(tmp_path):
    seals = chain(tmp_path, [3, 7])
    lock = LockStatus("COMPLIANCE", T[7])
    version = lambda vid: SealVersion(vid, T[5], True, False, 1, "etag", lock)  # noqa: E731
    stored = [
        StoredSeal(3, "p/seals/00000000000000000003.json", (StoredVersion("p/seals/00000000000000000003.json", version("v3"),
                   json.dumps(json.loads(seals[0].seal_json(ORIGIN))).encode()),)),
        StoredSeal(5, "p/seals/00000000000000000005.json", (StoredVersion("p/seals/00000000000000000005.json", version("v5"),
                   b"{not json"),)),
        StoredSeal(8, "p/seals/00000000000000000008.json", (StoredVersion("p/seals/00000000000000000008.json", version("v8"),
                   seals[1].seal_json(ORIGIN)),)),
    ]
    report = audit_seals(stored, TrustedKeys.from_keyring(keyring()), roots=(), prefix="p/")
    found = {(f.kind, f.key, f.version_id) for f in report.findings}
    assert {("noncanonical", "p/seals/00000000000000000003.json", "v3"),
            ("malformed", "p/seals/00000000000000000005.json", "v5"),
            ("misplaced", "p/seals/00000000000000000008.json", "v8")} <= found
    assert not report.ok and report.to_json()["findings"]


def test_a_key_trusted_for_one_log_does_not_vouch_for_another_logs_checkpoint():
    """The rule is checkpoint.checkpoint_signers' (tests/test_formats.py); here, that the auditor is told why."""
    key = SoftwareSigner.ecdsa(12345)
    own, forged = relabelled_checkpoint(key, "other.example/log", ORIGIN)
    with pytest.raises(SignatureError, match=r"the checkpoint is for log 'other.example/log', and the trusted keys "
                       r"named otherwise \('example.com/log'\) speak only for their own logs"):
        TrustedKeys.from_strings([str(key.verifier(ORIGIN))]).verify_checkpoint(forged, None)
    assert TrustedKeys.from_strings([str(key.verifier("other.example/log"))]).verify_checkpoint(own, None)[1]


def test_a_seal_whose_checkpoint_holds_a_lone_surrogate_is_malformed(tmp_path):
    """JSON can escape a lone surrogate; no UTF-8 text holds one. One such object must not stop an audit."""
    body = chain(tmp_path, [3])[0].seal_json(ORIGIN)
    parse_seal(body)  # as made, it parses
    doc = json.loads(body)
    doc["checkpoint"] = doc["checkpoint"][:-1] + "\ud800\n"
    damaged = json.dumps(doc).encode()  # ASCII, with the surrogate escaped: \ud800
    assert b"\\ud800" in damaged
    with pytest.raises(FormatError, match="lone surrogate"):
        parse_seal(damaged)


def test_versions_written_in_the_same_second_are_taken_oldest_first():
    """S3 lists a key's versions newest first and times them to the second: the original must stay the original."""
    from anchors.s3 import _versions_by_key

    t = datetime.datetime(2026, 12, 4, 12, 0, 0, tzinfo=datetime.UTC)
    key = "p/seals/00000000000000000007.json"

    def version(vid: str, when: datetime.datetime, latest: bool = False) -> dict:
        return {"Key": key, "VersionId": vid, "LastModified": when, "IsLatest": latest, "Size": 1, "ETag": "e"}

    listing = {"Versions": [version("forged-2", t + datetime.timedelta(seconds=1), latest=True),
                            version("forged-1", t), version("original", t)],  # newest first, as listed
               "DeleteMarkers": []}
    assert [v.version_id for v in _versions_by_key(listing)[key]] == ["original", "forged-1", "forged-2"]


def test_a_compliance_lock_that_has_ended_is_a_finding_with_or_without_a_policy():
    from notary.audit import lock_finding

    now = datetime.datetime(2026, 12, 4, tzinfo=datetime.UTC)
    ended = LockStatus("COMPLIANCE", datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
    kind, sentence = lock_finding(ended, T[0], None, now=now)
    assert kind == "retention" and "which has passed: it can be deleted now" in sentence
    assert lock_finding(LockStatus("COMPLIANCE", now + datetime.timedelta(days=1)), T[0], None, now=now) is None


def test_whether_a_lock_has_ended_is_judged_at_the_audits_time(tmp_path):
    """The report says when the audit was (``audited_at``); a lock in force then is no finding, one ended then is.
    Before, the lock was judged at the clock's time whatever ``now`` the audit was given."""
    key = "p/seals/00000000000000000003.json"
    body = chain(tmp_path, [3])[0].seal_json(ORIGIN)

    def kinds(now: datetime.datetime) -> set[str]:
        version = SealVersion("v3", T[5], True, False, len(body), "etag", LockStatus("COMPLIANCE", T[7]))
        report = audit_seals([StoredSeal(3, key, (StoredVersion(key, version, body),))],
                             TrustedKeys.from_keyring(keyring()), roots=(), prefix="p/", now=now)
        assert report.audited_at == now
        return {f.kind for f in report.findings}

    assert "retention" not in kinds(T[6])  # locked until T7: in force at T6
    assert "retention" in kinds(T[7] + datetime.timedelta(days=1))
