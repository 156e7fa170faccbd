"""Entry lines and log bundles (notary/logbundle.py): round trip, verification, strict parsing."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notary import rangeproof
from notary.checkpoint import Checkpoint, sign_checkpoint
from notary.entry import Entry
from notary.errors import FormatError, VerificationError
from notary.logbundle import entry_line, format_bundle, parse_bundle, parse_entry_lines, span_lines
from notary.store import LogStore
from tests.support import SoftwareSigner, examples

ORIGIN = "example.test/log"
SIGNER = SoftwareSigner.ed25519(b"\x07" * 32)


def make_bundle(tmp_path, start: int, end: int, source: str | None) -> str:
    store = LogStore(tmp_path / "log.db", create=True)
    entries = [Entry(hashlib.sha256(b"%d" % i).digest(), "app" if i % 3 else "other one").encode() for i in range(20)]
    store.append_entries(entries)
    store.append_leaf_hashes([hashlib.sha256(b"bare").digest()])
    size = store.size
    signed = asyncio.run(sign_checkpoint(Checkpoint(ORIGIN, size, store.tree_hash()), [SIGNER]))
    rows = store.entries(start, end)
    want = None if source is None else source.encode()
    lines = [entry_line(i, rows.get(i), want, store.leaf_hash) for i in range(start, end)]
    proof = rangeproof.range_proof(start, end, size, store.subtree_hash)
    store.close()
    return "".join(format_bundle(start, end, source, proof, lines, signed.note.format()))


@pytest.mark.parametrize("source", [None, "app", "other one"])
def test_bundle_round_trip_verifies_and_shows_only_the_chosen_source(tmp_path, source):
    text = make_bundle(tmp_path, 2, 21, source)
    bundle = parse_bundle(text)
    bundle.verify_root()
    assert bundle.source == source and (bundle.span.start, bundle.span.end) == (2, 21)
    assert {s for _, _, s in bundle.span.records} == ({"app", "other one"} if source is None else {source})
    assert "".join(line + "\n" for line in span_lines(bundle.span)) == text.split("\n\n")[1] + "\n"


def test_a_leaf_line_in_place_of_a_shown_entry_still_verifies_but_a_changed_digest_does_not(tmp_path):
    text = make_bundle(tmp_path, 0, 21, None)
    bundle = parse_bundle(text)
    index, digest, source = bundle.span.records[4]
    leaf = bundle.span.leaves[index]
    hidden = text.replace(f"\n{index} {digest.hex()} {source}\n", f"\n{index} leaf {leaf.hex()}\n")
    parse_bundle(hidden).verify_root()
    forged = text.replace(digest.hex(), "ab" * 32)
    with pytest.raises(VerificationError, match="lead to root"):
        parse_bundle(forged).verify_root()


def test_entry_lines_out_of_order_are_refused():
    line = f"0 {'00' * 32} app"
    with pytest.raises(FormatError, match="entry line for index 1 starts with '0'"):
        parse_entry_lines([line, line], 0)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> list[str]:
    return [make_bundle(tmp_path_factory.mktemp("b"), 3, 9, source) for source in (None, "app")]


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_parsing_and_verifying_mutated_bundles_raises_only_our_errors(seeds, data):
    seed = data.draw(st.sampled_from(seeds))
    text = list(seed)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(text) - 1))
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "flip":
            text[pos] = chr(ord(text[pos]) ^ 1)
        elif op == "insert":
            text[pos:pos] = data.draw(st.sampled_from(["\n", " ", "\n\n", "0", "leaf ", "é", "\x00"]))
        else:
            del text[pos : pos + data.draw(st.integers(1, 8))]
    try:
        parse_bundle("".join(text)).verify_root()
    except (FormatError, VerificationError):
        pass
