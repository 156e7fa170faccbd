"""Entry v1: what one leaf of the log holds (docs/FORMATS.md, "Entry").

    0x01 || digest (32 bytes) || len(source) (1 byte) || source (UTF-8, 0..255 bytes)

``digest`` is the SHA-256 of the producer's log record; ``source`` is the
authenticated identity of the submitter, so an inclusion proof also proves
who submitted the record. Sources hold no control characters, because
verdicts print them for people.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from notary.errors import FormatError

ENTRY_V1 = 0x01
DIGEST_SIZE = 32
MAX_SOURCE_BYTES = 255
_V1 = bytes([ENTRY_V1])


def check_source(source: str) -> bytes:
    """The UTF-8 bytes of a valid source name, or ``FormatError`` saying why not."""
    try:
        raw = source.encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError("source is not valid UTF-8") from None
    if len(raw) > MAX_SOURCE_BYTES:
        raise FormatError(f"source is {len(raw)} bytes, more than the limit of {MAX_SOURCE_BYTES}")
    for ch in source:
        if ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0:
            raise FormatError(f"source {source!r} contains control character U+{ord(ch):04X}")
    return raw


@dataclass(frozen=True)
class Entry:
    digest: bytes
    source: str

    def __post_init__(self) -> None:
        if not isinstance(self.digest, bytes) or len(self.digest) != DIGEST_SIZE:
            raise FormatError(f"digest must be {DIGEST_SIZE} bytes")
        check_source(self.source)

    def encode(self) -> bytes:
        return encode_entries([self.digest], self.source)[0]


def encode_entries(digests: Iterable[bytes], source: str) -> list[bytes]:
    """The v1 entries of ``digests``, all from ``source``.

    A whole submission at once: the source is checked and encoded once, not
    once a digest (the unix socket's ingest, through ``encode_run``; HTTP
    ingest decodes its hex straight into a run, ``entries_from_hex``).
    """
    raw = check_source(source)
    tail = bytes([len(raw)]) + raw
    entries = []
    for digest in digests:
        if not isinstance(digest, bytes) or len(digest) != DIGEST_SIZE:
            raise FormatError(f"digest must be {DIGEST_SIZE} bytes")
        entries.append(_V1 + digest + tail)
    return entries


@dataclass(frozen=True, slots=True)
class EntryRun:
    """``count`` entries of ``width`` bytes each, back to back in ``data``: how a submission travels to the store.

    The entries of one submission share their source, so they all have the
    same length; one bytes object instead of a list of them is cheaper to
    build, to send to the store's writer process and to insert.
    """

    data: bytes
    width: int  # bytes an entry (the store takes any entries, even empty ones)
    count: int

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes) or self.width < 0 or self.count < 0 or len(self.data) != self.width * self.count:
            raise FormatError(f"{self.count} entries of {self.width} bytes each cannot be {len(self.data)} bytes")

    def __iter__(self) -> Iterator[bytes]:
        data, width = self.data, self.width
        return (data[i * width : (i + 1) * width] for i in range(self.count))

    @staticmethod
    def group(entries: Iterable[bytes]) -> list[EntryRun]:
        """``entries`` as runs of consecutive entries of equal length, in order."""
        runs = []
        for width, same in itertools.groupby(entries, len):
            chunk = list(same)
            runs.append(EntryRun(b"".join(chunk), width, len(chunk)))
        return runs

    @staticmethod
    def joined(runs: Iterable[EntryRun]) -> list[EntryRun]:
        """``runs`` with neighbours of equal width made one (a group commit of one source's submissions)."""
        out = []
        for width, same in itertools.groupby(runs, lambda run: run.width):
            chunk = list(same)
            out.append(chunk[0] if len(chunk) == 1 else
                       EntryRun(b"".join(r.data for r in chunk), width, sum(r.count for r in chunk)))
        return out


def encode_run(digests: Iterable[bytes], source: str) -> EntryRun:
    """``encode_entries`` as one run."""
    entries = encode_entries(digests, source)
    return EntryRun(b"".join(entries), len(entries[0]) if entries else 0, len(entries))


def entries_from_hex(items: Sequence[Any], source: str) -> EntryRun:
    """The v1 entries of ``items``, each a digest as 64 hex digits (either case), all from ``source``.

    The ingest hot path: one ``bytes.fromhex`` over the hex of the whole run
    (each digest joined to the next by the hex of the entry's tail and the
    next entry's version byte) instead of one parse and one concatenation a
    digest. A ``FormatError`` begins with ``[i]`` naming the first bad item
    (or ``:`` when none is to blame), for the caller to put its name before.
    """
    raw = check_source(source)
    tail = bytes([len(raw)]) + raw
    width = 1 + DIGEST_SIZE + len(tail)
    try:
        # Every item a text of exactly 64 characters (join refuses non-texts);
        # then the run has exactly len(items) * width bytes only if every
        # character was a hex digit: fromhex skips whitespace, so an item with
        # any would leave the run short, and none can be long.
        if items and set(map(len, items)) == {2 * DIGEST_SIZE}:
            data = bytes.fromhex(_V1.hex() + (tail + _V1).hex().join(items) + tail.hex())
            if len(data) == width * len(items):
                return EntryRun(data, width, len(items))
    except (TypeError, ValueError):
        pass
    parse_digest_list(items)  # names the first item that is not a digest
    raise FormatError(": no digests" if not items else ": not 64 hex digits each")


def parse_entry(data: bytes) -> Entry:
    """Decode an entry; any byte out of place is a ``FormatError``."""
    if len(data) < 1 + DIGEST_SIZE + 1:
        raise FormatError(f"entry is {len(data)} bytes, shorter than the minimum of {DIGEST_SIZE + 2}")
    if data[0] != ENTRY_V1:
        raise FormatError(f"entry version is 0x{data[0]:02x}, only 0x01 is defined")
    length = data[1 + DIGEST_SIZE]
    source = data[2 + DIGEST_SIZE :]
    if len(source) != length:
        raise FormatError(f"entry declares a source of {length} bytes but holds {len(source)}")
    try:
        text = source.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("entry source is not valid UTF-8") from None
    return Entry(digest=bytes(data[1 : 1 + DIGEST_SIZE]), source=text)


def parse_digest_hex(text: str) -> bytes:
    """A SHA-256 digest written as 64 hex digits (either case)."""
    # bytes.fromhex also skips ASCII whitespace between pairs; of a text of
    # 64 characters it makes 32 bytes only if all 64 are hex digits.
    try:
        digest = bytes.fromhex(text) if len(text) == 2 * DIGEST_SIZE else b""
    except ValueError:
        digest = b""
    if len(digest) != DIGEST_SIZE:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise FormatError(f"digest {shown!r} is not 64 hex digits")
    return digest


def parse_digest_list(items: Sequence[Any]) -> list[bytes]:
    """Digests written as 64 hex digits each; a ``FormatError`` beginning ``[i]`` names the first that is not."""
    digests = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise FormatError(f"[{i}]: digest {item!r} is not a string")
        try:
            digests.append(parse_digest_hex(item))
        except FormatError as exc:
            raise FormatError(f"[{i}]: {exc}") from None
    return digests
