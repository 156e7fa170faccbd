"""RFC 6962 §2.1 / RFC 9162 §2.1 Merkle tree hashing, proofs and their verification.

Pure functions, no I/O. Trees are read through a ``SubtreeReader``: a function
``read(level, index)`` returning the hash of the *complete* subtree of height
``level`` that covers leaves ``[index * 2**level, (index + 1) * 2**level)``.
Every hash an RFC 6962 proof or tree head needs is built from such complete
subtrees, which is what lets a store keep only those (see notary/store.py).

Indices are 0-based throughout, as in RFC 9162. Compatibility is proven by
tests/test_merkle.py: the Certificate Transparency vectors, an RFC 6962 §2.1
reference written from the RFC's recursive definitions, pymerkle and
tlog-scales.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence

from notary.errors import VerificationError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH({}) = SHA-256() (RFC 6962 §2.1)

SubtreeReader = Callable[[int, int], bytes]

_sha256 = hashlib.sha256


def leaf_hash(entry: bytes) -> bytes:
    """SHA-256(0x00 || entry) (RFC 6962 §2.1)."""
    return _sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right) (RFC 6962 §2.1)."""
    return _sha256(b"\x01" + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """The k of RFC 6962 §2.1: the largest power of two with k < n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def range_hash(start: int, end: int, read: SubtreeReader) -> bytes:
    """MTH(D[start:end]) for a range aligned as RFC 6962's recursion makes them.

    ``start`` must be a multiple of the largest power of two not above
    ``end - start`` (true of every range the RFC's split produces), so the
    range is a run of complete subtrees of decreasing height, folded from the
    right exactly as the recursive MTH definition does.
    """
    if end <= start:
        raise ValueError(f"empty range [{start}, {end})")
    remaining = end - start
    if remaining & (remaining - 1) == 0:  # one complete subtree: the common case in proofs
        level = remaining.bit_length() - 1
        return read(level, start >> level)
    parts: list[bytes] = []
    pos, remaining = start, end - start
    while remaining:
        level = remaining.bit_length() - 1
        parts.append(read(level, pos >> level))
        pos += 1 << level
        remaining -= 1 << level
    acc = parts[-1]
    for part in reversed(parts[:-1]):
        acc = node_hash(part, acc)
    return acc


def tree_hash(size: int, read: SubtreeReader) -> bytes:
    """MTH(D[0:size]), the root hash of the tree of the first ``size`` leaves."""
    if size == 0:
        return EMPTY_ROOT
    return range_hash(0, size, read)


def inclusion_proof(index: int, size: int, read: SubtreeReader) -> list[bytes]:
    """PATH(index, D[0:size]) (RFC 6962 §2.1.1), leaf sibling first."""
    if not 0 <= index < size:
        raise ValueError(f"index {index} is outside a tree of size {size}")
    path: list[bytes] = []
    lo, hi = 0, size
    # Walk from the root down to the leaf; the RFC lists the path bottom-up.
    while hi - lo > 1:
        k = _largest_power_of_two_below(hi - lo)
        if index < lo + k:
            path.append(range_hash(lo + k, hi, read))
            hi = lo + k
        else:
            path.append(range_hash(lo, lo + k, read))
            lo = lo + k
    path.reverse()
    return path


def consistency_proof(old_size: int, new_size: int, read: SubtreeReader) -> list[bytes]:
    """PROOF(old_size, D[0:new_size]) (RFC 6962 §2.1.2); empty when old_size is 0 or equal."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size == 0 or old_size == new_size:
        return []
    proof: list[bytes] = []
    lo, hi, m = 0, new_size, old_size
    complete = True  # the b flag of SUBPROOF: still on the path of the old root
    while m != hi:
        k = _largest_power_of_two_below(hi - lo)
        if m - lo <= k:
            proof.append(range_hash(lo + k, hi, read))
            hi = lo + k
        else:
            proof.append(range_hash(lo, lo + k, read))
            lo = lo + k
            complete = False
    if not complete:
        proof.append(range_hash(lo, hi, read))
    proof.reverse()
    return proof


def _check_hashes(proof: Sequence[bytes], what: str) -> None:
    for i, h in enumerate(proof):
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            raise VerificationError(f"{what} hash {i} is not {HASH_SIZE} bytes")


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root an inclusion proof leads to (RFC 9162 §2.1.3.2, steps 1-4)."""
    if not 0 <= index < size:
        raise VerificationError(f"inclusion proof index {index} is outside a tree of size {size}")
    _check_hashes(proof, "inclusion proof")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise VerificationError(
                f"inclusion proof has too many hashes: {len(proof)} for index {index} in a tree of size {size}"
            )
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError(
            f"inclusion proof has too few hashes: {len(proof)} for index {index} in a tree of size {size}"
        )
    return r


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Raise ``VerificationError`` unless ``proof`` shows leaf ``index`` under ``root`` (RFC 9162 §2.1.3.2)."""
    computed = root_from_inclusion(leaf, index, size, proof)
    if not hmac.compare_digest(computed, root):
        raise VerificationError(
            f"inclusion proof for index {index} in a tree of size {size} leads to root "
            f"{computed.hex()}, expected {root.hex()}"
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise ``VerificationError`` unless ``proof`` shows the old tree is a prefix of the new (RFC 9162 §2.1.4.2)."""
    _check_hashes(proof, "consistency proof")
    if not 0 <= old_size <= new_size:
        raise VerificationError(f"a tree of size {new_size} cannot extend a tree of size {old_size}")
    if old_size == new_size or old_size == 0:
        # Nothing to prove: a tree is consistent with itself, and every tree
        # extends the empty one. A proof is then empty by definition.
        if proof:
            raise VerificationError(f"consistency proof from size {old_size} to {new_size} must be empty")
        if old_size == new_size and not hmac.compare_digest(old_root, new_root):
            raise VerificationError(f"two different roots for tree size {old_size}: {old_root.hex()} and {new_root.hex()}")
        if old_size == 0 and not hmac.compare_digest(old_root, EMPTY_ROOT):
            raise VerificationError(f"root of the empty tree is {old_root.hex()}, expected {EMPTY_ROOT.hex()}")
        return
    if not proof:
        raise VerificationError(f"consistency proof from size {old_size} to {new_size} is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # old tree is a complete subtree of the new one
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError(
                f"consistency proof from size {old_size} to {new_size} has too many hashes ({len(proof)})"
            )
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError(
            f"consistency proof from size {old_size} to {new_size} has too few hashes ({len(proof)})"
        )
    if not hmac.compare_digest(fr, old_root):
        raise VerificationError(
            f"consistency proof from size {old_size} to {new_size} leads to old root {fr.hex()}, expected {old_root.hex()}"
        )
    if not hmac.compare_digest(sr, new_root):
        raise VerificationError(
            f"consistency proof from size {old_size} to {new_size} leads to new root {sr.hex()}, expected {new_root.hex()}"
        )
