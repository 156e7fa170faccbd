"""``notary evidence`` and ``notary verify-pack``: a period's evidence pack, made from the bucket, checked offline.

``evidence`` audits the whole bucket prefix (``notary.audit``) and writes the
pack (``notary.evidence``); ``verify-pack`` checks a pack with nothing but its
files. Exit codes are in each command's --help and in docs/AUDITORS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
import textwrap
from pathlib import Path

from hsm.errors import KeyringError
from hsm.keyring import Keyring

from notary.cli_verify import (
    EXIT_NO_SEALS, CommandError, _dev_info, _read, _roots, _s3_options, _trust_options, reader, retention, retention_option,
    s3_requests_option,
)
from notary.errors import FormatError
from notary.evidence import (
    EXIT_CHAIN, EXIT_FINDINGS, EXIT_MALFORMED, EXIT_MANIFEST, EXIT_SEAL, PackError, PackNotClosed, Period,
)
from notary.trust import TrustedKeys
from notary.verify import EXIT_USAGE

EXIT_NOT_CLOSED = 11  # notary evidence: no seal timestamped after the period in the bucket yet; no pack written

EVIDENCE_EXIT_CODES = f"""exit status:
  0  the pack is written and verified: no problem on its seals
  1  the bucket could not be read (S3 unreachable or refused access)
  2  usage: missing or conflicting options, unreadable file, --out not empty, a period that has not ended
  3  malformed input: the keyring or TSA roots are not in their format
  {EXIT_FINDINGS}  the pack is written, but its seals have problems (listed, and in the pack's transcript)
  {EXIT_NO_SEALS} no seals: nothing under the prefix; no pack is written; check --bucket and --prefix
  {EXIT_NOT_CLOSED} not closed: no seal timestamped after the period is in the bucket yet, so seals of the period
     still on their way (an S3 outage) could be missing; no pack is written; run again once there is one"""

VERIFY_PACK_EXIT_CODES = f"""exit status:
  0  verified
  2  usage: DIR is not a directory
  {EXIT_MALFORMED}  pack.json, audit/audit.json, the keyring or the TSA roots in the pack cannot be read, or a
     field they must have is missing or of the wrong type
  {EXIT_MANIFEST}  a file differs from SHA256SUMS, is missing, or is not listed; or report.html, transcript.txt or
     keys/key-history.txt differs from the one rebuilt from the pack's data
  {EXIT_SEAL}  a seal is malformed, not signed by a key in service at its time, not timestamped by a trusted TSA,
     or not the seal the audit read (pack.json and audit/audit.json disagree on it, or on the bucket and
     prefix: the audit is of another one)
  {EXIT_CHAIN}  the seals do not chain, or do not cover the period: a seal is missing inside the period, an
     original seal of audit/audit.json in the pack's range is missing, the pack holds no seal, no seal
     timestamped after the period closes it, timestamps go backwards across the period's bounds, or the pack
     was made before the period's end
  {EXIT_FINDINGS}  the pack's audit recorded problems on its seals (locks, versions, forks)
When there are several, the lowest code is returned; every problem is listed, one per line, naming its file."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evidence", help="write a period's evidence pack: seals, key history, audit, transcript, HTML report",
        description=textwrap.fill(
            "Audit every seal under a bucket prefix and write an evidence pack for a period: the seals timestamped "
            "in it (with the seal before and after it), the keyring and a key history table, the TSA roots, the "
            "audit report, a verification transcript, an HTML report with a control mapping, and SHA256SUMS. "
            "Periods are UTC: --from's and --to's dates are both included."),
        epilog=EVIDENCE_EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--from", dest="start", metavar="DATE", help="first day (YYYY-MM-DD) or UTC time (…T…Z)")
    when.add_argument("--previous-quarter", action="store_true",
                      help="the calendar quarter before today's (UTC), for a timer")
    p.add_argument("--to", dest="end", metavar="DATE", help="last day, included (or a UTC time, excluded)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the pack's directory, new or empty; {from} and {to} are replaced by the period's days")
    _trust_options(p)
    _s3_options(p)
    retention_option(p)
    s3_requests_option(p)
    p.set_defaults(handler=_evidence)

    p = subparsers.add_parser(
        "verify-pack", help="re-verify an evidence pack offline: files, signatures, timestamps, chain, period",
        description=textwrap.fill(
            "Check an evidence pack with its own files only: every file against SHA256SUMS, every seal's RFC 3161 "
            "token against the pack's TSA roots and its signatures against the pack's key history, the consistency "
            "chain through the period, and the audit's findings on the pack's seals."),
        epilog=VERIFY_PACK_EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=Path, metavar="DIR", help="the evidence pack's directory")
    p.add_argument("--transcript", action="store_true", help="print every check made, not only the result")
    p.set_defaults(handler=_verify_pack)


def _period(args: argparse.Namespace) -> Period:
    if args.previous_quarter:
        if args.end is not None:
            raise CommandError("--previous-quarter sets the period: do not give --to with it", EXIT_USAGE)
        return Period.previous_quarter(datetime.datetime.now(datetime.UTC).date())
    if args.end is None:
        raise CommandError("give --to DATE with --from DATE", EXIT_USAGE)
    try:
        period = Period.parse(args.start, args.end)
        period.require_ended(datetime.datetime.now(datetime.UTC))
    except FormatError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    return period


def _evidence(args: argparse.Namespace) -> int:
    from notary.audit import audit_bucket
    from notary.evidence import build_pack, check_new, write_pack

    period = _period(args)
    first, last = period.slug()
    out = Path(args.out.replace("{from}", first).replace("{to}", last))
    if args.vkey:
        raise CommandError("an evidence pack carries the key history: give --keyring FILE, not --vkey", EXIT_USAGE)
    if args.keyring is None:
        raise CommandError("give --keyring FILE: the pack holds the key history its signatures are checked with",
                           EXIT_USAGE)
    try:
        check_new(out)
    except PackError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    dev = _dev_info(args)
    keyring = _read(args.keyring)
    try:
        trust = TrustedKeys.from_keyring(Keyring.parse(keyring))
    except KeyringError as exc:
        raise CommandError(f"malformed input: {args.keyring}: {exc}", EXIT_MALFORMED) from None
    roots = _roots(args, dev, required=True)
    roots_path = args.tsa_roots or Path(dev["tsa_roots"])
    s3 = reader(args, dev)
    try:
        report = asyncio.run(audit_bucket(s3, trust, roots, min_retention=retention(args)))
    finally:
        s3.close()
    if not report.seals:
        raise CommandError(f"NO SEALS: nothing under s3://{report.bucket}/{report.prefix}seals/ to put in a pack; "
                           "check --bucket and --prefix (a prefix ends in '/'). No evidence pack written.",
                           EXIT_NO_SEALS)
    try:
        files, verdict = build_pack(report, period, keyring, _read(roots_path),
                                    created_at=datetime.datetime.now(datetime.UTC))
    except PackNotClosed as exc:
        raise CommandError(f"NOT CLOSED: {exc}. No evidence pack written; run again once the notary has published a "
                           "seal timestamped after the period (it seals when it gets entries).",
                           EXIT_NOT_CLOSED) from None
    try:
        write_pack(out, files)
    except PackError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    except OSError as exc:
        raise CommandError(f"cannot write the pack in {out}: {exc.strerror}", EXIT_USAGE) from None
    print(f"{verdict.sentence()}\nEvidence pack written to {out} ({len(files)} files; open {out / 'report.html'}).")
    for problem in verdict.problems:
        print(f"  {problem.line()}")
    return 0 if verdict.ok else EXIT_FINDINGS


def _verify_pack(args: argparse.Namespace) -> int:
    from notary.evidence import read_pack, verify_pack

    try:
        files = read_pack(args.dir)
    except PackError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    except OSError as exc:
        raise CommandError(f"cannot read the pack {args.dir}: {exc.strerror}", EXIT_USAGE) from None
    verdict = verify_pack(files)
    if args.transcript:
        sys.stdout.write(verdict.render_text())
    else:
        print(verdict.sentence())
        for problem in verdict.problems:
            print(f"  {problem.line()}")
    return verdict.exit_code
