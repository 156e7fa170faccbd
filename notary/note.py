"""C2SP signed notes (c2sp.org/signed-note): parse, format, sign, verify.

A note is UTF-8 text ending in a newline, a blank line, then one or more
signature lines ``— <key name> base64(key ID || signature)``. We verify two
signature types with the ``cryptography`` package:

- ``0x01`` Ed25519 over the note text; key ID = SHA-256(name || 0x0A || 0x01 || 32-byte key)[:4];
- ``0x02`` ECDSA P-256 with SHA-256 over the note text, ASN.1 DER signature;
  key ID = SHA-256(SPKI DER)[:4] (the transparency-dev witness convention
  the spec assigns to this type).

A verifier key string is ``<name>+<hex key ID>+base64(type || public key)``,
the public key being the raw 32 bytes (Ed25519) or the SPKI DER (ECDSA).

Parsing is strict and all-or-nothing: the only exception it raises is
``FormatError``, and a note is returned only when the whole input is well formed.
Vectors: tests/vectors/notes.json, cross-checked with tlog-scales in
tests/test_note.py.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from notary.errors import FormatError, VerificationError

SIG_ED25519 = 0x01
SIG_ECDSA = 0x02
SUPPORTED_TYPES = (SIG_ED25519, SIG_ECDSA)

# Limits enforced where input is read, so a hostile note cannot make us spend
# unbounded time or memory. The spec requires accepting at least 16 signatures.
MAX_NOTE_BYTES = 64 * 1024
MAX_SIGNATURES = 64

_EM_DASH = "\u2014"


def b64decode_strict(text: str, what: str) -> bytes:
    """Standard base64 (RFC 4648 §4) that must round-trip exactly.

    Rejects characters outside the alphabet, missing padding and non-zero
    trailing bits, so that every value has exactly one accepted encoding.
    """
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise FormatError(f"{what} is not valid base64: {exc}") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise FormatError(f"{what} is not canonical base64")
    return raw


def b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def check_key_name(name: str) -> None:
    """Key names are non-empty and hold no Unicode space and no '+'."""
    if not name:
        raise FormatError("key name is empty")
    if "+" in name or any(ch.isspace() for ch in name):
        raise FormatError(f"key name {name!r} contains a space or '+'")
    _check_text_chars(name, "key name")


def _check_text_chars(text: str, what: str) -> None:
    for ch in text:
        if ch != "\n" and (ord(ch) < 0x20 or ord(ch) == 0x7F):
            raise FormatError(f"{what} contains control character U+{ord(ch):04X}")


@dataclass(frozen=True)
class Signature:
    """One signature line: who (name, key ID) and the signature bytes."""

    name: str
    key_id: int  # uint32, big-endian on the wire
    signature: bytes

    def line(self) -> str:
        blob = self.key_id.to_bytes(4, "big") + self.signature
        return f"{_EM_DASH} {self.name} {b64encode(blob)}\n"


@dataclass(frozen=True)
class Note:
    """A signed note: the text (ending in a newline) and its signatures."""

    text: str
    signatures: tuple[Signature, ...]

    def format(self) -> str:
        return self.text + "\n" + "".join(sig.line() for sig in self.signatures)

    def encode(self) -> bytes:
        return self.format().encode("utf-8")


def decode_text(data: bytes | str, what: str, limit: int) -> str:
    """Input as text: at most ``limit`` bytes of valid UTF-8 (checked before any parsing)."""
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    if len(raw) > limit:
        raise FormatError(f"{what} is {len(raw)} bytes, more than the limit of {limit}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{what} is not valid UTF-8: {exc.reason} at byte {exc.start}") from None


def parse_note(data: bytes | str) -> Note:
    """Parse a signed note, rejecting anything the spec does not allow."""
    data = decode_text(data, "note", MAX_NOTE_BYTES)
    _check_text_chars(data, "note")
    if not data.endswith("\n"):
        raise FormatError("note does not end with a newline")
    # The text is separated from the signatures by the last blank line.
    split = data.rfind("\n\n")
    if split < 0:
        raise FormatError("note has no blank line before its signatures")
    text, sig_block = data[: split + 1], data[split + 2 :]
    lines = sig_block.split("\n")[:-1]  # sig_block ends with "\n"
    if not lines:
        raise FormatError("note has no signature lines")
    if len(lines) > MAX_SIGNATURES:
        raise FormatError(f"note has {len(lines)} signatures, more than the limit of {MAX_SIGNATURES}")
    return Note(text=text, signatures=tuple(_parse_signature_line(line) for line in lines))


def _parse_signature_line(line: str) -> Signature:
    parts = line.split(" ")
    if len(parts) != 3 or parts[0] != _EM_DASH:
        raise FormatError(f"malformed signature line {line[:80]!r}: expected '— <name> <base64>'")
    _, name, blob_text = parts
    check_key_name(name)
    blob = b64decode_strict(blob_text, f"signature of {name}")
    if len(blob) < 5:
        raise FormatError(f"signature of {name} is {len(blob)} bytes, too short to hold a key ID and a signature")
    return Signature(name=name, key_id=int.from_bytes(blob[:4], "big"), signature=blob[4:])


class NoteSigner(Protocol):
    """What the notary needs from a signing key (``hsm/`` provides it).

    ``sig_type`` is ``SIG_ED25519`` or ``SIG_ECDSA``; ``public_key`` is the raw
    32-byte Ed25519 key or the ECDSA key's SPKI DER; ``sign`` returns the
    type's signature over ``message`` (64 raw bytes, or an ASN.1 DER ECDSA
    signature over SHA-256(message)). An exception from ``sign`` whose
    ``restart_needed`` attribute is true (``hsm.errors.SessionLostError``)
    ends the daemon, to be started again, instead of being retried.
    """

    sig_type: int
    public_key: bytes

    async def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True)
class VerifierKey:
    """A public key with its note name: verifies that key's signatures."""

    name: str
    sig_type: int
    public_key: bytes  # raw Ed25519 key, or ECDSA SPKI DER

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if self.sig_type not in SUPPORTED_TYPES:
            raise FormatError(f"signature type 0x{self.sig_type:02x} is not supported (only 0x01 Ed25519, 0x02 ECDSA)")
        self._load()  # fail now, not at the first verification

    @property
    def key_id(self) -> int:
        if self.sig_type == SIG_ECDSA:
            digest = hashlib.sha256(self.public_key).digest()
        else:
            digest = hashlib.sha256(
                self.name.encode("utf-8") + b"\n" + bytes([self.sig_type]) + self.public_key
            ).digest()
        return int.from_bytes(digest[:4], "big")

    def __str__(self) -> str:
        blob = bytes([self.sig_type]) + self.public_key
        return f"{self.name}+{self.key_id:08x}+{b64encode(blob)}"

    def _load(self) -> Ed25519PublicKey | ec.EllipticCurvePublicKey:
        if self.sig_type == SIG_ED25519:
            if len(self.public_key) != 32:
                raise FormatError(f"Ed25519 key of {self.name} is {len(self.public_key)} bytes, expected 32")
            return Ed25519PublicKey.from_public_bytes(self.public_key)
        try:
            key = serialization.load_der_public_key(self.public_key)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise FormatError(f"ECDSA key of {self.name} is not a valid SPKI DER public key: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            raise FormatError(f"ECDSA key of {self.name} is not a NIST P-256 key")
        if key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != self.public_key:
            raise FormatError(f"ECDSA key of {self.name} is not in canonical SPKI DER")
        return key

    def matches(self, sig: Signature) -> bool:
        return sig.name == self.name and sig.key_id == self.key_id

    def is_valid(self, text: bytes, signature: bytes) -> bool:
        key = self._load()
        try:
            if isinstance(key, Ed25519PublicKey):
                key.verify(signature, text)
            else:
                key.verify(signature, text, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True

    def signature_for(self, signature: bytes) -> Signature:
        """The signature line for a signature made by this key."""
        return Signature(name=self.name, key_id=self.key_id, signature=signature)


def parse_verifier_key(text: str) -> VerifierKey:
    """Parse ``<name>+<hex key ID>+base64(type || key)``; the ID must match the key."""
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise FormatError(f"verifier key {text[:80]!r} is not of the form <name>+<key id>+<base64 key>")
    name, hex_id, blob_text = parts
    check_key_name(name)
    if len(hex_id) != 8 or any(c not in "0123456789abcdef" for c in hex_id):
        raise FormatError(f"verifier key id {hex_id!r} is not 8 lowercase hex digits")
    blob = b64decode_strict(blob_text, f"verifier key of {name}")
    if len(blob) < 2:
        raise FormatError(f"verifier key of {name} holds no public key")
    key = VerifierKey(name=name, sig_type=blob[0], public_key=blob[1:])
    if key.key_id != int(hex_id, 16):
        raise FormatError(f"verifier key of {name} has id {hex_id}, but its public key gives {key.key_id:08x}")
    return key


async def sign_note(text: str, name: str, signers: Sequence[NoteSigner]) -> Note:
    """Sign ``text`` with every signer (one signature line each), as key ``name``."""
    if not text.endswith("\n"):
        raise FormatError("note text must end with a newline")
    _check_text_chars(text, "note text")
    if not signers:
        raise FormatError("a note needs at least one signer")
    message = text.encode("utf-8")
    sigs = []
    for signer in signers:
        vkey = VerifierKey(name=name, sig_type=signer.sig_type, public_key=signer.public_key)
        sigs.append(vkey.signature_for(await signer.sign(message)))
    return Note(text=text, signatures=tuple(sigs))


def verify_note(note: Note, trusted: Iterable[VerifierKey]) -> list[VerifierKey]:
    """Return the trusted keys whose signatures on ``note`` verify.

    Signatures from unknown keys are ignored, as the spec requires. A
    signature from a trusted key that fails to verify rejects the whole note,
    and so does a note with no verified signature from a trusted key.
    """
    trusted = list(trusted)
    message = note.text.encode("utf-8")
    verified: list[VerifierKey] = []
    for sig in note.signatures:
        for key in trusted:
            if key.matches(sig):
                if not key.is_valid(message, sig.signature):
                    raise VerificationError(f"signature by {key.name} (key {key.key_id:08x}) does not verify")
                if key not in verified:
                    verified.append(key)
    if not verified:
        names = ", ".join(f"{s.name}+{s.key_id:08x}" for s in note.signatures)
        raise VerificationError(f"note has no signature by a trusted key (signed by: {names})")
    return verified
