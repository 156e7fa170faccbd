"""Spans of the log as text: the entry lines of ``GET /v1/entries`` and the log bundle file.

Entry lines (docs/FORMATS.md, "Entry lines"), one per index of ``[start, end)``:

    <index> <digest, 64 hex> <source>      a v1 entry, shown
    <index> leaf <leaf hash, 64 hex>        only its leaf hash: another source's
                                            entry in a filtered span, or a leaf
                                            appended without an entry

Either way the line gives the leaf hash, so a reader holding every line of a
span can check it against a signed root with a range proof (notary/rangeproof.py).

Log bundle (docs/FORMATS.md, "Log bundle"), for offline forensics:

    notary-log-bundle/v1
    range <start> <end>
    source <name>                 (only in a bundle filtered to one source)
    proof <base64 hash>           (the range proof, zero or more lines)
    <blank line>
    <end - start entry lines>
    <blank line>
    <signed checkpoint, verbatim>
"""

from __future__ import annotations

import functools
import hashlib
import string
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from notary import merkle, rangeproof
from notary.checkpoint import SignedCheckpoint, parse_decimal, parse_hash, parse_signed_checkpoint
from notary.entry import DIGEST_SIZE, ENTRY_V1, check_source
from notary.errors import FormatError
from notary.note import b64encode

BUNDLE_HEADER = "notary-log-bundle/v1"
LEAF = "leaf"
MAX_SPAN = 1 << 26  # entries in one bundle: bounds what a reader allocates (about 8 GB of lines)

_sha256 = hashlib.sha256


@dataclass
class Span:
    """The leaves of ``D[start:start+len(leaves)]`` and the v1 entries among them that were shown."""

    start: int
    leaves: list[bytes]
    records: list[tuple[int, bytes, str]]  # (index, digest, source), in index order

    @property
    def end(self) -> int:
        return self.start + len(self.leaves)


def entry_line(index: int, entry: bytes | None, source: bytes | None, leaf_of: Callable[[int], bytes]) -> str:
    """The line for index ``index``: the entry if it is a v1 entry of ``source`` (None: any), else its leaf hash."""
    if (entry is not None and len(entry) >= DIGEST_SIZE + 2 and entry[0] == ENTRY_V1
            and entry[DIGEST_SIZE + 1] == len(entry) - DIGEST_SIZE - 2
            and (source is None or entry[DIGEST_SIZE + 2 :] == source)):
        name = _showable(entry[DIGEST_SIZE + 2 :])
        if name is not None:
            return f"{index} {entry[1 : 1 + DIGEST_SIZE].hex()} {name}"
    leaf = merkle.leaf_hash(entry) if entry is not None else leaf_of(index)
    return f"{index} {LEAF} {leaf.hex()}"


@functools.lru_cache(maxsize=1024)  # a log has few sources; a span repeats them
def _showable(raw: bytes) -> str | None:
    """The source as text, or None if it cannot be shown on a line (the leaf hash then accounts for it)."""
    try:
        name = raw.decode("utf-8")
        check_source(name)
    except (UnicodeDecodeError, FormatError):
        return None
    return name


def parse_entry_lines(lines: Iterable[str], start: int, span: Span | None = None) -> Span:
    """Parse entry lines that must number ``start, start+1, ...``; append to ``span`` if given."""
    span = span if span is not None else Span(start=start, leaves=[], records=[])
    leaves, records = span.leaves, span.records
    encoded: dict[str, bytes] = {}  # source -> len(source) || source, checked once per name
    index = span.end
    for line in lines:
        number, kind, rest = _split(line, index)
        if number != str(index):
            raise FormatError(f"entry line for index {index} starts with {number[:20]!r}")
        if kind == LEAF:
            leaves.append(_hex32(rest, f"leaf hash of entry {index}"))
        else:
            digest = _hex32(kind, f"digest of entry {index}")
            tail = encoded.get(rest)
            if tail is None:
                try:
                    raw = check_source(rest)
                except FormatError as exc:
                    raise FormatError(f"entry {index}: {exc}") from None
                tail = encoded[rest] = bytes([len(raw)]) + raw
            leaves.append(_sha256(b"\x00\x01" + digest + tail).digest())  # SHA-256(0x00 || entry)
            records.append((index, digest, rest))
        index += 1
    return span


def span_lines(span: Span) -> Iterator[str]:
    """The entry lines of a parsed span, as ``parse_entry_lines`` read them."""
    shown = iter(span.records)
    record = next(shown, None)
    for index, leaf in enumerate(span.leaves, span.start):
        if record is not None and record[0] == index:
            yield f"{index} {record[1].hex()} {record[2]}"
            record = next(shown, None)
        else:
            yield f"{index} {LEAF} {leaf.hex()}"


def _split(line: str, index: int) -> tuple[str, str, str]:
    parts = line.split(" ", 2)
    if len(parts) != 3:
        raise FormatError(f"entry line for index {index} is not '<index> <digest> <source>' "
                          f"or '<index> leaf <hash>': {line[:80]!r}")
    return parts[0], parts[1], parts[2]


def _hex32(text: str, what: str) -> bytes:
    # bytes.fromhex alone would skip spaces inside the field and return fewer than 32 bytes.
    if len(text) != 2 * merkle.HASH_SIZE or not all(c in string.hexdigits for c in text):
        raise FormatError(f"{what} is not 64 hex digits: {text[:80]!r}")
    return bytes.fromhex(text)


@dataclass
class Bundle:
    span: Span
    source: str | None  # the bundle shows only this source's entries; None: all
    proof: list[bytes]
    signed: SignedCheckpoint

    def verify_root(self) -> None:
        """The span's leaves and the range proof must lead to the checkpoint's root (signatures: the caller)."""
        cp = self.signed.checkpoint
        rangeproof.verify_range(self.span.start, cp.size, self.span.leaves, self.proof, cp.root_hash)


def format_bundle(start: int, end: int, source: str | None, proof: Iterable[bytes], entry_lines: Iterable[str],
                  checkpoint: str) -> Iterable[str]:
    """The bundle file, in pieces to write one after the other."""
    head = [BUNDLE_HEADER, f"range {start} {end}"]
    if source is not None:
        head.append(f"source {source}")
    head += [f"proof {b64encode(h)}" for h in proof]
    yield "\n".join(head) + "\n\n"
    for line in entry_lines:
        yield line + "\n"
    yield "\n" + checkpoint


def parse_bundle(data: str) -> Bundle:
    """Parse a bundle; ``FormatError`` names the first thing out of place."""
    if not data.startswith(BUNDLE_HEADER + "\n"):
        raise FormatError(f"not a log bundle: it does not start with {BUNDLE_HEADER!r}")
    head, sep, rest = data.partition("\n\n")
    if not sep:
        raise FormatError("bundle has no blank line after its header")
    lines = head.split("\n")
    if len(lines) < 2 or not lines[1].startswith("range "):
        raise FormatError("bundle line 2 should be 'range <start> <end>'")
    start_text, _, end_text = lines[1][len("range ") :].partition(" ")
    start, end = parse_decimal(start_text, "bundle range start"), parse_decimal(end_text, "bundle range end")
    if not start < end or end - start > MAX_SPAN:
        raise FormatError(f"bundle range [{start}, {end}) is empty or longer than {MAX_SPAN} entries")
    source = None
    proof_lines = lines[2:]
    if proof_lines and proof_lines[0].startswith("source "):
        source = proof_lines.pop(0)[len("source ") :]
        check_source(source)
    proof = []
    for i, line in enumerate(proof_lines):
        if not line.startswith("proof "):
            raise FormatError(f"bundle header line {i + 3} should be 'proof <base64 hash>': {line[:60]!r}")
        proof.append(parse_hash(line[len("proof ") :], f"bundle proof hash {i}"))
    body, sep, checkpoint = rest.partition("\n\n")
    if not sep:
        raise FormatError("bundle has no blank line before its signed checkpoint")
    entry_lines = body.split("\n")
    if len(entry_lines) != end - start:
        raise FormatError(f"bundle range [{start}, {end}) needs {end - start} entry lines, it has {len(entry_lines)}")
    span = parse_entry_lines(entry_lines, start)
    return Bundle(span=span, source=source, proof=proof, signed=parse_signed_checkpoint(checkpoint))
