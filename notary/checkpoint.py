"""C2SP tlog-checkpoint (c2sp.org/tlog-checkpoint): the signed tree head.

The note text is exactly three lines:

    <origin>
    <tree size, decimal, no leading zeros>
    <base64 root hash>

We neither write nor accept extension lines: nothing of ours uses them and
the spec does not recommend them. The origin is also the signing key's name,
so it obeys the key-name rules (non-empty, no spaces, no '+').
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from notary import merkle
from notary.errors import FormatError, VerificationError
from notary.note import (
    Note,
    NoteSigner,
    VerifierKey,
    b64decode_strict,
    b64encode,
    check_key_name,
    parse_note,
    sign_note,
    verify_note,
)

MAX_TREE_SIZE = (1 << 63) - 1  # what SQLite and every consumer can hold


def parse_decimal(text: str, what: str, maximum: int = MAX_TREE_SIZE) -> int:
    """ASCII decimal with no sign and no leading zeros (but "0")."""
    if not text or len(text) > 19 or not text.isascii() or not text.isdigit():
        raise FormatError(f"{what} {text[:40]!r} is not a decimal number")
    if text != "0" and text[0] == "0":
        raise FormatError(f"{what} {text!r} has a leading zero")
    value = int(text)
    if value > maximum:
        raise FormatError(f"{what} {value} is larger than {maximum}")
    return value


def parse_hash(text: str, what: str) -> bytes:
    raw = b64decode_strict(text, what)
    if len(raw) != merkle.HASH_SIZE:
        raise FormatError(f"{what} is {len(raw)} bytes, expected {merkle.HASH_SIZE}")
    return raw


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root_hash: bytes

    def __post_init__(self) -> None:
        check_key_name(self.origin)
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise FormatError(f"tree size {self.size} is out of range")
        if len(self.root_hash) != merkle.HASH_SIZE:
            raise FormatError(f"root hash is {len(self.root_hash)} bytes, expected {merkle.HASH_SIZE}")

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{b64encode(self.root_hash)}\n"


def parse_checkpoint_text(text: str) -> Checkpoint:
    """Parse the note text of a checkpoint (the three lines, final newline included)."""
    if not text.endswith("\n"):
        raise FormatError("checkpoint text does not end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise FormatError(f"checkpoint has {len(lines)} lines, expected origin, tree size and root hash")
    if len(lines) > 3:
        if "" in lines:  # c2sp.org/tlog-checkpoint: every line is non-empty (an extra blank line, not an extension)
            raise FormatError(f"checkpoint line {lines.index('') + 1} is empty")
        raise FormatError(f"checkpoint has extension lines, which are not accepted: {lines[3][:60]!r}")
    origin, size_text, root_text = lines
    try:
        check_key_name(origin)
    except FormatError as exc:
        raise FormatError(f"checkpoint origin: {exc}") from None
    return Checkpoint(
        origin=origin,
        size=parse_decimal(size_text, "checkpoint tree size"),
        root_hash=parse_hash(root_text, "checkpoint root hash"),
    )


@dataclass(frozen=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    note: Note

    def encode(self) -> bytes:
        return self.note.encode()


def parse_signed_checkpoint(data: bytes | str) -> SignedCheckpoint:
    note = parse_note(data)
    return SignedCheckpoint(checkpoint=parse_checkpoint_text(note.text), note=note)


async def sign_checkpoint(checkpoint: Checkpoint, signers: Sequence[NoteSigner]) -> SignedCheckpoint:
    """Sign with every signer; the key name is the origin."""
    note = await sign_note(checkpoint.text(), checkpoint.origin, signers)
    return SignedCheckpoint(checkpoint=checkpoint, note=note)


def verify_signed_checkpoint(
    data: bytes | str, trusted: Iterable[VerifierKey], origin: str | None = None
) -> tuple[SignedCheckpoint, list[VerifierKey]]:
    """Parse and verify; return the checkpoint and the trusted keys that signed it."""
    signed = parse_signed_checkpoint(data)
    if origin is not None and signed.checkpoint.origin != origin:
        raise VerificationError(f"checkpoint is for log {signed.checkpoint.origin!r}, expected {origin!r}")
    return signed, checkpoint_signers(signed, trusted)


def checkpoint_signers(signed: SignedCheckpoint, trusted: Iterable[VerifierKey]) -> list[VerifierKey]:
    """The trusted keys whose signatures on ``signed`` verify (``verify_note``), counting only keys named as its origin.

    A log's keys carry its origin as their name: a key trusted under another
    name speaks for another log, whatever it signed. (A key serving two logs
    signs a checkpoint of log B; relabelled with log A's name, that signature
    would otherwise count for log A.)
    """
    origin = signed.checkpoint.origin
    return verify_note(signed.note, [k for k in trusted if k.name == origin])
