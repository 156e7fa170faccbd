"""Offline verification of one record: its proof, its seal, the timestamp, the keys, the S3 lock.

``verify_record`` runs every check it has the material for and returns a
``RecordVerdict``: one ``Check`` per step, each ``ok``, ``failed`` or ``not
checked`` with a sentence, and the exit status of ``notary verify``
(``EXIT_*``: the lowest code among the failed checks; when none failed, 0
only if the signature check passed, since a root nobody trusted signed
proves nothing).

The checks, in order of their exit codes:

- ``record`` (4): the record's SHA-256 is the digest in the proof's entry;
- ``inclusion`` (5): the entry's leaf hash leads to the checkpoint's root
  (RFC 9162 §2.1.3.2);
- ``signature`` (6): the checkpoint is signed by a key trusted at the
  timestamp's time (``notary.trust``);
- ``timestamp`` (7): the seal's RFC 3161 token covers exactly the proof's
  signed checkpoint bytes and chains to the TSA roots;
- ``s3`` (8): the seal object is alone at its key (one version, no delete
  marker), locked in COMPLIANCE mode, and is the seal given, if one was.

Malformed input (a proof or seal that does not parse) raises ``FormatError``:
exit code 3.
"""

from __future__ import annotations

import datetime
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from notary import merkle
from notary.audit import StoredSeal, lock_finding
from notary.entry import Entry, parse_entry
from notary.errors import VerificationError
from notary.sealobject import SealObject, TimestampError, parse_seal, verify_timestamp
from notary.trust import SignatureError, TrustedKey, TrustedKeys
from notary.tlogproof import TlogProof, parse_tlog_proof

EXIT_OK = 0
EXIT_ERROR = 1  # the check could not run (unreadable file, S3 unreachable): no verdict
EXIT_USAGE = 2  # wrong or missing arguments (argparse's convention)
EXIT_MALFORMED = 3
EXIT_RECORD = 4
EXIT_INCLUSION = 5
EXIT_SIGNATURE = 6
EXIT_TIMESTAMP = 7
EXIT_LOCK = 8

OK, FAILED, NOT_CHECKED = "ok", "failed", "not checked"


@dataclass(frozen=True)
class Check:
    name: str  # record | inclusion | signature | timestamp | s3
    status: str  # OK | FAILED | NOT_CHECKED
    detail: str
    exit_code: int  # what a failure of this check exits with

    def to_json(self) -> dict:
        return {"check": self.name, "status": self.status, "detail": self.detail}


@dataclass(frozen=True)
class RecordVerdict:
    """Every check made on one record, and what they establish."""

    entry: Entry
    index: int
    origin: str
    tree_size: int
    checks: tuple[Check, ...]
    record_given: bool
    signed_by: tuple[TrustedKey, ...] = ()
    timestamp: datetime.datetime | None = None
    tsa: str | None = None
    s3_object: str | None = None  # "s3://bucket/key version v"
    retain_until: datetime.datetime | None = None

    @property
    def exit_code(self) -> int:
        failed = [c.exit_code for c in self.checks if c.status == FAILED]
        if failed:
            return min(failed)
        # An unsigned root vouches for nothing: without a verified signature there is no verdict to give.
        return EXIT_OK if any(c.name == "signature" and c.status == OK for c in self.checks) else EXIT_SIGNATURE

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK

    def sentence(self) -> str:
        """The verdict in one paragraph for a person."""
        digest = self.entry.digest.hex()
        if not self.ok:
            first = next(c for c in self.checks if c.status != OK and c.exit_code == self.exit_code)
            return f"NOT VERIFIED: record {digest}: {first.detail}"
        # Without a record, what holds is the proof of its digest, not that any given record is the one.
        head = (f"VERIFIED: record {digest} (the record given)" if self.record_given else
                f"VERIFIED (proof only, no record given to compare): digest {digest}")
        text = (f"{head} was notarized by "
                f"source {self.entry.source!r} in log {self.origin} at index {self.index}, sealed at tree size "
                f"{self.tree_size}, signed by {', '.join(k.name() for k in self.signed_by)}")
        if self.timestamp is not None:
            text += f", timestamped {_iso(self.timestamp)} by TSA {self.tsa}"
        if self.s3_object is not None:
            text += f"; the seal is {self.s3_object}, locked in COMPLIANCE mode until {_iso(self.retain_until)}"
        return text + "."

    def render_text(self) -> str:
        lines = [self.sentence()]
        lines += [f"  {c.name:<10} {c.status:<12} {c.detail}" for c in self.checks]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        return {
            "format": "notary-verdict/v1",
            "verified": self.ok,
            "exit_code": self.exit_code,
            "verdict": self.sentence(),
            "digest": self.entry.digest.hex(),
            "source": self.entry.source,
            "origin": self.origin,
            "index": self.index,
            "tree_size": self.tree_size,
            "signed_by": [k.name() for k in self.signed_by],
            "timestamp": _iso(self.timestamp) if self.timestamp else None,
            "tsa": self.tsa,
            "s3_object": self.s3_object,
            "retain_until": _iso(self.retain_until) if self.retain_until else None,
            "checks": [c.to_json() for c in self.checks],
        }


def _iso(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def verify_record(
    proof: bytes | TlogProof,
    trust: TrustedKeys,
    *,
    record_digest: bytes | None = None,
    seal: bytes | None = None,
    roots: Sequence[x509.Certificate] = (),
    stored: StoredSeal | None = None,
    bucket: str = "",
) -> RecordVerdict:
    """Check a proof offline, with the record's digest, the seal (its bytes and/or as S3 holds it) and the TSA roots.

    ``stored`` is the seal key as read from S3 (``notary.audit.fetch_seal``);
    its original version is the seal checked, and must equal ``seal`` if both
    are given. Without a seal, the timestamp is not checked, and keys bound
    to an interval (a keyring's) cannot be judged.
    """
    proof = proof if isinstance(proof, TlogProof) else parse_tlog_proof(proof)
    entry = parse_entry(proof.entry)
    cp = proof.signed.checkpoint
    checks = [_record_check(entry, record_digest), _inclusion_check(proof)]
    found: dict = {}

    s3_check = Check("s3", NOT_CHECKED, "the seal object in S3 was not checked (give --s3)", EXIT_LOCK)
    if stored is not None:
        s3_check, seal, found = _s3_check(stored, seal, bucket)
    parsed = parse_seal(seal) if seal is not None else None

    when = None
    if parsed is None:
        ts_check = Check("timestamp", NOT_CHECKED, "no seal given (give --seal FILE or --s3), so no timestamp", EXIT_TIMESTAMP)
    else:
        ts_check, when, found["tsa"] = _timestamp_check(proof, parsed, roots)
        found["timestamp"] = when
    if when is None and trust.needs_time():
        sig_check = Check("signature", NOT_CHECKED,
                          "the keys are valid only from their activation to their retirement, and there is no "
                          "verified timestamp to say when the checkpoint was signed", EXIT_SIGNATURE)
    else:
        try:
            _, keys = trust.verify_checkpoint(proof.signed.encode(), when)
            found["signed_by"] = keys
            at = f" at the timestamp's time {_iso(when)}" if when else ""
            sig_check = Check("signature", OK, f"the checkpoint is signed by {', '.join(k.name() for k in keys)}, "
                              f"trusted{at}", EXIT_SIGNATURE)
        except SignatureError as exc:
            sig_check = Check("signature", FAILED, f"the checkpoint of tree size {cp.size}: {exc}", EXIT_SIGNATURE)
    checks += [sig_check, ts_check, s3_check]
    return RecordVerdict(entry=entry, index=proof.index, origin=cp.origin, tree_size=cp.size, checks=tuple(checks),
                         record_given=record_digest is not None, **found)


def _record_check(entry: Entry, digest: bytes | None) -> Check:
    if digest is None:
        return Check("record", NOT_CHECKED, "no record given (give --line, --digest or --record)", EXIT_RECORD)
    if not hmac.compare_digest(digest, entry.digest):
        return Check("record", FAILED, f"the record's SHA-256 is {digest.hex()}, but the proof is for "
                     f"{entry.digest.hex()}: this proof does not cover this record", EXIT_RECORD)
    return Check("record", OK, "the record's SHA-256 is the digest in the proof's entry", EXIT_RECORD)


def _inclusion_check(proof: TlogProof) -> Check:
    cp = proof.signed.checkpoint
    try:
        if proof.index >= cp.size:
            raise VerificationError(f"index {proof.index} is outside the checkpoint's tree of size {cp.size}")
        merkle.verify_inclusion(merkle.leaf_hash(proof.entry), proof.index, cp.size, proof.path, cp.root_hash)
    except VerificationError as exc:
        return Check("inclusion", FAILED, f"the entry is not in the tree of size {cp.size}: {exc}", EXIT_INCLUSION)
    return Check("inclusion", OK, f"the entry is leaf {proof.index} of the tree of size {cp.size} "
                 f"(root {cp.root_hash.hex()})", EXIT_INCLUSION)


def _timestamp_check(proof: TlogProof, seal: SealObject, roots) -> tuple[Check, datetime.datetime | None, str | None]:
    if not hmac.compare_digest(seal.checkpoint, proof.signed.encode()):
        return Check("timestamp", FAILED, f"the seal is for another checkpoint (tree size {seal.tree_size}, root "
                     f"{seal.root_hash.hex()}) than the proof's (tree size {proof.signed.checkpoint.size}, root "
                     f"{proof.signed.checkpoint.root_hash.hex()}), so its timestamp does not cover the proof",
                     EXIT_TIMESTAMP), None, None
    try:
        token = verify_timestamp(seal, roots)
    except TimestampError as exc:
        return Check("timestamp", FAILED, str(exc), EXIT_TIMESTAMP), None, None
    return Check("timestamp", OK, f"the RFC 3161 token of {_iso(token.gen_time)} by {token.tsa} covers the exact "
                 "signed checkpoint and chains to the TSA roots given", EXIT_TIMESTAMP), token.gen_time, token.tsa


def _s3_check(stored: StoredSeal, seal: bytes | None, bucket: str) -> tuple[Check, bytes | None, dict]:
    """The seal key as S3 holds it: one version, COMPLIANCE, and the same bytes as the seal given."""
    where = f"s3://{bucket}/{stored.key}"
    live = [v for v in stored.versions if not v.version.delete_marker]
    # When S3 holds several versions, the oldest is the locked original: check its timestamp still.
    fallback = seal if seal is not None or not live else live[0].body
    fail = lambda text: (Check("s3", FAILED, f"{where}: {text}", EXIT_LOCK), fallback, {})  # noqa: E731
    if not stored.versions:
        return fail("no seal object at this key")
    if len(stored.versions) != 1 or stored.versions[0].version.delete_marker:
        listed = ", ".join(f"{v.version.version_id}{' (delete marker)' if v.version.delete_marker else ''}"
                           for v in stored.versions)
        return fail(f"the key holds {len(stored.versions)} versions or delete markers ({listed}), expected exactly "
                    "one: the seal was written over or hidden")
    only = stored.versions[0]
    if seal is not None and not hmac.compare_digest(seal, only.body):
        return fail(f"version {only.version.version_id} differs from the seal file given")
    lock = only.version.lock
    problem = lock_finding(lock, only.version.last_modified, None)
    if problem or lock.retain_until is None:
        return fail(f"version {only.version.version_id} {problem[1] if problem else 'has no retain-until date'}")
    found = {"s3_object": f"{where} version {only.version.version_id}", "retain_until": lock.retain_until}
    return (Check("s3", OK, f"{where} version {only.version.version_id} is the only version, locked in COMPLIANCE "
                  f"mode until {_iso(lock.retain_until)}", EXIT_LOCK), only.body, found)
