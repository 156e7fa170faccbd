"""``notary forward-seals``, ``notary chain-proof`` and ``notary verify-chain``: notaries notarized by a central one.

The library is ``notary.hierarchy``; exit codes of ``verify-chain`` are those
of ``notary verify`` for the failing link (docs/AUDITORS.md).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from notary.cli_verify import CommandError, _read, _roots, _trust, print_verdict
from notary.client import HttpClient, record_digest
from notary.entry import parse_digest_hex
from notary.errors import FormatError
from notary.verify import EXIT_MALFORMED, EXIT_USAGE


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "forward-seals", help="submit a host notary's anchored seals (their SHA-256) to a central notary",
        description="Walk the host's anchored seals from the latest back to the last one the central notary "
        "holds from --source, and submit the SHA-256 of each missing seal JSON to the central notary, oldest "
        "first. Stateless: run it from a timer as often as seals should reach the central log.")
    p.add_argument("--from", dest="host", required=True, metavar="URL", help="the host notary")
    p.add_argument("--to", dest="central", required=True, metavar="URL", help="the central notary")
    p.add_argument("--token-file", type=Path, required=True,
                   help="file holding the host's bearer token at the central notary")
    p.add_argument("--source", required=True, help="the source name that token has at the central notary")
    p.set_defaults(handler=_forward)

    p = subparsers.add_parser(
        "chain-proof", help="fetch the proof chain of a host record up to the central log",
        description="Write a notary-chain/v1 file: the record's proof in the host log, the host seal that "
        "covers it, that seal's proof in the central log and the central seal.")
    p.add_argument("--host", required=True, metavar="URL", help="the host notary")
    p.add_argument("--central", required=True, metavar="URL", help="the central notary")
    p.add_argument("--host-source", required=True, help="the host's source name at the central notary")
    _record_options(p, required=True)
    p.add_argument("-o", "--output", type=Path, required=True, help="the chain file to write")
    p.set_defaults(handler=_chain_proof)

    p = subparsers.add_parser(
        "verify-chain", help="verify a record's proof chain from a host log to the central log, offline",
        description="Verify each link of a notary-chain/v1 file with public material only: the record in the "
        "host log, the host checkpoint's signature and timestamp, SHA-256 of the host seal in the central log, "
        "the central checkpoint's signature and timestamp.")
    p.add_argument("chain", type=Path, help="the chain file (notary chain-proof)")
    _record_options(p, required=False)
    for level in ("host", "central"):
        p.add_argument(f"--{level}-vkey", action="append", default=[], metavar="KEY",
                       help=f"a verifier key of the {level} log, trusted at any time (repeatable)")
        p.add_argument(f"--{level}-keyring", type=Path, metavar="FILE", help=f"the {level} log's keyring file")
    p.add_argument("--tsa-roots", type=Path, required=True, metavar="PEM", help="the TSA root certificate(s)")
    p.add_argument("--host-source", help="require the central entry to name this source (the host)")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    p.set_defaults(handler=_verify_chain)


def _record_options(p: argparse.ArgumentParser, required: bool) -> None:
    record = p.add_mutually_exclusive_group(required=required)
    record.add_argument("--digest", metavar="HEX", help="the record's SHA-256")
    record.add_argument("--line", metavar="TEXT", help="the record as text (one log line, without its newline)")


def _digest(args: argparse.Namespace) -> bytes | None:
    try:
        if args.digest is not None:
            return parse_digest_hex(args.digest)
    except FormatError as exc:
        raise CommandError(f"--digest: {exc}", EXIT_USAGE) from None
    return None if args.line is None else record_digest(os.fsencode(args.line))


def _forward(args: argparse.Namespace) -> int:
    from notary.hierarchy import forward_seals

    token = _read(args.token_file).decode("utf-8").strip()
    sent = forward_seals(HttpClient(args.host), HttpClient(args.central, token), args.source)
    for size, index in sent:
        print(f"seal of tree size {size} -> central index {index}")
    print(f"{len(sent)} seal(s) forwarded from {args.host} to {args.central} as {args.source!r}")
    return 0


def _chain_proof(args: argparse.Namespace) -> int:
    from notary.hierarchy import chain_proof

    chain = chain_proof(HttpClient(args.host), HttpClient(args.central), _digest(args), args.host_source)
    args.output.write_bytes(chain.encode())
    print(f"wrote {args.output}")
    return 0


def _verify_chain(args: argparse.Namespace) -> int:
    from notary.hierarchy import parse_chain, verify_chain

    trust = {level: _trust(argparse.Namespace(keyring=getattr(args, f"{level}_keyring"),
                                              vkey=getattr(args, f"{level}_vkey")), {},
                           options=f"--{level}-keyring FILE or --{level}-vkey KEY")
             for level in ("host", "central")}
    roots = _roots(args, {}, required=True)
    try:
        chain = parse_chain(_read(args.chain))
        verdict = verify_chain(chain, trust["host"], trust["central"], roots, record_digest=_digest(args),
                               host_source=args.host_source)
    except FormatError as exc:
        raise CommandError(f"malformed input: {exc}", EXIT_MALFORMED) from None
    return print_verdict(verdict, args.json)
