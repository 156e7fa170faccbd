"""Range proofs (notary/rangeproof.py) against the RFC 6962 reference written from the RFC's recursion."""

from __future__ import annotations

import hashlib

import pytest

from notary import merkle, rangeproof
from notary.errors import VerificationError
from tests.rfc6962_reference import ReferenceTree

ENTRIES = [b"entry %d" % i for i in range(70)]


@pytest.fixture(scope="module")
def ref() -> ReferenceTree:
    return ReferenceTree(ENTRIES)


def reader(ref: ReferenceTree) -> merkle.SubtreeReader:
    return lambda level, index: ref.root_range(index << level, (index + 1) << level)


def leaves(start: int, end: int) -> list[bytes]:
    return [hashlib.sha256(b"\x00" + e).digest() for e in ENTRIES[start:end]]


def test_every_span_of_every_tree_up_to_70_leads_to_the_reference_root(ref):
    for size in range(1, 71):
        for start in range(size):
            for end in range(start + 1, size + 1):
                proof = rangeproof.range_proof(start, end, size, reader(ref))
                assert rangeproof.root_from_range(start, size, leaves(start, end), proof) == ref.root(size)


def test_mth_of_a_list_matches_the_reference(ref):
    for n in range(0, 71):
        assert rangeproof.mth(leaves(0, n)) == ref.root(n)


def test_one_leaf_span_proof_holds_exactly_the_inclusion_path(ref):
    for size in range(1, 71):
        for index in range(size):
            proof = rangeproof.range_proof(index, index + 1, size, reader(ref))
            assert sorted(proof) == sorted(ref.path(index, size))


def test_a_changed_missing_extra_or_moved_leaf_is_rejected(ref):
    size, start, end = 70, 13, 41
    proof = rangeproof.range_proof(start, end, size, reader(ref))
    good = leaves(start, end)
    changed = good[:5] + [hashlib.sha256(b"other").digest()] + good[6:]
    swapped = good[:5] + [good[6], good[5]] + good[7:]
    for bad, begin in ((changed, start), (good[:-1], start), (good + leaves(end, end + 1), start),
                       (swapped, start), (good, start + 1)):
        with pytest.raises(VerificationError):
            rangeproof.verify_range(begin, size, bad, proof, ref.root(size))
    rangeproof.verify_range(start, size, good, proof, ref.root(size))


def test_a_proof_with_a_hash_too_many_or_too_few_is_rejected(ref):
    size, start, end = 70, 13, 41
    proof = rangeproof.range_proof(start, end, size, reader(ref))
    for bad in (proof[:-1], proof + [proof[0]], [b"short"] + proof[1:]):
        with pytest.raises(VerificationError):
            rangeproof.verify_range(start, size, leaves(start, end), bad, ref.root(size))


@pytest.mark.parametrize("start, end, size", [(0, 0, 5), (3, 2, 5), (0, 6, 5), (-1, 2, 5)])
def test_an_empty_or_out_of_tree_span_is_refused(start, end, size):
    with pytest.raises(VerificationError, match="span"):
        rangeproof.root_from_range(start, size, [b"\0" * 32] * max(0, end - start), [])
