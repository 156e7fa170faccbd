"""``notary verify-log`` and ``notary export``: log-file forensics against a daemon or a log bundle.

Both views of the log verify what they hand to the analysis (notary/forensics.py):
the checkpoint's signatures by a trusted key, then every leaf of the span
against the checkpoint's root with a range proof (notary/rangeproof.py). A
daemon or a bundle that omits, adds, changes or reorders an entry fails there.

Exit status of ``verify-log``: the codes of ``notary verify`` and ``notary audit``
where the meaning is the same (``VERIFY_LOG_EXIT_CODES`` below, docs/OPERATIONS.md,
"Log-file forensics").
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from notary import rangeproof
from notary.checkpoint import SignedCheckpoint, parse_signed_checkpoint
from notary.cli_verify import EXIT_FINDINGS, CommandError
from notary.client import ClientError, HttpClient, line_digests
from notary.entry import check_source
from notary.errors import FormatError, VerificationError
from notary.forensics import analyse
from notary.logbundle import MAX_SPAN, Span, format_bundle, parse_bundle, parse_entry_lines, span_lines
from notary.note import b64decode_strict
from notary.trust import SignatureError, TrustedKeys
from notary.verify import EXIT_ERROR, EXIT_INCLUSION, EXIT_MALFORMED, EXIT_OK, EXIT_SIGNATURE, EXIT_USAGE

EXIT_TAMPERED = EXIT_FINDINGS  # as notary audit: at least one finding, each listed
EXIT_INCOMPLETE = 10  # no tampering found, but some lines are not sealed yet or outside the bundle's range

VERIFY_LOG_EXIT_CODES = f"""exit status:
  {EXIT_OK}  clean: every line is notarized, in order, and no entry of the span is missing
  {EXIT_ERROR}  the check could not run (the notary cannot be reached or refused a request): no verdict
  {EXIT_USAGE}  usage: missing or conflicting options, unreadable or empty file, bundle of another source
  {EXIT_MALFORMED}  malformed input: the bundle or a key is not in its format
  {EXIT_INCLUSION}  inclusion: the span's entries do not lead to the checkpoint's root (range proof)
  {EXIT_SIGNATURE}  signature: the checkpoint is not signed by a trusted key
  {EXIT_TAMPERED}  tampered: a line altered, inserted, moved or swapped, or an entry deleted; each is listed
  {EXIT_INCOMPLETE} incomplete: no tampering found, but some lines are not judged: not sealed yet (run again
      after the next seal), or with --bundle, above or below the file's lines found in the bundle and not
      among its entries (check them with --url, or a bundle of a wider range)"""
ENTRIES_PER_REQUEST = 1 << 16  # the daemon's MAX_ENTRIES_PER_REQUEST
LOOKUPS_PER_REQUEST = 10_000  # the daemon's default limits.max_request_digests
FETCH_THREADS = 4
SHOW_FINDINGS = 200  # findings printed for people; --json has them all
EDGE_WINDOW = 1 << 16  # entries looked at past each end of the span for more of the source's records


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "verify-log", help="check a log file line by line against the log: altered, deleted, inserted, moved lines",
        description="Hash each line of FILE (one line = one record), find the entries SOURCE notarized over the "
        "file's span and report per line whether it is notarized, and what was altered, deleted, inserted or "
        "reordered.", epilog=VERIFY_LOG_EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path, metavar="FILE", help="the log file")
    p.add_argument("--source", required=True, help="the source (producer name) that notarized the file's lines")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--url", help="ask this notary (default with --dev-json: its URL)")
    where.add_argument("--bundle", type=Path, help="use a log bundle from `notary export` (offline)")
    _key_options(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON (every line's status)")
    p.set_defaults(handler=_verify_log)

    p = subparsers.add_parser(
        "export", help="write a log bundle: the entries of a span with the proof and checkpoint that cover them",
        description="Write the entries [FROM, TO) with the latest anchored checkpoint and the range proof that "
        "ties them to it, for `notary verify-log --bundle` offline (docs/FORMATS.md, \"Log bundle\").")
    p.add_argument("--from", dest="start", type=int, required=True, metavar="FROM", help="first index")
    p.add_argument("--to", dest="end", type=int, required=True, metavar="TO", help="index after the last")
    p.add_argument("--source", help="show only this source's entries (the others as bare leaf hashes); verify-log "
                                    "refuses such a bundle where other sources' entries are among the file's")
    p.add_argument("-o", "--output", type=Path, required=True, help="the bundle file to write")
    p.add_argument("--url", default=os.environ.get("NOTARY_URL", "http://127.0.0.1:8640"),
                   help="the notary's HTTP address (default: $NOTARY_URL or %(default)s)")
    p.add_argument("--dev-json", type=Path, help="take the URL from a dev stack's dev.json")
    p.set_defaults(handler=_export)


def _key_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vkey", action="append", default=[], metavar="KEY", help="a trusted verifier key (repeatable)")
    p.add_argument("--dev-json", type=Path, help="take the verifier keys (and URL) from a dev stack's dev.json")


def _dev_info(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot read dev stack file {path}: {exc}", EXIT_USAGE) from None
    if not isinstance(info, dict):
        raise CommandError(f"{path} is not a dev stack's dev.json (a JSON object)", EXIT_USAGE)
    return info


# -- the two views of the log --------------------------------------------------


class DaemonIndex:
    """A source's entries as a daemon shows them, verified against its latest anchored checkpoint."""

    def __init__(self, client: HttpClient, source: str, trusted: TrustedKeys):
        self.client, self.source = client, source
        first = client.range_proof(0, 1)  # the latest anchored checkpoint, pinned for the whole run
        self.checkpoint_text, _ = _range_answer(first)
        self.signed, self.signed_by = _verify_checkpoint(self.checkpoint_text, trusted)
        self.size = self.signed.checkpoint.size
        self.covers = (0, None)  # lookups search the whole log, entries not yet sealed included

    def lookup(self, digests: Sequence[bytes]) -> dict[bytes, list[int]]:
        found: dict[bytes, list[int]] = {}
        for start in range(0, len(digests), LOOKUPS_PER_REQUEST):
            chunk = digests[start : start + LOOKUPS_PER_REQUEST]
            answer = self.client.lookup(chunk, self.source).get("indices")
            if not isinstance(answer, list) or len(answer) != len(chunk):
                count = len(answer) if isinstance(answer, list) else "no list of"
                raise ClientError(f"lookup: the notary answered {count} results for {len(chunk)} digests")
            for digest, hits in zip(chunk, answer):
                if not isinstance(hits, list) or not all(type(i) is int and i >= 0 for i in hits):
                    raise ClientError(f"lookup: the notary's answer for digest {digest.hex()} is not a list of "
                                      f"indices: {str(hits)[:80]}")
            found.update(zip(chunk, answer))
        return found

    def entries(self, start: int, end: int) -> list[tuple[int, bytes]]:
        span = self._verified(start, end)
        _all_shown(_leaf_only(span), start, end, "the notary")
        return [(i, d) for i, d, s in span.records if s == self.source]

    def edge_records(self, start: int, end: int) -> list[tuple[int, bytes]] | None:
        """As ``entries``, outside the span: None when an entry is shown by its leaf hash alone (whose, unknown)."""
        span = self._verified(start, end)
        return None if _leaf_only(span) else [(i, d) for i, d, s in span.records if s == self.source]

    def _verified(self, start: int, end: int) -> Span:
        # Every entry of the range, not only the source's: one shown by its leaf hash alone could be the source's.
        checkpoint, proof, span = _fetch(self.client, start, end, self.size, None)
        if checkpoint != self.checkpoint_text:
            raise CommandError(f"the notary proved [{start}, {end}) against another checkpoint than the one pinned "
                               f"at the start (tree size {self.size})", EXIT_INCLUSION)
        _verify_span(span, proof, self.signed)
        return span


def _leaf_only(span: Span) -> list[int]:
    """The indices of ``span`` shown only by their leaf hash, in order."""
    shown = {i for i, _, _ in span.records}
    return [i for i in range(span.start, span.end) if i not in shown]


def _all_shown(leaf_only: Sequence[int], start: int, end: int, who: str, filtered: str | None = None) -> None:
    """Refuse a range of the analysis that holds an entry shown only by its leaf hash.

    A leaf hash does not say whose entry it is, so such an entry could be one
    of the file's lines, deleted, and the file would still look whole. A
    notary shows every entry with its digest and source unless asked for one
    source's; a leaf line there was hidden.
    """
    k = bisect.bisect_left(leaf_only, start)
    if k == len(leaf_only) or leaf_only[k] >= end:
        return
    hidden = leaf_only[k]
    why = (f"the bundle is filtered to source {filtered!r}, so the other sources' entries are leaf hashes in it and "
           "it cannot show that none of this file's lines was deleted: export the span without --source"
           if filtered is not None else f"{who} shows every entry with its digest and source, so this one was hidden")
    raise CommandError(f"entry {hidden} is shown only by its leaf hash, so nothing shows that it is not one of this "
                       f"file's lines, deleted: {why}", EXIT_INCLUSION)


def _fetch(client: HttpClient, start: int, end: int, size: int | None,
           source: str | None) -> tuple[str, list[bytes], Span]:
    """The checkpoint, range proof and entries of [start, end) as the daemon sends them (not verified yet)."""
    checkpoint, proof = _range_answer(client.range_proof(start, end, size))
    chunks = range(start, end, ENTRIES_PER_REQUEST)
    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        texts = pool.map(lambda a: client.entries(a, min(a + ENTRIES_PER_REQUEST, end), source), chunks)
        span = Span(start=start, leaves=[], records=[])
        for text in texts:
            lines = text.split("\n")  # not splitlines(): a source name may hold U+2028 and the like
            if lines[-1] == "":
                lines.pop()
            parse_entry_lines(lines, start, span)
    if span.end != end:
        raise CommandError(f"the notary sent {span.end - start} entries for [{start}, {end})", EXIT_INCLUSION)
    return checkpoint, proof, span


def _range_answer(answer: dict) -> tuple[str, list[bytes]]:
    """The checkpoint text and proof hashes of a ``GET /v1/range-proof`` answer, or a ClientError saying what is amiss."""
    checkpoint, proof = answer.get("checkpoint"), answer.get("proof", [])
    if not isinstance(checkpoint, str):
        raise ClientError(f"range proof: the notary's answer has no checkpoint text: {str(checkpoint)[:80]}")
    if not isinstance(proof, list) or not all(isinstance(h, str) for h in proof):
        raise ClientError(f"range proof: the notary's answer has no list of base64 hashes: {str(proof)[:80]}")
    return checkpoint, [b64decode_strict(h, f"range proof hash {i}") for i, h in enumerate(proof)]


class BundleIndex:
    """A source's entries in a log bundle, verified on loading."""

    def __init__(self, path: Path, source: str, trusted: TrustedKeys):
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise CommandError(f"cannot read bundle {path}: {exc.strerror or exc}", EXIT_USAGE) from None
        except UnicodeDecodeError:
            raise CommandError(f"malformed input: bundle {path} is not UTF-8 text", EXIT_MALFORMED) from None
        try:
            bundle = parse_bundle(text)
        except FormatError as exc:
            raise CommandError(f"malformed input: bundle {path}: {exc}", EXIT_MALFORMED) from None
        if bundle.source is not None and bundle.source != source:
            raise CommandError(f"bundle {path} shows only the entries of source {bundle.source!r}, not {source!r}",
                               EXIT_USAGE)
        self.signed, self.signed_by = _verify_checkpoint(bundle.signed.note.format(), trusted)
        self.size = self.signed.checkpoint.size
        _verify_span(bundle.span, bundle.proof, self.signed)
        self.range = (bundle.span.start, bundle.span.end)
        self.covers = self.range  # a line found nowhere in it may be notarized before or after it
        self._filtered = bundle.source
        self._leaf_only = _leaf_only(bundle.span)
        self._records = [(i, d) for i, d, s in bundle.span.records if s == source]
        self._keys = [i for i, _ in self._records]
        self._by_digest: dict[bytes, list[int]] = {}
        for i, d in self._records:
            self._by_digest.setdefault(d, []).append(i)

    def lookup(self, digests: Sequence[bytes]) -> dict[bytes, list[int]]:
        return {d: self._by_digest.get(d, []) for d in digests}

    def entries(self, start: int, end: int) -> list[tuple[int, bytes]]:
        _all_shown(self._leaf_only, start, end, "a bundle written by notary export", self._filtered)
        return self._records[bisect.bisect_left(self._keys, start) : bisect.bisect_left(self._keys, end)]

    def source_entries(self) -> list[tuple[int, bytes]]:
        return list(self._records)

    def edge_records(self, start: int, end: int) -> list[tuple[int, bytes]] | None:
        """As ``entries``, outside the span: None when an entry is shown by its leaf hash alone (whose, unknown)."""
        start, end = max(start, self.range[0]), min(end, self.range[1])
        k = bisect.bisect_left(self._leaf_only, start)
        if k < len(self._leaf_only) and self._leaf_only[k] < end:
            return None
        return self._records[bisect.bisect_left(self._keys, start) : bisect.bisect_left(self._keys, end)]


def _verify_checkpoint(text: str, trusted: TrustedKeys) -> tuple[SignedCheckpoint, list[str]]:
    """The checkpoint and the names of the trusted keys that signed it (keys given as strings: no time needed)."""
    try:
        signed, keys = trusted.verify_checkpoint(text, None)
    except SignatureError as exc:
        raise CommandError(f"the checkpoint does not verify: {exc}", EXIT_SIGNATURE) from None
    except FormatError as exc:
        raise CommandError(f"malformed input: the checkpoint: {exc}", EXIT_MALFORMED) from None
    return signed, [k.name() for k in keys]


def _verify_span(span: Span, proof: list[bytes], signed: SignedCheckpoint) -> None:
    cp = signed.checkpoint
    try:
        rangeproof.verify_range(span.start, cp.size, span.leaves, proof, cp.root_hash)
    except VerificationError as exc:
        raise CommandError(f"entries [{span.start}, {span.end}) are not the ones the signed checkpoint "
                           f"of size {cp.size} commits to: {exc}", EXIT_INCLUSION) from None


# -- commands ----------------------------------------------------------------


def _trusted(args: argparse.Namespace, info: dict) -> TrustedKeys:
    keys = list(args.vkey) + list(info.get("vkeys", []))
    if not keys:
        raise CommandError("no trusted verifier key: give --vkey KEY (from `notary keys export`) or --dev-json",
                           EXIT_USAGE)
    try:
        return TrustedKeys.from_strings(keys)
    except FormatError as exc:
        raise CommandError(f"malformed input: {exc}", EXIT_MALFORMED) from None


def _verify_log(args: argparse.Namespace) -> int:
    info = _dev_info(args.dev_json)
    trusted = _trusted(args, info)
    _check_source_option(args.source)
    try:
        digests = [d for _, d in line_digests(args.file)]
    except OSError as exc:
        raise CommandError(f"cannot read log file {args.file}: {exc.strerror or exc}", EXIT_USAGE) from None
    if not digests:
        raise CommandError(f"log file {args.file} is empty: there is no line to verify", EXIT_USAGE)
    if args.bundle is not None:
        index = BundleIndex(args.bundle, args.source, trusted)
        against = f"bundle {args.bundle} (entries [{index.range[0]}, {index.range[1]}))"
    else:
        url = args.url or info.get("url")
        if url is None:
            raise CommandError("give --url URL (a notary) or --bundle FILE (from `notary export`)", EXIT_USAGE)
        index = DaemonIndex(HttpClient(url), args.source, trusted)
        against = f"notary {url}"
    report = analyse(digests, index)
    edges = None if report.span is None else _edges(index, report.span)
    cp = index.signed.checkpoint
    signers = index.signed_by
    if args.json:
        out = {
            "file": str(args.file), "source": args.source, "against": against, "lines": len(digests),
            "checkpoint": {"origin": cp.origin, "tree_size": cp.size, "root_hash": cp.root_hash.hex(),
                           "signed_by": signers},
            "span": None if report.span is None else {"from": report.span[0], "to": report.span[1]},
            "edges": edges,
            "result": _result(report), "counts": report.counts(),
            "findings": [f.to_json() for f in report.findings],
            "records": [{"line": n, "status": s, "index": i}
                        for n, (s, i) in enumerate(zip(report.status, report.index), 1)],
        }
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        _print_report(args, report, against, cp, signers, len(digests), edges)
    return EXIT_TAMPERED if report.tampered else EXIT_INCOMPLETE if report.pending or report.uncovered else EXIT_OK


def _edges(index, span: tuple[int, int]) -> dict:
    """The source's records just outside the span: the last before it and the first after it, verified.

    The span runs from the file's first to its last notarized line, so lines
    cut from either end of the file leave no trace inside it; they are the
    source's records next to it. So are a previous or a later file's, which
    is why this is reported, not judged. Looked for within EDGE_WINDOW
    entries of each end (and the bundle's range); None: none there;
    "unknown": an entry there is shown by its leaf hash alone, and could be
    one of the source's.
    """
    low, high = max(0, span[0] - EDGE_WINDOW), min(index.size, span[1] + EDGE_WINDOW)
    if isinstance(index, BundleIndex):
        low, high = max(low, index.range[0]), min(high, index.range[1])
    found: dict = {"looked_in": {"from": low, "to": high}}
    for side, start, end in (("before", low, span[0]), ("after", span[1], high)):
        records = index.edge_records(start, end) if start < end else []
        if records is None:  # leaf hashes in the window: whose they are is not known
            found[side] = "unknown"
        else:
            found[side] = None if not records else records[-1][0] if side == "before" else records[0][0]
    return found


def _check_source_option(source: str) -> None:
    try:
        check_source(source)
    except FormatError as exc:
        raise CommandError(f"--source: {exc}", EXIT_USAGE) from None


def _result(report) -> str:
    return ("tampered" if report.tampered else "pending" if report.pending else "uncovered" if report.uncovered
            else "clean")


def _print_report(args, report, against: str, cp, signers: list[str], lines: int, edges: dict | None) -> None:
    span = f"entries [{report.span[0]}, {report.span[1]})" if report.span is not None else \
        "none (no line of the file is among the bundle's entries)" if report.uncovered else \
        "none (no line of the file is notarized)"
    print(f"{args.file}: {lines} lines, source {args.source!r}, checked against {against}")
    print(f"checkpoint: log {cp.origin}, tree size {cp.size}, signed by {', '.join(signers)}; span: {span}")
    for f in report.findings[:SHOW_FINDINGS]:
        print(f"  {f.message}")
    if len(report.findings) > SHOW_FINDINGS:
        print(f"  ... and {len(report.findings) - SHOW_FINDINGS} more findings (--json lists them all)")
    c = report.counts()
    tally = (f"{c['notarized']} lines notarized in order, {c['reordered']} reordered, {c['altered']} altered, "
             f"{c['inserted']} inserted, {c['deleted']} entries deleted, {c['pending']} not sealed yet")
    if c["uncovered"]:
        tally += f", {c['uncovered']} not judged (outside the bundle's range)"
    verdict = {"tampered": "TAMPERED", "pending": "INCOMPLETE", "uncovered": "INCOMPLETE", "clean": "CLEAN"}[
        _result(report)]
    if edges is not None:
        if isinstance(edges["after"], int):
            print(f"  the source notarized more records after the file's last notarized line (the next is entry "
                  f"{edges['after']}): lines cut from the end of the file, or a later file's records")
        if isinstance(edges["before"], int):
            print(f"  the source notarized records before the file's first notarized line (the last is entry "
                  f"{edges['before']}): lines cut from the start of the file, or an earlier file's records")
        unknown = [side for side in ("before", "after") if edges[side] == "unknown"]
        if unknown:
            print(f"  whether the source notarized records {' or '.join(unknown)} the file's span is not known: "
                  "entries there are shown by their leaf hashes alone")
    if report.span is None and lines and report.uncovered:
        print(f"  no line of the file is among the bundle's entries of source {args.source!r}: the file's records "
              "lie outside its range, or the file was submitted under another source (check --source)")
    elif report.span is None and lines:
        # Every line "inserted" is also what a wrong --source looks like: say so before the verdict.
        print(f"  no line of the file is notarized under source {args.source!r} up to tree size {cp.size}: either "
              "every line was replaced or added, or the file was submitted under another source (check --source)")
    print(f"{verdict}: {tally}")


def _export(args: argparse.Namespace) -> int:
    url = _dev_info(args.dev_json).get("url", args.url) if args.dev_json is not None else args.url
    if not 0 <= args.start < args.end:
        raise CommandError(f"--from {args.start} --to {args.end}: need 0 <= FROM < TO", EXIT_USAGE)
    if args.end - args.start > MAX_SPAN:
        raise CommandError(f"--from {args.start} --to {args.end}: a bundle holds at most {MAX_SPAN} entries "
                           "(what notary verify-log reads); export the range in parts", EXIT_USAGE)
    if args.source is not None:
        _check_source_option(args.source)
    checkpoint, proof, span = _fetch(HttpClient(url), args.start, args.end, None, args.source)
    # The daemon is not trusted here either: the entries are checked against the root before they are
    # written, so that a bad export shows now rather than at the auditor's (who also checks the signatures).
    signed = parse_signed_checkpoint(checkpoint)
    _verify_span(span, proof, signed)
    tmp = args.output.with_name(args.output.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for piece in format_bundle(args.start, args.end, args.source, proof, span_lines(span), checkpoint):
                f.write(piece)
        os.replace(tmp, args.output)
    except OSError as exc:
        raise CommandError(f"cannot write bundle {args.output}: {exc.strerror or exc}", EXIT_USAGE) from None
    print(f"wrote {args.output}: entries [{args.start}, {args.end}) of log "
          f"{signed.checkpoint.origin} under its checkpoint of size {signed.checkpoint.size}")
    return 0
