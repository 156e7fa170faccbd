"""Evidence packs (docs/AUDITORS.md, "Evidence packs"): one period's seals and everything needed to check them.

A pack is a directory of plain files (``LAYOUT``). ``build_pack`` makes its
files from an audit of the whole bucket prefix (``notary.audit``), the keyring
file and the TSA roots; ``verify_pack`` checks them again with nothing but the
pack. Both are pure: the command line reads S3 and writes the directory.

Which seals a pack holds: the audit's chain of original seal versions, cut to
the seals whose RFC 3161 time falls in the period [start, end), plus the seal
just before the period (so that the first seal's consistency proof has a root
to start from, and nothing can be missing at the start) and the seal just
after it (so that nothing can be missing at the end: it *closes* the pack).
The consistency proofs that chain them are inside the seals. A pack is made
once its period has ended and a seal timestamped after it is in the bucket:
before that, a seal of the period still on its way to S3 (the notary keeps
a seal's token while S3 is down, however long) would be missing without
showing, so ``build_pack`` refuses (``PackNotClosed``) and ``verify_pack``
fails a pack that is not closed, as one without any seal (the command line
writes neither).

What ``verify_pack`` checks: every file against ``SHA256SUMS``; every seal's
token against the pack's TSA roots and its signatures by a key of the pack's
keyring in service at the token's time; each seal's link to the one before
(RFC 9162 §2.1.4.2); which seals fall in the period, and that the pack was
made after its end; that the audit is of the bucket and prefix the pack
names; that each seal is the original the audit read, and that every
original the audit read in the pack's range of tree sizes is in the pack;
the audit's findings on that range; and that the pages (key history,
transcript, report) are the ones its data gives.

What it cannot check: pack.json, audit.json and SHA256SUMS are signed by no
one. Seals removed together with their entries in all three (and the next
seal relinked, its proof being covered by no signature) show only against
the bucket (``notary audit``) or a SHA256SUMS kept since the pack was handed
over; tests/test_evidence_pack.py shows both.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cryptography import x509
from hsm.errors import KeyringError
from hsm.keyring import Keyring

from notary.audit import AuditedSeal, AuditReport
from notary.errors import FormatError, NotaryError, VerificationError
from notary.sealobject import SealObject, VerifiedSeal, parse_seal, verify_link, verify_seal
from notary.trust import TrustedKeys
from notary.verify import FAILED, NOT_CHECKED, OK, Check

PACK_FORMAT = "notary-evidence/v1"
MANIFEST = "SHA256SUMS"  # `sha256sum -c SHA256SUMS` checks it too
PACK_JSON = "pack.json"
KEYRING = "keys/keyring.json"
KEY_HISTORY = "keys/key-history.txt"
TSA_ROOTS = "tsa/roots.pem"
AUDIT_JSON = "audit/audit.json"
AUDIT_TEXT = "audit/audit.txt"
TRANSCRIPT = "transcript.txt"
REPORT = "report.html"
SEALS_DIR = "seals/"

BEFORE, PERIOD, AFTER = "before", "period", "after"

# Exit status of `notary verify-pack` per class of problem (the lowest wins); 2 and 3 as for every command.
EXIT_MALFORMED = 3  # pack.json, the keyring or the TSA roots cannot be read
EXIT_MANIFEST = 4  # a file differs from SHA256SUMS, is missing, or is not listed
EXIT_SEAL = 5  # a seal is malformed, not signed by a key in service, not timestamped by a trusted TSA, or not the audited one
               # (pack.json and audit.json disagree on it, or on the bucket and prefix the seals are from)
EXIT_CHAIN = 6  # the seals do not chain, or do not cover the period (no seal after it closes the pack, say)
EXIT_FINDINGS = 9  # the pack's audit recorded problems on the pack's seals

# A pack of a quarter holds a few hundred thousand seals at most; refuse to read a directory far larger.
MAX_PACK_FILES = 2_000_000
_SEAL_FILE = re.compile(r"seals/(\d{20})\.json")
_SUM_LINE = re.compile(r"([0-9a-f]{64}) [ *](.+)")


TRANSCRIPT_METHOD = (
    "How: each seal file is parsed as a notary-seal/v1 object; its RFC 3161 token must cover SHA-256 of the exact",
    "checkpoint bytes and chain to the TSA roots in tsa/roots.pem; the checkpoint must carry a valid signature by a",
    "key of keys/keyring.json in service (between its activate and retire events) at the token's time; each seal's",
    "consistency proof must lead from the root of the seal before it to its own root (RFC 9162 section 2.1.4.2), so",
    "no seal is missing between them; each seal's time places it before, in or after the period; each seal must be",
    "the original version the audit read from S3 (audit/audit.json), whose findings on these seals are listed;",
    "every original seal that audit read in the pack's range of tree sizes must be in the pack; the pack must be",
    "made after the period's end. Limit: pack.json, audit/audit.json and SHA256SUMS are not signed, so seals removed",
    "with all three rewritten to match show only against the bucket (notary audit) or a copy of SHA256SUMS (or its",
    "SHA-256) kept since the pack was handed over.",
)


# Periods have four-digit years, so that every bound is written as ISO 8601 and read back exactly; the last
# whole day of year 9999 cannot be a --to date, its end (the next midnight) being past datetime's range.
FIRST_YEAR = 1000
_YEARS = f"periods lie in the years {FIRST_YEAR} to 9999 (UTC)"


class PackError(NotaryError):
    """A pack cannot be read at all (no such directory, too many files)."""


class PackNotClosed(NotaryError):
    """No seal timestamped after the period is in the bucket yet: a pack made now could miss seals of the period
    that are published later, without showing."""


# -- the period ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """The half-open interval [start, end) of RFC 3161 times whose seals a pack holds (UTC)."""

    start: datetime.datetime
    end: datetime.datetime

    def __post_init__(self) -> None:
        if self.start.year < FIRST_YEAR or self.end.year < FIRST_YEAR:
            raise FormatError(f"the period reaches back to the year {min(self.start, self.end).year}: {_YEARS}")
        if not self.start < self.end:
            raise FormatError(f"the period starts {_iso(self.start)}, not before its end {_iso(self.end)}")

    def require_ended(self, now: datetime.datetime) -> None:
        """A pack is made once its period has ended: before, seals timestamped later in the period cannot be in it."""
        if now < self.end:
            raise FormatError(f"the period ends {_iso(self.end)}, after now ({_iso(now)}): a pack made before the end "
                              "of its period cannot hold all of its seals; make it once the period has ended")

    def role(self, when: datetime.datetime) -> str:
        return BEFORE if when < self.start else AFTER if when >= self.end else PERIOD

    def describe(self) -> str:
        """``2026-07-01 to 2026-09-30 (UTC)`` for whole days, else both instants."""
        last_day = self.end - datetime.timedelta(days=1)
        if _midnight(self.start) and _midnight(self.end):
            return f"{self.start:%Y-%m-%d} to {last_day:%Y-%m-%d} (UTC, whole days)"
        return f"{_iso(self.start)} to {_iso(self.end)} (end excluded)"

    def slug(self) -> tuple[str, str]:
        """The period's first and last day, for ``--out`` placeholders."""
        return f"{self.start:%Y-%m-%d}", f"{self.end - datetime.timedelta(seconds=1):%Y-%m-%d}"

    def to_json(self) -> dict:
        return {"start": _iso(self.start), "end": _iso(self.end)}

    @classmethod
    def parse(cls, start: str, end: str) -> Period:
        """``--from``/``--to``: a date (``--to``'s whole day included) or a UTC time ``YYYY-MM-DDTHH:MM:SSZ``."""
        return cls(_bound(start, "--from", end_of_day=False), _bound(end, "--to", end_of_day=True))

    @classmethod
    def previous_quarter(cls, today: datetime.date) -> Period:
        """The calendar quarter before the one ``today`` (UTC) is in."""
        first_month = (today.month - 1) // 3 * 3 + 1
        end = datetime.datetime(today.year, first_month, 1, tzinfo=datetime.UTC)
        year, month = (today.year, first_month - 3) if first_month > 3 else (today.year - 1, 10)
        return cls(datetime.datetime(year, month, 1, tzinfo=datetime.UTC), end)


def _bound(text: str, option: str, end_of_day: bool) -> datetime.datetime:
    for pattern, whole_day in (("%Y-%m-%d", True), ("%Y-%m-%dT%H:%M:%SZ", False)):
        try:
            when = datetime.datetime.strptime(text, pattern).replace(tzinfo=datetime.UTC)
        except ValueError:
            continue
        try:
            return when + datetime.timedelta(days=1) if whole_day and end_of_day else when
        except OverflowError:  # --to 9999-12-31: its day ends in the year 10000
            raise FormatError(f"{option} {text!r} ends after the year 9999: {_YEARS}") from None
    raise FormatError(f"{option} {text!r} is not a date YYYY-MM-DD or a UTC time YYYY-MM-DDTHH:MM:SSZ")


def _midnight(when: datetime.datetime) -> bool:
    return when.time() == datetime.time(0)


def _iso(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str, where: str) -> datetime.datetime:
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except (TypeError, ValueError):
        raise FormatError(f"{where} {text!r} is not a UTC time YYYY-MM-DDTHH:MM:SSZ") from None


def seal_file(tree_size: int) -> str:
    return f"{SEALS_DIR}{tree_size:020d}.json"


# -- building ----------------------------------------------------------------------------------------------


def select_seals(report: AuditReport, period: Period) -> list[tuple[AuditedSeal, str]]:
    """The originals of the period, the one before it and the one after it, each with its role, by tree size.

    The pack runs, by tree size, from the last seal before the first one not
    timestamped before the period to the first seal after the *last* one
    timestamped in it. A seal stamped in the period therefore always is in the
    pack, even when timestamps go backwards across the period's end (TSAs whose
    clocks differ by their accuracy); a seal out of time order in the pack
    keeps its own role, and ``verify_pack`` flags it.

    A seal's time is its verified token's; a seal whose token does not verify
    (an audit finding already) is placed by its ``sealed_at``, the notary's clock.
    """
    chain = [s for s in report.chain() if s.seal is not None]
    roles = [period.role(_seal_time(s)) for s in chain]
    first = next((i for i, r in enumerate(roles) if r != BEFORE), len(chain))
    last = max((i for i, r in enumerate(roles) if r == PERIOD), default=first - 1) + 1
    return [(chain[i], roles[i]) for i in range(max(first - 1, 0), min(last + 1, len(chain)))]


def _seal_time(audited: AuditedSeal) -> datetime.datetime:
    if audited.verified is not None:
        return audited.verified.time
    return datetime.datetime.strptime(audited.seal.sealed_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.UTC)


def build_pack(
    report: AuditReport,
    period: Period,
    keyring: bytes,
    tsa_roots: bytes,
    *,
    created_at: datetime.datetime,
) -> tuple[dict[str, bytes], PackVerdict]:
    """Every file of the pack, by path, and the verification of its contents (the transcript's source).

    ``created_at`` must not be before the period's end (``Period.require_ended``), and the pack must end with a
    seal timestamped after the period (``PackNotClosed``).
    """
    period.require_ended(created_at)
    selected = select_seals(report, period)
    if not selected or selected[-1][1] != AFTER:
        last = (f"it would end with the seal of tree size {selected[-1][0].seal.tree_size}, timestamped "
                f"{_iso(_seal_time(selected[-1][0]))}" if selected else "the bucket holds no seal")
        raise PackNotClosed(f"no seal timestamped after the period (at or after {_iso(period.end)}) is in "
                            f"s3://{report.bucket}/{report.prefix}seals/ yet to close the pack ({last}): a seal of "
                            "the period published later (a seal keeps its token while S3 is down) would be "
                            "missing from it without showing")
    files: dict[str, bytes] = {seal_file(s.seal.tree_size): s.seal.raw for s, _ in selected}
    audit_json = report.to_json()
    pack = {
        "format": PACK_FORMAT,
        "origin": Keyring.parse(keyring).name,
        "bucket": report.bucket,
        "prefix": report.prefix,
        "period": period.to_json(),
        "created_at": _iso(created_at),
        "latest_tree_size": audit_json["latest_tree_size"],
        "seals": [{"file": seal_file(s.seal.tree_size), "tree_size": s.seal.tree_size, "role": role,
                   "s3_key": s.key, "version_id": s.version_id, "sha256": s.body_sha256,
                   "lock_mode": s.lock.mode if s.lock else None,
                   "retain_until": _iso(s.lock.retain_until) if s.lock and s.lock.retain_until else None}
                  for s, role in selected],
    }
    files[PACK_JSON] = (json.dumps(pack, indent=2, sort_keys=True) + "\n").encode()
    files[KEYRING] = keyring
    files[TSA_ROOTS] = tsa_roots
    files[AUDIT_JSON] = (json.dumps(audit_json, indent=2) + "\n").encode()
    verdict = verify_contents(files)
    files[AUDIT_TEXT] = (report.render_text() + verdict.findings_text()).encode()
    files |= pages(files, verdict)
    files[MANIFEST] = manifest(files)
    return files, verdict


def pages(files: Mapping[str, bytes], verdict: PackVerdict) -> dict[str, bytes]:
    """The key history table, the transcript and the HTML report: computed from the pack's data (pack.json,
    keyring, and the verification of its contents), so that ``verify_pack`` can rebuild and compare them."""
    from notary.evidence_report import key_history_text, render_html

    keyring = Keyring.parse(files[KEYRING])
    made = {KEY_HISTORY: key_history_text(keyring).encode(), TRANSCRIPT: verdict.render_text().encode()}
    listed = {path: data for path, data in files.items() if path not in (REPORT, MANIFEST)} | made
    made[REPORT] = render_html(verdict, json.loads(files[PACK_JSON]), keyring, listed).encode()
    return made


def manifest(files: Mapping[str, bytes]) -> bytes:
    """``SHA256SUMS`` in sha256sum(1)'s format, every file but itself, sorted by path."""
    return "".join(f"{hashlib.sha256(data).hexdigest()}  {path}\n"
                   for path, data in sorted(files.items()) if path != MANIFEST).encode()


def check_new(directory: Path) -> None:
    """A pack is never written over: ``directory`` must not exist, or be empty."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise PackError(f"{directory} already exists and is not an empty directory; an evidence pack is never "
                        "written over: choose another --out")


def write_pack(directory: Path, files: Mapping[str, bytes]) -> None:
    """Create ``directory`` (``check_new``) and the pack's files in it."""
    check_new(directory)
    for path, data in sorted(files.items()):
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def read_pack(directory: Path) -> dict[str, bytes]:
    """Every regular file under ``directory``, by relative POSIX path."""
    if not directory.is_dir():
        raise PackError(f"{directory} is not a directory")
    files: dict[str, bytes] = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            if len(files) >= MAX_PACK_FILES:
                raise PackError(f"{directory} holds more than {MAX_PACK_FILES} files, no evidence pack does")
            files[path.relative_to(directory).as_posix()] = path.read_bytes()
    return files


# -- verifying ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a pack, naming the file."""

    file: str
    message: str
    exit_code: int

    def line(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass(frozen=True)
class PackSeal:
    """A seal file of the pack as checked: its role in the period and what verified."""

    file: str
    seal: SealObject | None
    verified: VerifiedSeal | None
    role: str | None  # None when its time is unknown
    checks: tuple[Check, ...]


@dataclass(frozen=True)
class PackVerdict:
    """The verification of a pack: the material used, each seal's checks, the problems (none: verified)."""

    origin: str
    period: Period | None
    trust: TrustedKeys | None
    roots: tuple[x509.Certificate, ...]
    seals: tuple[PackSeal, ...]
    checks: tuple[Check, ...]  # pack-level: manifest, material, period, audit
    problems: tuple[Problem, ...]
    audit_findings: tuple[str, ...] = ()  # the audit's finding lines on the pack's range

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        return min((p.exit_code for p in self.problems), default=0)

    def period_seals(self) -> list[PackSeal]:
        return [s for s in self.seals if s.role == PERIOD]

    def sentence(self) -> str:
        where = f"log {self.origin}, period {self.period.describe() if self.period else '?'}"
        if not self.ok:
            return f"NOT VERIFIED: evidence pack for {where}: {len(self.problems)} problem(s)."
        inside = self.period_seals()
        text = f"VERIFIED: evidence pack for {where}: {len(inside)} seal(s) in the period"
        if inside:
            first, last = inside[0], inside[-1]
            text += (f", tree sizes {first.seal.tree_size} to {last.seal.tree_size}, timestamped "
                     f"{_iso(first.verified.time)} to {_iso(last.verified.time)}")
        if self.seals:
            start = self.seals[0].seal.tree_size if self.seals[0].role == BEFORE else 0
            text += (f"; the {len(self.seals)} seal(s) of the pack form one unbroken chain from tree size {start} "
                     f"to {self.seals[-1].seal.tree_size}, each signed by a key in service at its RFC 3161 time and timestamped by a "
                     "trusted TSA, and the audit recorded no problem on them")
        return text + "."

    def render_text(self) -> str:
        lines = [self.sentence(), "", *TRANSCRIPT_METHOD, ""]
        lines += [f"  {c.name:<10} {c.status:<12} {c.detail}" for c in self.checks]
        for s in self.seals:
            size = s.seal.tree_size if s.seal else "?"
            lines += ["", f"{s.file} (tree size {size}, {s.role or 'time unknown'})"]
            lines += [f"  {c.name:<10} {c.status:<12} {c.detail}" for c in s.checks]
        if self.problems:
            lines += ["", f"Problems ({len(self.problems)}):"] + [f"  {p.line()}" for p in self.problems]
        return "\n".join(lines) + "\n"

    def findings_text(self) -> str:
        if not self.audit_findings:
            return "Findings on the evidence pack's seals: none.\n"
        return "Findings on the evidence pack's seals:\n" + "".join(f"  {f}\n" for f in self.audit_findings)


def verify_manifest(files: Mapping[str, bytes]) -> tuple[Check, list[Problem]]:
    """Each file's SHA-256 against ``SHA256SUMS``; a file missing, changed or not listed is a problem."""
    if MANIFEST not in files:
        return Check("files", FAILED, f"the pack has no {MANIFEST}", EXIT_MANIFEST), \
            [Problem(MANIFEST, "is missing, so no file of the pack can be checked", EXIT_MANIFEST)]
    problems: list[Problem] = []
    listed: dict[str, str] = {}
    for number, line in enumerate(files[MANIFEST].decode("utf-8", "replace").splitlines(), 1):
        match = _SUM_LINE.fullmatch(line)
        if not match:
            problems.append(Problem(MANIFEST, f"line {number} is not '<sha256>  <file>'", EXIT_MANIFEST))
            continue
        path = PurePosixPath(match.group(2))
        if path.is_absolute() or ".." in path.parts:
            problems.append(Problem(MANIFEST, f"line {number} names {match.group(2)!r}, outside the pack", EXIT_MANIFEST))
            continue
        listed[path.as_posix()] = match.group(1)
    for path, expected in sorted(listed.items()):
        if path not in files:
            problems.append(Problem(path, f"is listed in {MANIFEST} but missing from the pack", EXIT_MANIFEST))
            continue
        actual = hashlib.sha256(files[path]).hexdigest()
        if not hmac.compare_digest(actual, expected):
            problems.append(Problem(path, f"has SHA-256 {actual}, but {MANIFEST} lists {expected}: the file was "
                                    "changed after the pack was made", EXIT_MANIFEST))
    for path in sorted(set(files) - set(listed) - {MANIFEST}):
        problems.append(Problem(path, f"is in the pack but not listed in {MANIFEST}: it was added after the pack "
                                "was made", EXIT_MANIFEST))
    if problems:
        return Check("files", FAILED, f"{len(problems)} file problem(s) against {MANIFEST}", EXIT_MANIFEST), problems
    return Check("files", OK, f"all {len(listed)} files have the SHA-256 that {MANIFEST} lists, and no other file "
                 "is in the pack", EXIT_MANIFEST), []


def verify_pack(files: Mapping[str, bytes]) -> PackVerdict:
    """The manifest, then the contents (``verify_contents``), then the pages made from them (``pages``)."""
    check, problems = verify_manifest(files)
    contents = verify_contents(files)
    pages_check, page_problems = _check_pages(files, contents)
    return PackVerdict(contents.origin, contents.period, contents.trust, contents.roots, contents.seals,
                       (check,) + contents.checks + (pages_check,),
                       tuple(problems) + contents.problems + tuple(page_problems), contents.audit_findings)


def _check_pages(files: Mapping[str, bytes], contents: PackVerdict) -> tuple[Check, list[Problem]]:
    """key-history.txt, transcript.txt and report.html against the ones ``pages`` makes from the pack's data.

    A page made from data that has changed since differs too: then the data's
    own problems give the exit status, and the page is only listed.
    """
    if contents.trust is None:
        return Check("pages", NOT_CHECKED, f"{KEY_HISTORY}, {TRANSCRIPT} and {REPORT} cannot be rebuilt: the "
                     "pack's data cannot be read", EXIT_MANIFEST), []
    exit_code = contents.exit_code or EXIT_MANIFEST
    problems = [Problem(path, "is missing" if path not in files else
                        "differs from the one rebuilt from the pack's data (pack.json, seals, keyring, audit.json "
                        "and their verification): it was edited, or made from data that has changed since",
                        exit_code)
                for path, data in sorted(pages(files, contents).items()) if files.get(path) != data]
    if problems:
        return Check("pages", FAILED, f"{len(problems)} page(s) differ from the ones rebuilt from the pack's data",
                     exit_code), problems
    return Check("pages", OK, f"{KEY_HISTORY}, {TRANSCRIPT} and {REPORT} are byte for byte the ones rebuilt from "
                 "the pack's data and its verification", EXIT_MANIFEST), []


def verify_contents(files: Mapping[str, bytes]) -> PackVerdict:
    """Seals, chain, period and audit of a pack, from its files alone (no manifest check)."""
    problems: list[Problem] = []
    try:
        pack = _pack_json(files)
        period = Period(_parse_iso(pack["period"]["start"], "period.start"),
                        _parse_iso(pack["period"]["end"], "period.end"))
        created_at = _parse_iso(pack["created_at"], "created_at")
    except FormatError as exc:
        return _unreadable(PACK_JSON, str(exc))
    try:
        keyring = Keyring.parse(files[KEYRING]) if KEYRING in files else None
    except KeyringError as exc:
        return _unreadable(KEYRING, f"is not a keyring: {exc}", pack["origin"], period)
    if keyring is None:
        return _unreadable(KEYRING, "is missing: the pack has no key history to check signatures with",
                           pack["origin"], period)
    try:
        roots = tuple(x509.load_pem_x509_certificates(files[TSA_ROOTS])) if TSA_ROOTS in files else ()
    except ValueError as exc:
        return _unreadable(TSA_ROOTS, f"holds no PEM certificate ({exc})", pack["origin"], period)
    if not roots:
        return _unreadable(TSA_ROOTS, "is missing or holds no certificate: timestamps cannot be checked",
                           pack["origin"], period)
    trust = TrustedKeys.from_keyring(keyring)
    checks = [Check("material", OK, f"{len(trust.keys)} key(s) of log {keyring.name} from {KEYRING} "
                    f"({len(keyring.events)} key events), {len(roots)} TSA root(s) from {TSA_ROOTS}: "
                    + "; ".join(r.subject.rfc4514_string() for r in roots), EXIT_MALFORMED)]
    if keyring.name != pack["origin"]:
        problems.append(Problem(KEYRING, f"is the keyring of log {keyring.name!r}, but the pack is for log "
                                f"{pack['origin']!r}", EXIT_MALFORMED))

    audit = _audit_json(files, problems)
    originals = _originals_by_size(audit) if audit is not None else None
    seals = [_check_seal(path, data, trust, roots, period, originals) for path, data in sorted(files.items())
             if path.startswith(SEALS_DIR)]
    problems += [Problem(s.file, c.detail, c.exit_code) for s in seals for c in s.checks if c.status == FAILED]
    seals, chain_problems = _check_chain(seals, period)
    problems += chain_problems
    period_check, period_problems = _check_period(seals, pack, period, created_at, audit)
    problems += period_problems
    checks.append(period_check)
    findings = _findings_on(audit, seals) if audit is not None else []
    if audit is None:
        checks.append(Check("audit", FAILED, f"{AUDIT_JSON} cannot be read, so locks and versions are unknown",
                            EXIT_MALFORMED))
    else:
        problems += _stated_against_audit(pack, originals)
        elsewhere = _audit_of_other_prefix(pack, audit)
        problems += elsewhere
        checks.append(Check("audit", FAILED, f"{AUDIT_JSON} {elsewhere[0].message}", EXIT_SEAL) if elsewhere else
                      Check("audit", FAILED if findings else OK,
                            f"{AUDIT_JSON} records {len(findings)} finding(s) on the pack's seals" if findings else
                            f"{AUDIT_JSON}: the audit of s3://{pack['bucket']}/{pack['prefix']} made with the pack "
                            "recorded no problem on the pack's range of tree sizes (locks, versions, chain)",
                            EXIT_FINDINGS))
    problems += [Problem(AUDIT_JSON, f, EXIT_FINDINGS) for f in findings]
    return PackVerdict(pack["origin"], period, trust, roots, tuple(seals), tuple(checks), tuple(problems),
                       tuple(findings))


def _unreadable(file: str, message: str, origin: str = "?", period: Period | None = None) -> PackVerdict:
    return PackVerdict(origin, period, None, (), (), (Check("material", FAILED, f"{file} {message}", EXIT_MALFORMED),),
                       (Problem(file, message, EXIT_MALFORMED),))


# The JSON fields verify_pack reads, with their types; None stands for JSON null. A field that is missing or of
# another type makes the file malformed, so that no later step meets a value it does not expect.
_STR, _INT, _OPT_STR, _OPT_INT = (str,), (int,), (str, type(None)), (int, type(None))
_PACK_FIELDS = {"format": _STR, "origin": _STR, "bucket": _STR, "prefix": _STR, "period": (dict,),
                "created_at": _STR, "latest_tree_size": _OPT_INT, "seals": (list,)}
_PERIOD_FIELDS = {"start": _STR, "end": _STR}
_PACK_SEAL_FIELDS = {"file": _STR, "tree_size": _INT, "role": _STR, "s3_key": _STR, "version_id": _STR,
                     "sha256": _STR, "lock_mode": _OPT_STR, "retain_until": _OPT_STR}
_AUDIT_FIELDS = {"format": _STR, "bucket": _STR, "prefix": _STR, "latest_tree_size": _OPT_INT, "findings": (list,),
                 "seals": (list,)}
_AUDIT_SEAL_FIELDS = {"key": _STR, "version_id": _STR, "original": (bool,), "sha256": _STR, "lock_mode": _OPT_STR,
                      "retain_until": _OPT_STR}  # and tree_size, an int, when the object is a seal
_FINDING_FIELDS = {"kind": _STR, "key": _STR, "version_id": _OPT_STR, "tree_size": _OPT_INT, "message": _STR}
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "a list", dict: "an object",
               type(None): "null"}


def _fields(value: object, fields: Mapping[str, tuple[type, ...]], where: str) -> dict:
    """``value`` when it is a JSON object holding each of ``fields`` with one of its types (true is no integer)."""
    if not isinstance(value, dict):
        raise FormatError(f"{where or 'the file'} is not a JSON object")
    for name, kinds in fields.items():
        field = value.get(name, ...)
        if not isinstance(field, kinds) or (isinstance(field, bool) and bool not in kinds):
            path = f"{where}.{name}" if where else name
            raise FormatError(f"has no field {path} of type {' or '.join(_TYPE_NAMES[k] for k in kinds)}")
    return value


def _pack_json(files: Mapping[str, bytes]) -> dict:
    if PACK_JSON not in files:
        raise FormatError("is missing")
    try:
        doc = json.loads(files[PACK_JSON])
    except ValueError as exc:
        raise FormatError(f"is not JSON: {exc}") from None
    pack = _fields(doc, _PACK_FIELDS, "")
    if pack["format"] != PACK_FORMAT:
        raise FormatError(f"has format {pack['format']!r}, expected {PACK_FORMAT!r}")
    _fields(pack["period"], _PERIOD_FIELDS, "period")
    for i, entry in enumerate(pack["seals"]):
        _fields(entry, _PACK_SEAL_FIELDS, f"seals[{i}]")
    return pack


def _audit_json(files: Mapping[str, bytes], problems: list[Problem]) -> dict | None:
    """The audit made with the pack, its fields checked; None (and a problem) when it is unusable."""
    try:
        audit = _fields(json.loads(files[AUDIT_JSON]), _AUDIT_FIELDS, "")
        if audit["format"] != "notary-audit/v1":
            raise FormatError(f"has format {audit['format']!r}, expected 'notary-audit/v1'")
        for i, entry in enumerate(audit["seals"]):
            _fields(entry, _AUDIT_SEAL_FIELDS | ({"tree_size": _INT} if "tree_size" in entry else {}), f"seals[{i}]")
        for i, entry in enumerate(audit["findings"]):
            _fields(entry, _FINDING_FIELDS, f"findings[{i}]")
        return audit
    except KeyError:
        problems.append(Problem(AUDIT_JSON, "is missing, so locks and versions are unknown", EXIT_MALFORMED))
    except ValueError as exc:  # FormatError is one
        message = str(exc) if isinstance(exc, FormatError) else f"is not JSON: {exc}"
        problems.append(Problem(AUDIT_JSON, f"{message}: it is not a notary-audit/v1 report", EXIT_MALFORMED))
    return None


def _originals_by_size(audit: dict) -> dict[int, dict]:
    """The original seal versions the audit read, by tree size (the first, should a size be at two keys)."""
    originals: dict[int, dict] = {}
    for entry in audit["seals"]:
        if entry["original"] and "tree_size" in entry:
            originals.setdefault(entry["tree_size"], entry)
    return originals


def _check_seal(path: str, data: bytes, trust: TrustedKeys, roots, period: Period,
                originals: Mapping[int, dict] | None) -> PackSeal:
    match = _SEAL_FILE.fullmatch(path)
    try:
        seal = parse_seal(data)
    except FormatError as exc:
        return PackSeal(path, None, None, None, (Check("format", FAILED, f"is not a valid seal: {exc}", EXIT_SEAL),))
    checks = [Check("format", OK, f"a {seal.origin} seal of tree size {seal.tree_size}"
                    f"{', canonical JSON' if seal.canonical else ''}; its fields agree with its signed checkpoint",
                    EXIT_SEAL)]
    if not match or int(match.group(1)) != seal.tree_size:
        checks.append(Check("format", FAILED, f"holds the seal of tree size {seal.tree_size}, but its name is not "
                            f"{seal_file(seal.tree_size)}", EXIT_SEAL))
    if not seal.canonical:
        checks.append(Check("format", FAILED, "is not in the notary's canonical JSON, so the notary did not write "
                            "these bytes", EXIT_SEAL))
    verified = None
    try:
        verified = verify_seal(seal, trust, roots)
        checks.append(Check("timestamp", OK, f"RFC 3161 token of {_iso(verified.time)} by {verified.timestamp.tsa} "
                            f"covers SHA-256 of the checkpoint bytes and chains to {TSA_ROOTS}", EXIT_SEAL))
        checks.append(Check("signature", OK, "signed by " + ", ".join(f"{k.name()}, {k.interval()}"
                                                                       for k in verified.signed_by)
                            + f", so in service at {_iso(verified.time)}", EXIT_SEAL))
    except VerificationError as exc:
        checks.append(Check("seal", FAILED, f"does not verify: {exc}", EXIT_SEAL))
    if originals is not None:
        digest = hashlib.sha256(data).hexdigest()
        entry = originals.get(seal.tree_size)
        if entry is None or not hmac.compare_digest(entry["sha256"].encode(), digest.encode()):
            found = f"SHA-256 {entry['sha256']}" if entry else "no seal"
            checks.append(Check("audited", FAILED, f"has SHA-256 {digest}, but the original version the audit read "
                                f"for tree size {seal.tree_size} has {found} ({AUDIT_JSON})", EXIT_SEAL))
        else:
            lock = f"locked {entry['lock_mode']} until {entry['retain_until']}" if entry["lock_mode"] else "not locked"
            checks.append(Check("audited", OK, f"the original version {entry['version_id']} of {entry['key']} as "
                                f"the audit read it ({lock} then)", EXIT_SEAL))
    return PackSeal(path, seal, verified, period.role(verified.time) if verified else None, tuple(checks))


def _check_chain(seals: Sequence[PackSeal], period: Period) -> tuple[list[PackSeal], list[Problem]]:
    """Each seal extends the one before it in the pack; the first extends the empty log or lies before the period."""
    problems: list[Problem] = []
    ordered = sorted((s for s in seals if s.seal is not None), key=lambda s: s.seal.tree_size)
    linked: list[PackSeal] = []
    previous: PackSeal | None = None
    for s in ordered:
        seal = s.seal
        if previous is None and seal.previous_tree_size != 0:
            if s.role != BEFORE:
                problems.append(Problem(s.file, f"is the pack's first seal and follows tree size "
                                        f"{seal.previous_tree_size}, but it is not timestamped before the period "
                                        f"and the pack has no seal before it: seals at the start of the period may be "
                                        "missing", EXIT_CHAIN))
            check = Check("link", NOT_CHECKED, f"the first seal of the pack; it extends tree size "
                          f"{seal.previous_tree_size}, before the period", EXIT_CHAIN)
        elif previous is not None and seal.previous_tree_size > previous.seal.tree_size:
            check = Check("link", FAILED, f"follows tree size {seal.previous_tree_size}, but the pack has no seal "
                          f"for it: the seals after {previous.file} up to tree size {seal.previous_tree_size} are "
                          "missing", EXIT_CHAIN)
        else:
            try:
                verify_link(previous.seal if previous else None, seal)
                start = f"{previous.file} (tree size {previous.seal.tree_size})" if previous else "the empty log"
                check = Check("link", OK, f"RFC 9162 consistency proof of {len(seal.consistency_proof)} hash(es) "
                              f"from {start} to tree size {seal.tree_size}", EXIT_CHAIN)
            except VerificationError as exc:
                check = Check("link", FAILED, str(exc), EXIT_CHAIN)
        if check.status == FAILED:
            problems.append(Problem(s.file, check.detail, EXIT_CHAIN))
        linked.append(PackSeal(s.file, s.seal, s.verified, s.role, s.checks + (check,)))
        previous = s
    return linked + [s for s in seals if s.seal is None], problems


def _check_period(seals: Sequence[PackSeal], pack: dict, period: Period, created_at: datetime.datetime,
                  audit: dict | None) -> tuple[Check, list[Problem]]:
    """The pack made once the period had ended, and closed by a seal timestamped after it; roles in order (before,
    period..., after), and as pack.json states them; and every original seal the audit read in the pack's range of
    tree sizes in the pack."""
    problems: list[Problem] = []
    if not seals:
        problems.append(Problem(SEALS_DIR, "holds no seal at all, not even one before the period: the pack shows "
                                "nothing about the period (was it made from a wrong bucket or prefix?)", EXIT_CHAIN))
    if created_at < period.end:
        problems.append(Problem(PACK_JSON, f"says the pack was made {_iso(created_at)}, before the period's end "
                                f"{_iso(period.end)}: seals timestamped later in the period cannot be in it",
                                EXIT_CHAIN))
    timed = [s for s in seals if s.role is not None]
    for i, s in enumerate(timed):
        if s.role == BEFORE and i != 0:
            problems.append(Problem(s.file, f"is timestamped {_iso(s.verified.time)}, before the period, but is not "
                                    "the pack's first seal: timestamps go backwards", EXIT_CHAIN))
        if s.role == AFTER and i != len(timed) - 1:
            problems.append(Problem(s.file, f"is timestamped {_iso(s.verified.time)}, after the period, but is not "
                                    "the pack's last seal: timestamps go backwards", EXIT_CHAIN))
    stated = {e["file"]: e["role"] for e in pack["seals"]}
    for s in timed:
        if stated.get(s.file) != s.role:
            problems.append(Problem(PACK_JSON, f"gives {s.file} the role {stated.get(s.file)!r}, but its timestamp "
                                    f"{_iso(s.verified.time)} places it {s.role} the period", EXIT_CHAIN))
    for file in sorted(set(stated) - {s.file for s in seals}):
        problems.append(Problem(file, f"is listed in {PACK_JSON} but missing from the pack", EXIT_CHAIN))
    inside = [s for s in timed if s.role == PERIOD]
    has_after = bool(timed) and timed[-1].role == AFTER
    latest, last = pack["latest_tree_size"], (timed[-1].seal.tree_size if timed else 0)
    if not has_after and isinstance(latest, int) and latest > last:
        problems.append(Problem(PACK_JSON, f"says the bucket held seals up to tree size {latest} when the pack was "
                                f"made, but the pack ends at tree size {last} with no seal after the period: seals "
                                "at the end of the period may be missing", EXIT_CHAIN))
    elif timed and not has_after:
        problems.append(Problem(timed[-1].file, f"is the pack's last seal and is timestamped "
                                f"{_iso(timed[-1].verified.time)}, {'in' if timed[-1].role == PERIOD else 'before'} "
                                "the period: no seal timestamped after the period closes the pack, so a seal of the "
                                f"period published after the pack was made ({pack['created_at']}; a seal keeps its "
                                "token while S3 is down) would be missing without showing. Make the pack again once "
                                "a seal timestamped after the period is in the bucket", EXIT_CHAIN))
    if audit is not None:
        problems += _missing_originals(seals, set(stated), audit)
        if latest != audit["latest_tree_size"]:
            problems.append(Problem(PACK_JSON, f"says the bucket held seals up to tree size {latest} when the pack "
                                    f"was made, but {AUDIT_JSON} says {audit['latest_tree_size']}", EXIT_CHAIN))
    end = ("closed by the seal after it, " + timed[-1].file) if has_after else (
        f"not closed by a later seal: none existed when the pack was made ({pack['created_at']}); the audit "
        f"then saw tree size {pack['latest_tree_size']} as the latest")
    detail = (f"{len(inside)} seal(s) timestamped in {period.describe()}; start "
              f"{'covered by the seal before it, ' + timed[0].file if timed and timed[0].role == BEFORE else 'at the log’s first seal' if timed and timed[0].seal.previous_tree_size == 0 else 'not covered'}; end {end}")
    return Check("period", FAILED if problems else OK, detail, EXIT_CHAIN), problems


def _missing_originals(seals: Sequence[PackSeal], stated: set[str], audit: dict) -> list[Problem]:
    """Each original seal in audit.json whose tree size is in the pack's range but whose file is not in the pack
    (one that pack.json lists is named as missing already)."""
    low, high = _pack_range(seals)
    held = {s.file for s in seals} | stated
    return [Problem(seal_file(size), f"is missing from the pack, but the audit read the original seal of tree size "
                    f"{size} ({entry['key']} version {entry['version_id']}, {AUDIT_JSON}), in the pack's range of "
                    f"tree sizes {low} to {'the latest' if high is None else high}", EXIT_CHAIN)
            for size, entry in sorted(_originals_by_size(audit).items())
            if low <= size and (high is None or size <= high) and seal_file(size) not in held]


def _audit_of_other_prefix(pack: dict, audit: dict) -> list[Problem]:
    """audit.json must be the audit of the bucket and prefix pack.json names: an audit of another one vouches for
    none of the pack's seals (its versions, locks and findings are another prefix's)."""
    if (audit["bucket"], audit["prefix"]) == (pack["bucket"], pack["prefix"]):
        return []
    return [Problem(AUDIT_JSON, f"is the audit of bucket {audit['bucket']!r}, prefix {audit['prefix']!r}, but "
                    f"{PACK_JSON} says the pack's seals are from bucket {pack['bucket']!r}, prefix {pack['prefix']!r}: "
                    "the audit's versions, locks and findings are not those of the pack's seals", EXIT_SEAL)]


def _stated_against_audit(pack: dict, originals: Mapping[int, dict]) -> list[Problem]:
    """pack.json's S3 key, version, SHA-256 and lock of each seal against the original the audit read (the
    report shows pack.json's); a seal the audit did not read is named by its own check."""
    problems = []
    for entry in pack["seals"]:
        original = originals.get(entry["tree_size"])
        for stated, recorded in (("s3_key", "key"), ("version_id", "version_id"), ("sha256", "sha256"),
                                 ("lock_mode", "lock_mode"), ("retain_until", "retain_until")):
            if original is not None and entry[stated] != original[recorded]:
                problems.append(Problem(PACK_JSON, f"gives {entry['file']} the {stated} {entry[stated]!r}, but "
                                        f"{AUDIT_JSON} records {original[recorded]!r} for the original seal of "
                                        f"tree size {entry['tree_size']}", EXIT_SEAL))
    return problems


def _pack_range(seals: Sequence[PackSeal]) -> tuple[int, int | None]:
    """The tree sizes a pack answers for: from its seal before the period (or the empty log) to its seal after
    the period (or, when it has none, every later one: None)."""
    timed = [s for s in seals if s.seal is not None]
    low = timed[0].seal.tree_size if timed and timed[0].role == BEFORE else 0
    high = timed[-1].seal.tree_size if timed and timed[-1].role == AFTER else None
    return low, high


def _findings_on(audit: dict, seals: Sequence[PackSeal]) -> list[str]:
    """The audit's findings on the pack's range of tree sizes (``_pack_range``)."""
    low, high = _pack_range(seals)
    return [f"[{f['kind']}] {f['key']} version {f['version_id'] or '-'}: {f['message']}" for f in audit["findings"]
            if f["tree_size"] is not None and low <= f["tree_size"] and (high is None or f["tree_size"] <= high)]
