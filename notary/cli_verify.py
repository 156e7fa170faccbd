"""``notary verify`` and ``notary audit``: what an auditor runs, with public material only.

``verify`` checks one record offline (``notary.verify``); ``audit`` walks a
bucket of seals (``notary.audit``). Neither needs the daemon or an HSM. Both
print a verdict for people, or ``--json``. Exit codes are documented in
docs/AUDITORS.md and in each command's --help.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import sys
import textwrap
from pathlib import Path

from hsm.errors import KeyringError
from hsm.keyring import Keyring

from notary.client import record_digest
from notary.config import MAX_RETENTION_DAYS  # as s3.retention_days: far beyond it a date passes the year 9999
from notary.entry import parse_digest_hex
from notary.errors import FormatError, NotaryError
from notary.trust import TrustedKeys
from notary.verify import EXIT_MALFORMED, EXIT_USAGE

EXIT_FINDINGS = 9  # notary audit: the bucket has at least one finding
EXIT_NO_SEALS = 10  # notary audit: nothing to audit under the prefix (a wrong bucket or prefix is no clean audit)

VERIFY_EXIT_CODES = """exit status:
  0  verified: every check made passed
  1  the verification could not run (S3 unreachable or refused access): no verdict
  2  usage: missing or conflicting options, unreadable file
  3  malformed input: the proof, seal, keyring, a key, --digest or the TSA roots are not in their format
  4  record mismatch: the record's SHA-256 is not the one the proof covers
  5  inclusion: the proof does not lead from the entry to the checkpoint's root
  6  signature: the checkpoint is not signed by a key trusted at the timestamp's time
  7  timestamp: the RFC 3161 token does not chain to the TSA roots or does not cover the checkpoint
  8  S3: the seal object is not alone at its key, not COMPLIANCE-locked, or differs from --seal
When several checks fail, the lowest code is returned; every check is listed in the output."""

AUDIT_EXIT_CODES = f"""exit status:
  0  clean: no finding
  1  the audit could not run (S3 unreachable or refused access)
  2  usage: missing or conflicting options, unreadable file
  3  malformed input: the keyring, a key or the TSA roots are not in their format
  {EXIT_FINDINGS}  findings: at least one problem, each listed with the object key and version
  {EXIT_NO_SEALS} no seals: nothing under the prefix to audit; check --bucket and --prefix"""


class CommandError(NotaryError):
    """A failure before any verdict, with the exit status it ends the command with."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "verify", help="verify a record's .tlog-proof offline: inclusion, signatures, timestamp, S3 lock",
        description=textwrap.fill(
            "Verify a record offline with public material only: the proof's inclusion, the checkpoint's signatures "
            "by a key trusted at the time of the RFC 3161 timestamp, the timestamp over the exact signed checkpoint, "
            "and with --s3 the seal object's COMPLIANCE lock."),
        epilog=VERIFY_EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("proof", type=Path, help="the .tlog-proof file")
    record = p.add_mutually_exclusive_group()
    record.add_argument("--digest", metavar="HEX", help="the record's SHA-256")
    record.add_argument("--line", metavar="TEXT", help="the record as text (one log line, without its newline)")
    record.add_argument("--record", type=Path, metavar="FILE", help="the record's bytes")
    _trust_options(p)
    p.add_argument("--origin", help="require this log origin")
    p.add_argument("--seal", type=Path, metavar="FILE", help="the seal JSON of the proof's tree size")
    p.add_argument("--s3", action="store_true", help="fetch the seal from S3 and check its lock and versions")
    _s3_options(p)
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    p.set_defaults(handler=_verify)

    p = subparsers.add_parser(
        "audit", help="audit every seal in an S3 bucket: signatures, timestamps, chain, locks, versions",
        description=textwrap.fill(
            "Walk every seal object under a bucket prefix, every version, and report each problem: signatures by "
            "keys not trusted at the timestamp's time, timestamps that do not verify, breaks and gaps in the "
            "consistency chain, forks, extra versions, delete markers, GOVERNANCE or missing locks, short retention. "
            "Needs only read access to the bucket, the keyring or verifier keys, and the TSA roots."),
        epilog=AUDIT_EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _trust_options(p)
    _s3_options(p)
    retention_option(p)
    s3_requests_option(p)
    p.add_argument("--newest-within", type=float, metavar="HOURS",
                   help="require a seal timestamped at most HOURS before the audit (a stale finding otherwise): "
                        "catches a stopped notary; the notary seals only when it gets entries, so allow for quiet "
                        "periods (default: not checked)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=_audit)


def _trust_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vkey", action="append", default=[], metavar="KEY",
                   help="a trusted verifier key, trusted at any time (repeatable)")
    p.add_argument("--keyring", type=Path, metavar="FILE",
                   help="the keyring file: each key trusted from its activation until its retirement")
    p.add_argument("--tsa-roots", type=Path, metavar="PEM", help="the TSA root certificate(s)")
    p.add_argument("--dev-json", type=Path,
                   help="a dev stack's dev.json: its verifier keys, TSA roots and S3 settings")


def _s3_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bucket", help="the seal bucket")
    p.add_argument("--prefix", help="the log's prefix in the bucket (default: none)")
    p.add_argument("--endpoint-url", help="S3 endpoint, for S3-compatible stores (default: AWS)")
    p.add_argument("--region", help="S3 region (default: boto3's configuration)")


S3_REQUESTS = 16  # requests an audit keeps in flight: two a seal version, and a busy log seals once a second
S3_ATTEMPTS = 5  # an audit retries what S3 refuses for the moment (throttling, 5xx) rather than stop


def s3_requests_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--s3-requests", type=int, default=S3_REQUESTS, metavar="N",
                   help=f"S3 requests kept in flight while reading seals (default: {S3_REQUESTS}); "
                        "lower it if S3 throttles")


def retention_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-retention-days", type=int, metavar="N",
                   help="require each seal locked until at least N days after its timestamp")


def retention(args: argparse.Namespace) -> datetime.timedelta | None:
    """--min-retention-days as a duration (None: any COMPLIANCE lock will do)."""
    if args.min_retention_days is not None and not 0 <= args.min_retention_days <= MAX_RETENTION_DAYS:
        raise CommandError(f"--min-retention-days is {args.min_retention_days}, expected 0 to {MAX_RETENTION_DAYS} "
                           "(100 years, the most s3.retention_days allows)", EXIT_USAGE)
    return None if args.min_retention_days is None else datetime.timedelta(days=args.min_retention_days)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}", EXIT_USAGE) from None


def _dev_info(args: argparse.Namespace) -> dict:
    if args.dev_json is None:
        return {}
    try:
        info = json.loads(_read(args.dev_json))
    except ValueError as exc:
        raise CommandError(f"{args.dev_json} is not JSON: {exc}", EXIT_USAGE) from None
    if not isinstance(info, dict):
        raise CommandError(f"{args.dev_json} is not a dev stack's dev.json (a JSON object)", EXIT_USAGE)
    return info


def _trust(args: argparse.Namespace, dev: dict, origin: str | None = None,
           options: str = "--keyring FILE or --vkey KEY") -> TrustedKeys:
    trust = TrustedKeys(())
    try:
        if args.keyring is not None:
            trust += TrustedKeys.from_keyring(Keyring.parse(_read(args.keyring)))
        trust += TrustedKeys.from_strings(list(args.vkey) + dev.get("vkeys", []))
    except (FormatError, KeyringError) as exc:
        raise CommandError(f"malformed input: {exc}", EXIT_MALFORMED) from None
    if not trust.keys:
        raise CommandError(f"no trusted key: give {options} (from `notary keys export`)", EXIT_USAGE)
    if origin is not None:
        if trust.origin not in (None, origin):
            raise CommandError(f"--origin {origin} is not the keyring's log {trust.origin}", EXIT_USAGE)
        trust = TrustedKeys(trust.keys, origin)
    return trust


def _roots(args: argparse.Namespace, dev: dict, required: bool):
    from anchors.tsa import load_roots

    path = args.tsa_roots or (Path(dev["tsa_roots"]) if "tsa_roots" in dev else None)
    if path is None:
        if required:
            raise CommandError("give --tsa-roots PEM (the TSA's root certificates) to check timestamps", EXIT_USAGE)
        return ()
    try:
        roots = load_roots(path)
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}", EXIT_USAGE) from None
    except ValueError as exc:
        raise CommandError(f"malformed input: {path} holds no PEM certificate ({exc})", EXIT_MALFORMED) from None
    if not roots:
        raise CommandError(f"malformed input: {path} holds no PEM certificate", EXIT_MALFORMED)
    return roots


def reader(args: argparse.Namespace, dev: dict):
    """A SealReader for --bucket/--prefix (or dev.json's), credentials from dev.json or boto3's chain.

    With --s3-requests (audit, evidence) it keeps that many requests in
    flight; close it when done.
    """
    from anchors.s3 import SealReader, make_client

    s3 = dev.get("s3", {})
    bucket = args.bucket or s3.get("bucket")
    if not bucket:
        raise CommandError("give --bucket (and --prefix) for the seals in S3", EXIT_USAGE)
    prefix = args.prefix if args.prefix is not None else s3.get("prefix", "")
    requests = getattr(args, "s3_requests", 1)
    if not 1 <= requests <= 256:
        raise CommandError(f"--s3-requests is {requests}, expected 1 to 256", EXIT_USAGE)
    client = make_client(args.endpoint_url or s3.get("endpoint"), args.region or ("us-east-1" if s3 else None),
                         access_key=s3.get("access_key"), secret_key=s3.get("secret_key"),
                         attempts=S3_ATTEMPTS, connections=max(10, requests))
    return SealReader(client, bucket, prefix, concurrency=requests)


def _verify(args: argparse.Namespace) -> int:
    from notary.audit import fetch_seal
    from notary.tlogproof import parse_tlog_proof
    from notary.verify import verify_record

    dev = _dev_info(args)
    trust = _trust(args, dev, args.origin)
    proof_bytes = _read(args.proof)
    seal = _read(args.seal) if args.seal is not None else None
    if trust.needs_time() and seal is None and not args.s3:
        raise CommandError("keyring keys are trusted only between their activation and retirement, so the seal's "
                           "timestamp must say when the checkpoint was signed: give --seal FILE or --s3", EXIT_USAGE)
    roots = _roots(args, dev, required=seal is not None or args.s3)
    digest = None
    try:
        if args.digest is not None:
            digest = parse_digest_hex(args.digest)
        elif args.line is not None:
            digest = record_digest(os.fsencode(args.line))
        elif args.record is not None:
            digest = record_digest(_read(args.record))
        proof = parse_tlog_proof(proof_bytes)
        stored, bucket = None, ""
        if args.s3:
            s3 = reader(args, dev)
            try:
                stored, bucket = asyncio.run(fetch_seal(s3, proof.signed.checkpoint.size)), s3.bucket
            finally:
                s3.close()
        verdict = verify_record(proof, trust, record_digest=digest, seal=seal, roots=roots, stored=stored, bucket=bucket)
    except FormatError as exc:
        raise CommandError(f"malformed input: {exc}", EXIT_MALFORMED) from None
    return print_verdict(verdict, args.json)


def print_verdict(verdict, as_json: bool) -> int:
    """Print a verdict (anything with ``to_json``, ``render_text`` and ``exit_code``); return its exit status."""
    if as_json:
        print(json.dumps(verdict.to_json(), indent=2))
    else:
        sys.stdout.write(verdict.render_text())
    return verdict.exit_code


_MAX_HOURS = 100 * 366 * 24


def _audit(args: argparse.Namespace) -> int:
    from notary.audit import audit_bucket

    min_retention = retention(args)  # the options first: a usage error needs no keys, roots or bucket
    dev = _dev_info(args)
    trust = _trust(args, dev)
    roots = _roots(args, dev, required=True)
    newest_within = None
    if args.newest_within is not None:
        if not (math.isfinite(args.newest_within) and 0 < args.newest_within <= _MAX_HOURS):
            raise CommandError(f"--newest-within is {args.newest_within}, expected hours > 0 and at most "
                               f"{_MAX_HOURS} (a century)", EXIT_USAGE)
        newest_within = datetime.timedelta(hours=args.newest_within)
    s3 = reader(args, dev)
    try:
        report = asyncio.run(audit_bucket(s3, trust, roots, min_retention=min_retention, newest_within=newest_within))
    finally:
        s3.close()
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        sys.stdout.write(report.render_text())
    if report.findings:
        return EXIT_FINDINGS
    return 0 if report.seals else EXIT_NO_SEALS
