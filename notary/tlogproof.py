"""C2SP tlog-proof@v1 (c2sp.org/tlog-proof): one offline-verifiable file per record.

    c2sp.org/tlog-proof@v1
    extra <base64 entry bytes>
    index <decimal>
    <base64 hash>            (inclusion path, leaf sibling first; zero or more)

    <signed checkpoint, verbatim>

The ``extra`` line carries the entry (entry v1: digest and source), so one
file answers "was this record notarized, by whom, in which signed tree". The
spec makes ``extra`` optional; our proofs always carry it and our parser
requires it, because the leaf hash is computed from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from notary import merkle
from notary.checkpoint import SignedCheckpoint, parse_decimal, parse_hash, parse_signed_checkpoint, verify_signed_checkpoint
from notary.entry import Entry, parse_entry
from notary.errors import FormatError, VerificationError
from notary.note import MAX_NOTE_BYTES, VerifierKey, b64decode_strict, b64encode, decode_text

HEADER = "c2sp.org/tlog-proof@v1"
MAX_PATH = 64  # an inclusion path in a tree of fewer than 2**64 leaves
MAX_PROOF_BYTES = MAX_NOTE_BYTES + 8 * 1024


@dataclass(frozen=True)
class TlogProof:
    entry: bytes
    index: int
    path: tuple[bytes, ...]
    signed: SignedCheckpoint

    def format(self) -> str:
        lines = [HEADER, f"extra {b64encode(self.entry)}", f"index {self.index}"]
        lines += [b64encode(h) for h in self.path]
        return "\n".join(lines) + "\n\n" + self.signed.note.format()

    def encode(self) -> bytes:
        return self.format().encode("utf-8")


def parse_tlog_proof(data: bytes | str) -> TlogProof:
    """Parse a proof file; ``FormatError`` names the first thing out of place."""
    data = decode_text(data, "proof", MAX_PROOF_BYTES)
    head, sep, checkpoint = data.partition("\n\n")
    if not sep:
        raise FormatError("proof has no blank line before its checkpoint")
    lines = head.split("\n")
    if lines[0] != HEADER:
        raise FormatError(f"proof does not start with {HEADER!r}")
    if len(lines) < 3 or not lines[1].startswith("extra "):
        raise FormatError("proof has no 'extra' line holding the entry")
    if not lines[2].startswith("index "):
        raise FormatError(f"proof line 3 should be 'index <n>', found {lines[2][:40]!r}")
    entry = b64decode_strict(lines[1][len("extra ") :], "proof extra data")
    parse_entry(entry)  # the extra data must be an entry we can show
    index = parse_decimal(lines[2][len("index ") :], "proof index")
    hash_lines = lines[3:]
    if len(hash_lines) > MAX_PATH:
        raise FormatError(f"proof has {len(hash_lines)} path hashes, more than the limit of {MAX_PATH}")
    path = tuple(parse_hash(line, f"proof path hash {i}") for i, line in enumerate(hash_lines))
    return TlogProof(entry=entry, index=index, path=path, signed=parse_signed_checkpoint(checkpoint))


@dataclass(frozen=True)
class VerifiedRecord:
    """What a verified proof establishes."""

    entry: Entry
    index: int
    origin: str
    tree_size: int
    root_hash: bytes
    signed_by: tuple[VerifierKey, ...]


def verify_tlog_proof(
    data: bytes | str | TlogProof, trusted: Iterable[VerifierKey], origin: str | None = None
) -> VerifiedRecord:
    """Check the checkpoint's signatures, then the entry's inclusion under its root."""
    proof = data if isinstance(data, TlogProof) else parse_tlog_proof(data)
    signed, keys = verify_signed_checkpoint(proof.signed.encode(), trusted, origin)
    cp = signed.checkpoint
    if proof.index >= cp.size:
        raise VerificationError(f"proof index {proof.index} is outside the checkpoint's tree of size {cp.size}")
    merkle.verify_inclusion(merkle.leaf_hash(proof.entry), proof.index, cp.size, proof.path, cp.root_hash)
    return VerifiedRecord(
        entry=parse_entry(proof.entry),
        index=proof.index,
        origin=cp.origin,
        tree_size=cp.size,
        root_hash=cp.root_hash,
        signed_by=tuple(keys),
    )
