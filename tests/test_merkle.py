"""notary.merkle and notary.store against RFC 6962/9162, the CT vectors, and two oracles.

- CT vectors: tests/vectors/ct_merkle.json.
- Every (index, size) and (old, new) pair up to 300 leaves against the RFC 6962
  §2.1 reference in tests/rfc6962_reference.py.
- pymerkle (roots and inclusion paths) and tlog-scales (RFC 9162 verifiers,
  its own tile log and Ed25519 checkpoints): they accept what we produce and
  we accept what they produce.
- Mutated proofs are rejected; hypothesis explores random trees.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymerkle import InmemoryTree, SqliteTree
from tlog_scales import tlog as ts_tlog
from tlog_scales.signing import PlainEd25519Signer
from tlog_scales.reader import TilesReader
from tlog_scales.backend import LocalBackend
from tlog_scales.writer import TilesWriter

from notary import merkle
from notary.checkpoint import parse_signed_checkpoint
from notary.errors import VerificationError
from notary.note import SIG_ED25519, VerifierKey, verify_note
from notary.store import LogStore
from tests.rfc6962_reference import ReferenceTree
from tests.support import examples

VECTORS = json.loads((Path(__file__).parent / "vectors" / "ct_merkle.json").read_text())
CT_ENTRIES = [bytes.fromhex(x) for x in VECTORS["leaves"]]
CT_ROOTS = [bytes.fromhex(x) for x in VECTORS["roots"]]
N = 300
ENTRIES = [b"entry-%d" % i for i in range(N)]


def reference_reader(ref: ReferenceTree) -> merkle.SubtreeReader:
    return lambda level, index: ref.root_range(index << level, (index + 1) << level)


def build_store(path: Path, entries: list[bytes], seed: int = 1) -> LogStore:
    """A store built from ``entries`` in random-sized batches, to exercise partial tiles."""
    rng = random.Random(seed)
    store = LogStore(path, create=True)
    pos = 0
    while pos < len(entries):
        k = rng.choice([1, 2, 3, 7, 15, 16, 17, 31, 64, 100])
        store.append_entries(entries[pos : pos + k])
        pos += k
    return store


@pytest.fixture(scope="module")
def ref() -> ReferenceTree:
    return ReferenceTree(ENTRIES)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LogStore:
    s = build_store(tmp_path_factory.mktemp("merkle") / "log.db", ENTRIES)
    yield s
    s.close()


# -- Certificate Transparency vectors ---------------------------------------


def test_ct_empty_root_is_sha256_of_nothing():
    assert merkle.EMPTY_ROOT.hex() == VECTORS["empty_root"]


@pytest.mark.parametrize("size", range(1, 9))
def test_ct_roots_from_store(tmp_path, size):
    store = build_store(tmp_path / "ct.db", CT_ENTRIES[:size])
    assert store.tree_hash() == CT_ROOTS[size - 1]


@pytest.mark.parametrize("vec", VECTORS["inclusion"], ids=lambda v: f"{v['index']}-of-{v['size']}")
def test_ct_inclusion_vectors(tmp_path, vec):
    store = build_store(tmp_path / "ct.db", CT_ENTRIES)
    path = [bytes.fromhex(h) for h in vec["path"]]
    assert store.inclusion_proof(vec["index"], vec["size"]) == path
    root = CT_ROOTS[vec["size"] - 1]
    merkle.verify_inclusion(merkle.leaf_hash(CT_ENTRIES[vec["index"]]), vec["index"], vec["size"], path, root)


@pytest.mark.parametrize("vec", VECTORS["consistency"], ids=lambda v: f"{v['old_size']}-to-{v['new_size']}")
def test_ct_consistency_vectors(tmp_path, vec):
    store = build_store(tmp_path / "ct.db", CT_ENTRIES)
    proof = [bytes.fromhex(h) for h in vec["proof"]]
    m, n = vec["old_size"], vec["new_size"]
    assert store.consistency_proof(m, n) == proof
    merkle.verify_consistency(m, n, CT_ROOTS[m - 1], CT_ROOTS[n - 1], proof)


# -- every pair up to 300 against the RFC 6962 reference ---------------------


def test_every_root_up_to_300_matches_reference(store, ref):
    for size in range(N + 1):
        assert store.tree_hash(size) == ref.root(size), size


def test_every_inclusion_pair_up_to_300_matches_reference(store, ref):
    for size in range(1, N + 1):
        root = ref.root(size)
        for index in range(size):
            proof = store.inclusion_proof(index, size)
            assert proof == ref.path(index, size), (index, size)
            merkle.verify_inclusion(merkle.leaf_hash(ENTRIES[index]), index, size, proof, root)


def test_every_consistency_pair_up_to_300_matches_reference(store, ref):
    for new in range(N + 1):
        new_root = ref.root(new)
        for old in range(new + 1):
            proof = store.consistency_proof(old, new)
            assert proof == ref.proof(old, new), (old, new)
            merkle.verify_consistency(old, new, ref.root(old), new_root, proof)


def test_pure_functions_match_reference_through_any_reader(ref):
    read = reference_reader(ref)
    for size in (1, 2, 5, 16, 17, 255, 256, 257, 300):
        assert merkle.tree_hash(size, read) == ref.root(size)
        assert merkle.inclusion_proof(size - 1, size, read) == ref.path(size - 1, size)
        assert merkle.consistency_proof(size // 3, size, read) == ref.proof(size // 3, size)


# -- oracles -----------------------------------------------------------------


@pytest.mark.parametrize("tree_class", ["inmemory", "sqlite"])
def test_pymerkle_roots_and_inclusion_paths_agree(store, tmp_path, tree_class):
    tree = InmemoryTree() if tree_class == "inmemory" else SqliteTree(str(tmp_path / "pymerkle.db"))
    for e in ENTRIES:
        tree.append_entry(e)
    for size in range(1, N + 1):
        assert tree.get_root(size) == store.tree_hash(size)
    for size in (1, 2, 3, 8, 100, 257, N):
        for index in range(size):
            theirs = tree.prove_inclusion(index + 1, size)  # pymerkle counts from one
            # pymerkle's path starts with the leaf hash itself, then the RFC path.
            assert theirs.path[0] == store.leaf_hash(index)
            assert list(theirs.path[1:]) == store.inclusion_proof(index, size)
            # We accept what pymerkle produces.
            merkle.verify_inclusion(theirs.path[0], index, size, theirs.path[1:], tree.get_root(size))


def test_tlog_scales_accepts_our_proofs(store):
    for size in range(1, 130):
        root = store.tree_hash(size)
        for index in range(size):
            proof = ts_tlog.InclusionProof(index, size, store.inclusion_proof(index, size))
            proof.check(store.leaf_hash(index), root)
        for old in range(1, size + 1):
            proof = ts_tlog.ConsistencyProof(old, size, store.consistency_proof(old, size))
            proof.check(store.tree_hash(old), root)


def test_we_accept_tlog_scales_log_proofs_and_checkpoint(store, tmp_path):
    """tlog-scales writes its own tile log with an Ed25519-signed checkpoint; we verify all of it."""
    origin = "example.com/oracle"
    signer = PlainEd25519Signer(origin, bytes(range(32)))
    writer = TilesWriter.create(tmp_path / "tiles", origin)
    sizes = [1, 7, 100, 256, N]
    prev = 0
    for size in sizes:
        for e in ENTRIES[prev:size]:
            writer.add_leaf(e)
        writer.commit([signer])
        prev = size
        text = (tmp_path / "tiles" / "checkpoint").read_bytes()
        signed = parse_signed_checkpoint(text)
        vkey = VerifierKey(name=origin, sig_type=SIG_ED25519, public_key=signer.vkey.pubkey)
        assert str(vkey) == signer.vkey.serialize()
        assert verify_note(signed.note, [vkey]) == [vkey]
        assert signed.checkpoint.size == size
        assert signed.checkpoint.root_hash == store.tree_hash(size)
    reader = TilesReader(LocalBackend(tmp_path / "tiles"))
    reader.set_size(N)
    root = store.tree_hash(N)
    for index in range(0, N, 7):
        theirs = reader.get_inclusion_proof(index, N)
        merkle.verify_inclusion(merkle.leaf_hash(ENTRIES[index]), index, N, theirs.node_hashes, root)
    for old in range(1, N, 11):
        theirs = reader.get_consistency_proof(old, N)
        merkle.verify_consistency(old, N, store.tree_hash(old), root, theirs.node_hashes)


# -- mutated proofs are rejected ---------------------------------------------

SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000000000000000000")


def inclusion_mutations(index, size, proof, root, leaf):
    """(description, index, size, proof, root, leaf) that must all fail."""
    out = [
        ("index - 1", index - 1, size, proof, root, leaf),
        ("index + 1", index + 1, size, proof, root, leaf),
        ("index ^ 2", index ^ 2, size, proof, root, leaf),
        ("size * 2", index, size * 2, proof, root, leaf),
        ("size // 2", index, size // 2, proof, root, leaf),
        ("wrong leaf", index, size, proof, root, merkle.leaf_hash(b"WrongLeaf")),
        ("empty root", index, size, proof, merkle.EMPTY_ROOT, leaf),
        ("random root", index, size, proof, SOME_HASH, leaf),
        ("trailing garbage", index, size, proof + [b""], root, leaf),
        ("trailing root", index, size, proof + [root], root, leaf),
        ("preceding garbage", index, size, [b""] + proof, root, leaf),
        ("preceding root", index, size, [root] + proof, root, leaf),
    ]
    for i in range(len(proof)):
        for bit in (0, 3, 7):
            flipped = list(proof)
            h = bytearray(flipped[i])
            h[i % 32] ^= 1 << bit
            flipped[i] = bytes(h)
            out.append((f"proof[{i}] bit {bit} flipped", index, size, flipped, root, leaf))
    if proof:
        out.append(("last hash removed", index, size, proof[:-1], root, leaf))
        out.append(("first hash removed", index, size, proof[1:], root, leaf))
    out.append(("hash inserted", index, size, proof[:1] + [SOME_HASH] + proof[1:], root, leaf))
    return [m for m in out if m[1] >= 0]


@pytest.mark.parametrize("index,size", [(0, 1), (0, 8), (5, 8), (2, 3), (1, 5), (0, 300), (137, 300), (299, 300), (255, 257)])
def test_mutated_inclusion_proofs_are_rejected(store, ref, index, size):
    proof, root, leaf = store.inclusion_proof(index, size), ref.root(size), store.leaf_hash(index)
    merkle.verify_inclusion(leaf, index, size, proof, root)
    for desc, i, n, p, r, lf in inclusion_mutations(index, size, proof, root, leaf):
        with pytest.raises(VerificationError):
            merkle.verify_inclusion(lf, i, n, p, r)
            pytest.fail(f"mutation accepted: {desc}")


@pytest.mark.parametrize("old,new", [(1, 8), (6, 8), (2, 5), (3, 7), (4, 300), (129, 300), (256, 257), (255, 300)])
def test_mutated_consistency_proofs_are_rejected(store, ref, old, new):
    proof, r1, r2 = store.consistency_proof(old, new), ref.root(old), ref.root(new)
    merkle.verify_consistency(old, new, r1, r2, proof)
    mutations = [
        ("old - 1", old - 1, new, r1, r2, proof),
        ("old + 1", old + 1, new, r1, r2, proof),
        ("old ^ 2", old ^ 2, new, r1, r2, proof),
        ("new * 2", old, new * 2, r1, r2, proof),
        ("new // 2", old, new // 2, r1, r2, proof),
        ("wrong old root", old, new, SOME_HASH, r2, proof),
        ("wrong new root", old, new, r1, SOME_HASH, proof),
        ("swapped roots", old, new, r2, r1, proof),
        ("empty proof", old, new, r1, r2, []),
        ("trailing garbage", old, new, r1, r2, proof + [b""]),
        ("trailing old root", old, new, r1, r2, proof + [r1]),
        ("trailing new root", old, new, r1, r2, proof + [r2]),
        ("preceding old root", old, new, r1, r2, [r1] + proof),
        ("preceding new root", old, new, r1, r2, [r2] + proof),
        ("preceding proof[0]", old, new, r1, r2, [proof[0]] + proof),
        ("last hash removed", old, new, r1, r2, proof[:-1]),
        ("hash inserted", old, new, r1, r2, proof[:1] + [SOME_HASH] + proof[1:]),
    ]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        mutations.append((f"proof[{i}] bit 4 flipped", old, new, r1, r2, flipped))
    for desc, m, n, a, b, p in mutations:
        if m < 0:
            continue
        with pytest.raises(VerificationError):
            merkle.verify_consistency(m, n, a, b, p)
            pytest.fail(f"mutation accepted: {desc}")


@pytest.mark.parametrize(
    "old,new,r1,r2,proof,ok",
    [
        (0, 0, b"1" * 32, b"2" * 32, [], False),
        (1, 1, b"1" * 32, b"2" * 32, [], False),
        (0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [], True),
        (0, 1, merkle.EMPTY_ROOT, b"2" * 32, [], True),
        (0, 1, b"1" * 32, b"2" * 32, [], False),  # the empty tree has one root
        (1, 1, b"2" * 32, b"2" * 32, [], True),
        (1, 0, b"1" * 32, b"2" * 32, [], False),
        (2, 1, b"1" * 32, b"2" * 32, [], False),
        (1, 2, b"1" * 32, b"2" * 32, [], False),
        (0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [merkle.EMPTY_ROOT], False),
        (0, 1, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [merkle.EMPTY_ROOT], False),
        (1, 1, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [merkle.EMPTY_ROOT], False),
    ],
)
def test_trivial_consistency_cases(old, new, r1, r2, proof, ok):
    if ok:
        merkle.verify_consistency(old, new, r1, r2, proof)
    else:
        with pytest.raises(VerificationError):
            merkle.verify_consistency(old, new, r1, r2, proof)


@pytest.mark.parametrize("index,size", [(0, 0), (1, 0), (2, 1), (-1, 5)])
def test_inclusion_outside_the_tree_is_rejected(index, size):
    with pytest.raises(VerificationError, match="outside"):
        merkle.verify_inclusion(SOME_HASH, index, size, [], SOME_HASH)


# -- hypothesis: random trees ------------------------------------------------


@settings(max_examples=examples(40), deadline=None)
@given(
    entries=st.lists(st.binary(max_size=12), min_size=1, max_size=700),
    batch_seed=st.integers(0, 2**32),
    data=st.data(),
)
def test_random_trees_agree_with_reference(tmp_path_factory, entries, batch_seed, data):
    ref = ReferenceTree(entries)
    store = build_store(tmp_path_factory.mktemp("h") / "log.db", entries, batch_seed)
    try:
        n = len(entries)
        assert store.tree_hash() == ref.root(n)
        size = data.draw(st.integers(1, n), label="size")
        index = data.draw(st.integers(0, size - 1), label="index")
        proof = store.inclusion_proof(index, size)
        assert proof == ref.path(index, size)
        merkle.verify_inclusion(merkle.leaf_hash(entries[index]), index, size, proof, ref.root(size))
        other = data.draw(st.integers(0, size - 1), label="other index")
        if entries[other] != entries[index] and other != index:
            with pytest.raises(VerificationError):
                merkle.verify_inclusion(merkle.leaf_hash(entries[other]), other, size, proof, ref.root(size))
        old = data.draw(st.integers(0, size), label="old size")
        cproof = store.consistency_proof(old, size)
        assert cproof == ref.proof(old, size)
        merkle.verify_consistency(old, size, ref.root(old), ref.root(size), cproof)
    finally:
        store.close()
