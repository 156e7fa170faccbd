"""Audit a bucket of seals: the S3 objects alone, checked as an auditor would, without the daemon.

``audit_bucket(reader, trust, roots)`` reads every version of every seal key
under the prefix (``fetch_seals``, the only I/O) and ``audit_seals`` checks
them (pure). The result is an ``AuditReport``: every seal version read, and a
list of ``Finding``s, each naming the object key, the version and what is
wrong with both sides. An empty list is a clean audit.

What is checked, per version (finding kinds in ``FINDING_KINDS``):

- exactly one version per key, no delete marker (``extra-version``,
  ``delete-marker``); the oldest version is the original, since nobody can
  remove a COMPLIANCE-locked version, only add versions on top;
- the lock: mode COMPLIANCE (``governance``, ``unlocked``), still in force
  at the audit, and with a policy, retain-until no earlier than the token's
  time plus the minimum retention, less ``CLOCK_SLACK`` (``retention``);
- the JSON: well formed and self-consistent (an object over 1 MiB is not
  read), canonical, at the key of its tree size (``malformed``,
  ``noncanonical``, ``misplaced``);
- the RFC 3161 token over the checkpoint bytes, chaining to the TSA roots
  (``timestamp``), then the checkpoint's signatures by a key trusted at the
  token's time (``signature``);
- two versions of one key with different roots (``fork``).

Every other object under ``seals/`` (a key that is not ``seals/`` and 20
ASCII digits and ``.json``) is ``misplaced``, and a ``fork`` when it holds a
seal whose root differs from the original's of its tree size.

And along the chain of originals, by tree size: each seal's
``previous_tree_size`` names the seal before it and its consistency proof
leads from that root to its own (``chain``); a seal that names a tree size
with no seal in the bucket shows missing seals (``gap``).

With ``newest_within``, the newest seal that verifies must be timestamped
that recently before the audit (``stale``): the notary seals only when it
has entries, so only the operator knows how quiet the log may go, and a
stopped notary leaves a bucket that is otherwise clean.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from anchors.errors import IntegrityAlarm
from anchors.s3 import COMPLIANCE, LockStatus, SealReader, SealVersion, seal_key
from cryptography import x509

from notary.errors import FormatError, VerificationError
from notary.note import b64encode
from notary.sealobject import SealObject, TimestampError, VerifiedSeal, parse_seal, verify_link, verify_seal
from notary.trust import SignatureError, TrustedKeys

# The publisher sets retain-until from the notary host's clock, after the
# token was issued by the TSA's: allow for whole-second truncation and a
# modest clock difference before calling a retention short.
CLOCK_SLACK = datetime.timedelta(minutes=5)

FINDING_KINDS = {
    "extra-version": "a seal key holds more than one version: the later ones were written over the original",
    "delete-marker": "a delete marker hides a seal",
    "unlocked": "a seal version has no COMPLIANCE lock",
    "governance": "a seal version is locked in GOVERNANCE mode, which privileged users can lift",
    "retention": "a seal version's lock has ended, or is shorter than the retention policy",
    "malformed": "an object at a seal key is not a valid seal",
    "noncanonical": "a seal is not in the notary's canonical JSON, so the notary did not write these bytes",
    "misplaced": "a seal is stored at the key of another tree size, or an object under seals/ is at no seal key",
    "timestamp": "a seal's RFC 3161 token does not verify against the TSA roots or does not cover its checkpoint",
    "signature": "a seal's checkpoint is not signed by a key trusted at the token's time",
    "fork": "two seals for one tree size with different roots (at one key or at two)",
    "chain": "a seal does not extend the seal before it",
    "gap": "seals are missing from the chain",
    "stale": "no seal that verifies was timestamped within the freshness bound before the audit",
}


@dataclass(frozen=True)
class StoredVersion:
    """One version at a seal key, with its bytes (``None`` for a delete marker, or when ``unread``)."""

    key: str
    version: SealVersion  # version id, LastModified, delete marker, lock
    body: bytes | None
    unread: str | None = None  # why the bytes were not read (an object far too large for a seal)


@dataclass(frozen=True)
class StoredSeal:
    """A seal key and all its versions, oldest first, as S3 holds them."""

    tree_size: int | None  # from the key; None for a key under seals/ that is not a seal key
    key: str
    versions: tuple[StoredVersion, ...]


async def fetch_seal(reader: SealReader, tree_size: int) -> StoredSeal:
    """Every version of the seal of ``tree_size``, with locks and bytes."""
    key = seal_key(reader.prefix, tree_size)
    versions = [v if v.delete_marker else _with_lock(v, await reader.lock_status(key, v.version_id))
                for v in await reader.seal_versions(tree_size)]
    return StoredSeal(tree_size, key, tuple([await _read(reader, key, v) for v in versions]))


async def fetch_seals(reader: SealReader) -> list[StoredSeal]:
    """Every seal key under the reader's prefix, by tree size, every version with its lock and bytes."""
    records = await reader.seals()
    pairs = [(r.key, v) for r in records for v in r.versions]
    stored = iter(await reader.each(pairs, lambda pair: _read(reader, *pair, tolerate=True)))
    return [StoredSeal(r.tree_size, r.key, tuple(next(stored) for _ in r.versions)) for r in records]


def _with_lock(version: SealVersion, lock: LockStatus) -> SealVersion:
    return replace(version, lock=lock)


async def _read(reader: SealReader, key: str, version: SealVersion, *, tolerate: bool = False) -> StoredVersion:
    """One version with its bytes; with ``tolerate``, an object too large for a seal is kept unread, to be reported."""
    if version.delete_marker:
        return StoredVersion(key, version, None)
    try:
        return StoredVersion(key, version, await reader.read(key, version.version_id))
    except IntegrityAlarm as exc:
        if not tolerate:
            raise
        return StoredVersion(key, version, None, unread=str(exc))


@dataclass(frozen=True)
class Finding:
    """One problem, naming the object (key, version) and what is wrong."""

    kind: str  # a key of FINDING_KINDS
    key: str
    version_id: str | None
    tree_size: int | None
    message: str

    def __post_init__(self) -> None:
        assert self.kind in FINDING_KINDS, self.kind

    def to_json(self) -> dict:
        return {"kind": self.kind, "key": self.key, "version_id": self.version_id,
                "tree_size": self.tree_size, "message": self.message}

    def line(self) -> str:
        return f"[{self.kind}] {self.key} version {self.version_id or '-'}: {self.message}"


@dataclass(frozen=True)
class AuditedSeal:
    """One seal version as read and checked; ``verified`` is set when its token and signature hold."""

    key: str
    version_id: str
    original: bool  # the oldest version at its key
    body_sha256: str  # hex, of the object's bytes
    lock: LockStatus | None
    seal: SealObject | None  # None when the object is not a valid seal
    verified: VerifiedSeal | None

    def to_json(self) -> dict:
        value: dict = {
            "key": self.key, "version_id": self.version_id, "original": self.original,
            "sha256": self.body_sha256,
            "lock_mode": self.lock.mode if self.lock else None,
            "retain_until": _iso(self.lock.retain_until) if self.lock and self.lock.retain_until else None,
            "verified": self.verified is not None,
        }
        if self.seal is not None:
            value |= {"tree_size": self.seal.tree_size, "root_hash": b64encode(self.seal.root_hash),
                      "previous_tree_size": self.seal.previous_tree_size, "origin": self.seal.origin}
        if self.verified is not None:
            value |= {"timestamp": _iso(self.verified.time), "tsa": self.verified.timestamp.tsa,
                      "signed_by": [k.name() for k in self.verified.signed_by]}
        return value


@dataclass(frozen=True)
class AuditReport:
    """The audit of one bucket prefix: every seal version read, and the findings (empty: clean)."""

    bucket: str
    prefix: str
    audited_at: datetime.datetime
    min_retention: datetime.timedelta | None
    seals: tuple[AuditedSeal, ...]
    findings: tuple[Finding, ...] = field(default=())
    newest_within: datetime.timedelta | None = None

    @property
    def ok(self) -> bool:
        return not self.findings

    def chain(self) -> list[AuditedSeal]:
        """The original version of each seal key, by tree size."""
        return [s for s in self.seals if s.original]

    def to_json(self) -> dict:
        chain = self.chain()
        last = chain[-1].seal if chain and chain[-1].seal else None
        return {
            "format": "notary-audit/v1",
            "bucket": self.bucket,
            "prefix": self.prefix,
            "audited_at": _iso(self.audited_at),
            "min_retention_days": None if self.min_retention is None else self.min_retention.days,
            "newest_within_hours": None if self.newest_within is None else self.newest_within / _HOUR,
            "ok": self.ok,
            "seal_count": len(chain),
            "latest_tree_size": last.tree_size if last else None,
            "findings": [f.to_json() for f in self.findings],
            "seals": [s.to_json() for s in self.seals],
        }

    def render_text(self) -> str:
        chain = self.chain()
        where = f"s3://{self.bucket}/{self.prefix}"
        lines = []
        if self.ok:
            first, last = (chain[0].verified, chain[-1].verified) if chain else (None, None)
            if chain and first and last:
                lines.append(
                    f"CLEAN: {len(chain)} seals in {where}, tree sizes {first.seal.tree_size} to {last.seal.tree_size}, "
                    f"timestamped {_iso(first.time)} to {_iso(last.time)}: every seal is signed by a trusted key, "
                    "timestamped, locked in COMPLIANCE mode, alone at its key, and extends the one before it.")
            else:
                lines.append(f"NO SEALS: nothing under {where}seals/ to audit; check the bucket and the prefix "
                             "(a prefix ends in '/').")
        else:
            lines.append(f"FINDINGS: {len(self.findings)} problems in {len(chain)} seals in {where}:")
            lines += ["  " + f.line() for f in self.findings]
        if self.min_retention is not None:
            lines.append(f"Retention policy checked: at least {self.min_retention.days} days after each timestamp.")
        if self.newest_within is not None:
            lines.append(f"Freshness checked: a seal timestamped at most {_hours(self.newest_within)} "
                         "before the audit.")
        return "\n".join(lines) + "\n"


_HOUR = datetime.timedelta(hours=1)


def _hours(span: datetime.timedelta) -> str:
    hours = span / _HOUR
    return f"{hours:g} hour" if hours == 1 else f"{hours:g} hours"


def _iso(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def lock_finding(
    lock: LockStatus | None, since: datetime.datetime, min_retention: datetime.timedelta | None,
    now: datetime.datetime | None = None,
) -> tuple[str, str] | None:
    """``(kind, sentence)`` when a version's lock falls short: not COMPLIANCE, ended by ``now``, or shorter than the policy.

    ``since`` is when retention starts to count: the token's time when it
    verifies, else the version's LastModified. ``now`` defaults to the clock.
    """
    if lock is None or lock.mode is None:
        return "unlocked", "has no object lock, so it can be deleted"
    if lock.mode != COMPLIANCE:
        kind = "governance" if lock.mode == "GOVERNANCE" else "unlocked"
        return kind, f"is locked in {lock.mode} mode until {_until(lock)}, expected {COMPLIANCE}"
    now = now or datetime.datetime.now(datetime.UTC)
    if lock.retain_until is not None and lock.retain_until <= now:
        return "retention", (f"was locked in {COMPLIANCE} mode until {_until(lock)}, which has passed: "
                             "it can be deleted now")
    if min_retention is not None:
        needed = since + min_retention
        if lock.retain_until is None or lock.retain_until < needed - CLOCK_SLACK:
            return "retention", (f"is locked until {_until(lock)}, expected at least {_iso(needed)} "
                                 f"({min_retention.days} days after {_iso(since)})")
    return None


def _until(lock: LockStatus) -> str:
    return _iso(lock.retain_until) if lock.retain_until else "no date"


def audit_seals(
    stored: Sequence[StoredSeal],
    trust: TrustedKeys,
    roots: Sequence[x509.Certificate],
    *,
    bucket: str = "",
    prefix: str = "",
    min_retention: datetime.timedelta | None = None,
    newest_within: datetime.timedelta | None = None,
    now: datetime.datetime | None = None,
) -> AuditReport:
    """Check every version of every seal and the chain of originals (see the module docstring)."""
    now = now or datetime.datetime.now(datetime.UTC)
    findings: list[Finding] = []
    audited: list[AuditedSeal] = []
    originals: list[tuple[StoredVersion, SealObject]] = []
    for record in sorted((r for r in stored if r.tree_size is not None), key=lambda r: r.tree_size):
        found = lambda kind, v, msg: findings.append(  # noqa: E731
            Finding(kind, record.key, v.version.version_id if v else None, record.tree_size, msg))
        live = [v for v in record.versions if not v.version.delete_marker]
        for v in record.versions:
            if v.version.delete_marker:
                found("delete-marker", v, f"a delete marker ({_iso(v.version.last_modified)}) hides the seal of "
                      f"tree size {record.tree_size}; the locked original is still there as an older version")
        if len(live) > 1:
            ids = ", ".join(v.version.version_id for v in live)
            for v in live[1:]:
                found("extra-version", v, f"the key holds {len(live)} versions ({ids}); this one was written "
                      f"{_iso(v.version.last_modified)}, after the original {live[0].version.version_id}")
        parsed: list[tuple[StoredVersion, SealObject]] = []
        for v in live:
            if v.body is None:
                found("malformed", v, f"was not read: {v.unread}")
                continue
            seal, verified = _check_version(record, v, trust, roots, min_retention, now, found)
            audited.append(AuditedSeal(record.key, v.version.version_id, v is live[0],
                                       hashlib.sha256(v.body).hexdigest(), v.version.lock, seal, verified))
            if seal is not None:
                parsed.append((v, seal))
        if parsed:
            first_v, first = parsed[0]
            for v, seal in parsed[1:]:
                if not hmac.compare_digest(seal.root_hash, first.root_hash) and seal.tree_size == first.tree_size:
                    found("fork", v, f"root {seal.root_hash.hex()} for tree size {seal.tree_size}, but the original "
                          f"version {first_v.version.version_id} has root {first.root_hash.hex()}")
            if parsed[0][0] is live[0]:
                originals.append(parsed[0])
    findings += _check_chain(originals)
    findings += _check_strays([r for r in stored if r.tree_size is None], originals, trust, roots, prefix)
    if newest_within is not None and audited:
        findings += _check_fresh(audited, newest_within, now, prefix)
    return AuditReport(bucket, prefix, now, min_retention, tuple(audited), tuple(findings), newest_within)


def _check_fresh(audited: Sequence[AuditedSeal], newest_within: datetime.timedelta, now: datetime.datetime,
                 prefix: str) -> list[Finding]:
    """A ``stale`` finding unless an original seal that verifies was timestamped within ``newest_within`` of ``now``."""
    verified = [s for s in audited if s.original and s.verified is not None]
    bound = f"the freshness bound of {_hours(newest_within)}"
    if not verified:
        return [Finding("stale", f"{prefix}seals/", None, None,
                        f"no seal verifies, so none shows that the log was sealed within {bound}")]
    newest = max(verified, key=lambda s: (s.verified.time, s.seal.tree_size))
    age = now - newest.verified.time
    if age <= newest_within:
        return []
    return [Finding("stale", newest.key, newest.version_id, newest.seal.tree_size, (
        f"the newest seal that verifies was timestamped {_iso(newest.verified.time)}, "
        f"{age / _HOUR:.1f} hours before this audit, past {bound}: nothing was sealed since (a stopped notary, anchoring that fails, "
        "or a log that got no entries)"))]


def _check_strays(strays: Sequence[StoredSeal], originals: Sequence[tuple[StoredVersion, SealObject]],
                  trust: TrustedKeys, roots, prefix: str) -> list[Finding]:
    """Objects under seals/ at keys that are not seal keys: each is misplaced, and a fork when it is one."""
    findings: list[Finding] = []
    by_size = {seal.tree_size: (v, seal) for v, seal in originals}
    expected = f"{prefix}seals/<tree size, 20 digits 0-9>.json"
    for record in strays:
        for v in record.versions:
            where = {"key": record.key, "version_id": v.version.version_id}
            if v.version.delete_marker:
                continue
            if v.body is None:
                findings.append(Finding("misplaced", tree_size=None, message=(
                    f"is under seals/ at a key that is not a seal key ({expected}), and was not read: {v.unread}"),
                    **where))
                continue
            try:
                seal = parse_seal(v.body)
            except FormatError as exc:
                findings.append(Finding("misplaced", tree_size=None, message=(
                    f"is under seals/ at a key that is not a seal key ({expected}), and is not a seal: {exc}"),
                    **where))
                continue
            findings.append(Finding("misplaced", tree_size=seal.tree_size, message=(
                f"holds a seal of tree size {seal.tree_size} at a key that is not a seal key ({expected})"), **where))
            original = by_size.get(seal.tree_size)
            if original is None or hmac.compare_digest(seal.root_hash, original[1].root_hash):
                continue
            try:
                verify_seal(seal, trust, roots)
                how = "signed and timestamped: two histories of the log"
            except (TimestampError, SignatureError) as exc:
                how = f"it does not verify ({exc})"
            findings.append(Finding("fork", tree_size=seal.tree_size, message=(
                f"a second seal of tree size {seal.tree_size}, with root {seal.root_hash.hex()}, against "
                f"{original[0].key}'s {original[1].root_hash.hex()}; {how}"), **where))
    return findings


def _check_version(record: StoredSeal, v: StoredVersion, trust: TrustedKeys, roots, min_retention, now, found):
    """Per-version checks; returns the parsed seal (or None) and its verification (or None)."""
    seal = verified = None
    try:
        seal = parse_seal(v.body)
    except FormatError as exc:
        found("malformed", v, f"is not a valid seal: {exc}")
    if seal is not None:
        if not seal.canonical:
            found("noncanonical", v, "is a seal, but not in the notary's canonical JSON (sorted keys, no spaces, ASCII)")
        if seal.tree_size != record.tree_size:
            found("misplaced", v, f"holds the seal of tree size {seal.tree_size}, but the key is for tree size "
                  f"{record.tree_size}")
        try:
            verified = verify_seal(seal, trust, roots)
        except TimestampError as exc:
            found("timestamp", v, str(exc))
        except SignatureError as exc:
            found("signature", v, f"the checkpoint of tree size {seal.tree_size}: {exc}")
    lock = lock_finding(v.version.lock, verified.time if verified else v.version.last_modified, min_retention, now)
    if lock:
        found(lock[0], v, lock[1])
    return seal, verified


def _check_chain(originals: list[tuple[StoredVersion, SealObject]]) -> list[Finding]:
    """Each original extends the original before it; a previous_tree_size with no seal is a gap."""
    findings = []
    previous: tuple[StoredVersion, SealObject] | None = None
    for v, seal in sorted(originals, key=lambda vs: vs[1].tree_size):
        where = dict(key=v.key, version_id=v.version.version_id, tree_size=seal.tree_size)
        prev_size = previous[1].tree_size if previous else 0
        named = seal.previous_tree_size
        if named == prev_size:
            try:
                verify_link(previous[1] if previous else None, seal)
            except VerificationError as exc:
                findings.append(Finding("chain", message=f"{exc} (previous seal: "
                                        f"{previous[0].key if previous else 'none'})", **where))
        elif named > prev_size:
            findings.append(Finding("gap", message=(
                f"the seal of tree size {seal.tree_size} follows tree size {named}, but the bucket has no valid seal "
                f"for tree size {named}: the seals after tree size {prev_size} up to {named} are missing"), **where))
        else:
            findings.append(Finding("chain", message=(
                f"the seal of tree size {seal.tree_size} names previous_tree_size {named}, but the seal before it "
                f"is for tree size {prev_size} ({previous[0].key}): the chain branches"), **where))
        previous = (v, seal)
    return findings


async def audit_bucket(
    reader: SealReader,
    trust: TrustedKeys,
    roots: Sequence[x509.Certificate],
    *,
    min_retention: datetime.timedelta | None = None,
    newest_within: datetime.timedelta | None = None,
) -> AuditReport:
    """Read every seal under the reader's bucket and prefix, and audit them.

    The audit's time is taken before the listing: the seals it sees are those
    that existed then, and a long read must not age them (``newest_within``).
    """
    now = datetime.datetime.now(datetime.UTC)
    stored = await fetch_seals(reader)
    return audit_seals(stored, trust, roots, bucket=reader.bucket, prefix=reader.prefix, min_retention=min_retention,
                       newest_within=newest_within, now=now)
