"""The seal object (docs/FORMATS.md, "Seal object (S3)"): strict parsing and offline verification.

What an auditor holding one seal JSON and public material can establish:

- ``parse_seal``: the object is a ``notary-seal/v1`` document whose own
  fields agree (tree size, root and origin are the signed checkpoint's);
- ``verify_seal``: its RFC 3161 token covers the exact ``checkpoint`` bytes
  and chains to the TSA roots, and the checkpoint is signed by a key trusted
  at the token's time (``notary.trust``);
- ``verify_link``: it extends the seal before it (``previous_tree_size``
  and the RFC 9162 §2.1.4.2 consistency proof), so the objects form one
  append-only chain.

Everything here is pure: the bytes come from a file or from S3 (``notary.audit``).
"""

from __future__ import annotations

import datetime
import hmac
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from anchors.errors import TsaError
from anchors.tsa import TimestampToken, verify_token
from cryptography import x509

from notary import merkle
from notary.checkpoint import SignedCheckpoint, parse_decimal, parse_hash, parse_signed_checkpoint
from notary.errors import FormatError, VerificationError
from notary.note import b64decode_strict, decode_text
from notary.seals import SEAL_FORMAT
from notary.trust import TrustedKey, TrustedKeys

# A seal holds a checkpoint (at most 64 KiB), a token and a proof of at most
# 64 hashes: far below this. Checked before parsing.
MAX_SEAL_BYTES = 1024 * 1024
MAX_CONSISTENCY_HASHES = 128  # RFC 9162 consistency proofs in trees below 2**64 leaves are shorter

_FIELDS = ("checkpoint", "consistency_proof", "format", "origin", "previous_tree_size", "root_hash",
           "sealed_at", "timestamp_token", "tree_size")
_SEALED_AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


class TimestampError(VerificationError):
    """A seal's RFC 3161 token does not verify, or does not cover the checkpoint in question."""


class ChainError(VerificationError):
    """A seal does not extend the seal before it: wrong ``previous_tree_size`` or a failing consistency proof."""


@dataclass(frozen=True)
class SealObject:
    """A parsed seal; ``checkpoint`` is the UTF-8 of the JSON field, the bytes the token time-stamps."""

    raw: bytes
    origin: str
    tree_size: int
    root_hash: bytes
    checkpoint: bytes
    signed: SignedCheckpoint
    timestamp_token: bytes
    previous_tree_size: int
    consistency_proof: tuple[bytes, ...]
    sealed_at: str
    canonical: bool  # the bytes are exactly the notary's canonical JSON (sorted keys, no spaces, ASCII)


def canonical_json(doc: dict) -> bytes:
    """The notary's encoding of a seal (``notary.seals.Seal.seal_json``): sorted keys, no spaces, ASCII."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def parse_seal(data: bytes) -> SealObject:
    """Parse a seal JSON; ``FormatError`` names the field that is wrong or that disagrees with the checkpoint."""
    text = decode_text(data, "seal", MAX_SEAL_BYTES)
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"seal is not JSON: {exc}") from None
    if not isinstance(doc, dict) or sorted(doc) != list(_FIELDS):
        found = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise FormatError(f"seal has fields {found}, expected exactly {list(_FIELDS)}")
    if doc["format"] != SEAL_FORMAT:
        raise FormatError(f"seal format is {doc['format']!r}, expected {SEAL_FORMAT!r}")
    for name in ("checkpoint", "origin", "root_hash", "sealed_at", "timestamp_token"):
        if not isinstance(doc[name], str):
            raise FormatError(f"seal field {name} is not a string")
    for name in ("tree_size", "previous_tree_size"):
        if type(doc[name]) is not int:
            raise FormatError(f"seal field {name} is not an integer")
    if not isinstance(doc["consistency_proof"], list) or not all(isinstance(h, str) for h in doc["consistency_proof"]):
        raise FormatError("seal field consistency_proof is not a list of base64 strings")
    if len(doc["consistency_proof"]) > MAX_CONSISTENCY_HASHES:
        raise FormatError(f"seal consistency_proof has {len(doc['consistency_proof'])} hashes, "
                          f"more than the limit of {MAX_CONSISTENCY_HASHES}")
    if not _SEALED_AT.fullmatch(doc["sealed_at"]):
        raise FormatError(f"seal sealed_at {doc['sealed_at'][:40]!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
    tree_size = parse_decimal(str(doc["tree_size"]), "seal tree_size")
    previous = parse_decimal(str(doc["previous_tree_size"]), "seal previous_tree_size")
    if previous >= tree_size:
        raise FormatError(f"seal previous_tree_size {previous} is not below its tree_size {tree_size}")
    root = parse_hash(doc["root_hash"], "seal root_hash")
    proof = tuple(parse_hash(h, f"seal consistency_proof hash {i}") for i, h in enumerate(doc["consistency_proof"]))
    token = b64decode_strict(doc["timestamp_token"], "seal timestamp_token")
    try:
        checkpoint = doc["checkpoint"].encode("utf-8")
    except UnicodeEncodeError:  # JSON can escape a lone surrogate, which no UTF-8 text holds
        raise FormatError("seal checkpoint is not UTF-8 text (it holds a lone surrogate)") from None
    signed = parse_signed_checkpoint(checkpoint)
    cp = signed.checkpoint
    if cp.size != tree_size:
        raise FormatError(f"seal tree_size is {tree_size}, but its checkpoint is for size {cp.size}")
    if not hmac.compare_digest(cp.root_hash, root):
        raise FormatError(f"seal root_hash is {root.hex()}, but its checkpoint's root is {cp.root_hash.hex()}")
    if cp.origin != doc["origin"]:
        raise FormatError(f"seal origin is {doc['origin']!r}, but its checkpoint is for log {cp.origin!r}")
    canonical = canonical_json(doc)
    return SealObject(
        raw=bytes(data), origin=cp.origin, tree_size=tree_size, root_hash=root, checkpoint=checkpoint,
        signed=signed, timestamp_token=token, previous_tree_size=previous, consistency_proof=proof,
        sealed_at=doc["sealed_at"], canonical=hmac.compare_digest(canonical, bytes(data)),
    )


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise ValueError("a field appears twice")
    return doc


@dataclass(frozen=True)
class VerifiedSeal:
    """What a verified seal establishes: the checkpoint existed at ``timestamp.gen_time``, signed by ``signed_by``."""

    seal: SealObject
    timestamp: TimestampToken
    signed_by: tuple[TrustedKey, ...]

    @property
    def time(self) -> datetime.datetime:
        return self.timestamp.gen_time


def verify_timestamp(seal: SealObject, roots: Sequence[x509.Certificate]) -> TimestampToken:
    """The seal's token, checked: it chains to ``roots`` and its imprint is SHA-256 of the checkpoint bytes."""
    try:
        return verify_token(seal.timestamp_token, seal.checkpoint, roots)
    except TsaError as exc:
        raise TimestampError(f"the timestamp token of the seal of tree size {seal.tree_size} fails: {exc}") from None


def verify_seal(seal: SealObject, trust: TrustedKeys, roots: Sequence[x509.Certificate]) -> VerifiedSeal:
    """Timestamp first (it says when), then the signatures by keys trusted at that time."""
    token = verify_timestamp(seal, roots)
    _, keys = trust.verify_checkpoint(seal.checkpoint, token.gen_time)
    return VerifiedSeal(seal, token, keys)


def verify_link(previous: SealObject | None, seal: SealObject) -> None:
    """``seal`` extends ``previous`` (``None``: ``seal`` is the log's first), RFC 9162 §2.1.4.2."""
    prev_size, prev_root = (0, merkle.EMPTY_ROOT) if previous is None else (previous.tree_size, previous.root_hash)
    if seal.previous_tree_size != prev_size:
        raise ChainError(
            f"the seal of tree size {seal.tree_size} names previous_tree_size {seal.previous_tree_size}, "
            f"but the seal before it is for tree size {prev_size}")
    try:
        merkle.verify_consistency(prev_size, seal.tree_size, prev_root, seal.root_hash, seal.consistency_proof)
    except VerificationError as exc:
        raise ChainError(
            f"the consistency proof from tree size {prev_size} to {seal.tree_size} fails: {exc}") from None
