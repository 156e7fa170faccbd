"""Range proofs: the leaves of a whole span ``[start, end)`` under a tree head.

A range proof lets a verifier that holds every leaf hash of ``D[start:end]``
recompute the root of the tree of ``size`` leaves, and so check that it got
exactly the leaves the signed checkpoint commits to: none missing, none
added, none changed, none moved. It is built on RFC 9162 §2.1's recursive
MTH definition: walking MTH(D[0:size]) from the root, every subtree that lies
wholly outside the span is one proof hash (left to right, in the order the
walk meets them), every subtree wholly inside it is recomputed from the
leaves, and only the subtrees straddling an edge of the span are split. The
walk follows the two edges of the span, so a proof holds at most about
``2 * log2(size)`` hashes. For a span of one leaf the proof holds exactly the
hashes of its RFC 9162 inclusion path (tests/test_rangeproof.py).

Pure functions, no I/O; the tree is read through a ``merkle.SubtreeReader``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator, Sequence

from notary import merkle
from notary.errors import VerificationError

_sha256 = hashlib.sha256


def _check_span(start: int, end: int, size: int, error: type[Exception]) -> None:
    if not 0 <= start < end <= size:
        raise error(f"span [{start}, {end}) is not a non-empty range of a tree of size {size}")


def _walk(start: int, end: int, size: int) -> Iterator[tuple[int, int, bool]]:
    """(lo, hi, inside) for the subtrees MTH(D[lo:hi]) the proof is made of, left to right."""
    stack = [(0, size)]
    while stack:
        lo, hi = stack.pop()
        if hi <= start or lo >= end:
            yield lo, hi, False
        elif start <= lo and hi <= end:
            yield lo, hi, True
        else:
            k = 1 << ((hi - lo - 1).bit_length() - 1)  # RFC 9162 §2.1: largest power of two < n
            stack.append((lo + k, hi))
            stack.append((lo, lo + k))


def range_proof(start: int, end: int, size: int, read: merkle.SubtreeReader) -> list[bytes]:
    """The hashes of the subtrees of MTH(D[0:size]) that lie outside ``[start, end)``, left to right."""
    _check_span(start, end, size, ValueError)
    return [merkle.range_hash(lo, hi, read) for lo, hi, inside in _walk(start, end, size) if not inside]


def mth(leaves: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes (RFC 9162 §2.1), level by level rather than by recursion.

    The RFC's split makes D[0:n] a run of complete subtrees of decreasing
    height (the binary digits of n), folded from the right.
    """
    if not leaves:
        return merkle.EMPTY_ROOT
    parts, pos, remaining = [], 0, len(leaves)
    while remaining:
        width = 1 << (remaining.bit_length() - 1)
        level = list(leaves[pos : pos + width])
        while len(level) > 1:  # SHA-256(0x01 || left || right)
            level = [_sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
        parts.append(level[0])
        pos += width
        remaining -= width
    acc = parts[-1]
    for part in reversed(parts[:-1]):
        acc = merkle.node_hash(part, acc)
    return acc


def root_from_range(start: int, size: int, leaves: Sequence[bytes], proof: Sequence[bytes]) -> bytes:
    """The root that the leaf hashes of ``D[start:start+len(leaves)]`` and a range proof lead to."""
    end = start + len(leaves)
    _check_span(start, end, size, VerificationError)
    for i, h in enumerate(proof):
        if not isinstance(h, bytes) or len(h) != merkle.HASH_SIZE:
            raise VerificationError(f"range proof hash {i} is not {merkle.HASH_SIZE} bytes")
    parts: list[tuple[int, int, bytes]] = []  # (lo, hi, hash) of the subtrees, left to right
    outside = iter(proof)
    used = 0
    for lo, hi, inside in _walk(start, end, size):
        if inside:
            parts.append((lo, hi, mth(leaves[lo - start : hi - start])))
            continue
        h = next(outside, None)
        if h is None:
            raise VerificationError(f"range proof for [{start}, {end}) in a tree of size {size} has too few hashes: {len(proof)}")
        used += 1
        parts.append((lo, hi, h))
    if used != len(proof):
        raise VerificationError(
            f"range proof for [{start}, {end}) in a tree of size {size} has {len(proof)} hashes, expected {used}")
    return _fold(parts, 0, size)


def _fold(parts: list[tuple[int, int, bytes]], lo: int, hi: int) -> bytes:
    """Combine the subtrees (in order, tiling [lo, hi)) as RFC 9162's MTH recursion does."""
    # Only the two edges of the span are split, so the recursion is O(log size) deep.
    if len(parts) == 1:
        return parts[0][2]
    k = lo + (1 << ((hi - lo - 1).bit_length() - 1))
    cut = next(i for i, (plo, _, _) in enumerate(parts) if plo >= k)
    return merkle.node_hash(_fold(parts[:cut], lo, k), _fold(parts[cut:], k, hi))


def verify_range(start: int, size: int, leaves: Sequence[bytes], proof: Sequence[bytes], root: bytes) -> None:
    """Raise ``VerificationError`` unless the leaves of ``D[start:...]`` and the proof lead to ``root``."""
    computed = root_from_range(start, size, leaves, proof)
    if not hmac.compare_digest(computed, root):
        raise VerificationError(
            f"the {len(leaves)} leaves of [{start}, {start + len(leaves)}) and the range proof lead to root "
            f"{computed.hex()}, but the checkpoint of size {size} has {root.hex()}")
