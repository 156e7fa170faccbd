"""verify-log against a bundle or a notary that shows one of the source's entries by its leaf hash alone.

A leaf hash does not say whose entry it is, and it passes the range proof all
the same: before, the file with that entry's line deleted verified CLEAN.
Now an entry of the analysed range shown only as a leaf is exit 5, naming it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib

import pytest

from notary import forensics, rangeproof
from notary.checkpoint import Checkpoint, sign_checkpoint
from notary.cli import main
from notary.cli_forensics import DaemonIndex
from notary.entry import Entry
from notary.errors import NotaryError
from notary.logbundle import entry_line, format_bundle
from notary.store import LogStore
from notary.trust import TrustedKeys
from notary.verify import EXIT_INCLUSION
from tests.support import SoftwareSigner

ORIGIN = "example.test/log"
SIGNER = SoftwareSigner.ed25519(b"\x07" * 32)
LINES = [f"line {i}" for i in range(10)]
DELETED = 5


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


@pytest.fixture
def log(tmp_path):
    """A log of the ten lines from source 'app' (and, every other index, one from 'other'), and its checkpoint."""
    store = LogStore(tmp_path / "log.db", create=True)
    for text in LINES:
        store.append_entries([Entry(digest(text), "app").encode(), Entry(digest("o" + text), "other").encode()])
    signed = asyncio.run(sign_checkpoint(Checkpoint(ORIGIN, store.size, store.tree_hash()), [SIGNER]))
    yield store, signed.note.format()
    store.close()


def lines_of(store, start, end, source: bytes | None, hide: int | None) -> list[str]:
    rows = store.entries(start, end)
    return [f"{i} leaf {store.leaf_hash(i).hex()}" if i == hide else entry_line(i, rows.get(i), source, store.leaf_hash)
            for i in range(start, end)]


def verify_with_bundle(tmp_path, capsys, store, checkpoint, *, source=None, hide=None):
    size = store.size
    bundle = tmp_path / "app.bundle"
    proof = rangeproof.range_proof(0, size, size, store.subtree_hash)
    bundle.write_text("".join(format_bundle(0, size, source, proof,
                                            lines_of(store, 0, size, None if source is None else source.encode(),
                                                     hide), checkpoint)))
    path = tmp_path / "app.log"
    path.write_text("".join(t + "\n" for i, t in enumerate(LINES) if i != DELETED))  # one line deleted
    capsys.readouterr()
    code = main(["verify-log", str(path), "--source", "app", "--bundle", str(bundle),
                 "--vkey", str(SIGNER.verifier(ORIGIN))])
    out, err = capsys.readouterr()
    return code, out, err


def test_an_honest_bundle_shows_the_deletion(tmp_path, capsys, log):
    code, out, _ = verify_with_bundle(tmp_path, capsys, *log)
    assert code == 9 and f"entry {2 * DELETED} was deleted" in out, out


def test_a_bundle_hiding_the_deleted_line_s_entry_as_a_leaf_is_refused(tmp_path, capsys, log):
    code, out, err = verify_with_bundle(tmp_path, capsys, *log, hide=2 * DELETED)
    assert code == EXIT_INCLUSION and "CLEAN" not in out, out + err  # before: 0, CLEAN
    assert f"entry {2 * DELETED} is shown only by its leaf hash" in err and "this one was hidden" in err


def test_a_bundle_filtered_to_the_source_cannot_show_that_no_line_was_deleted(tmp_path, capsys, log):
    """The other source's entries, interleaved, are leaf hashes in it: any of them could be a deleted line."""
    code, out, err = verify_with_bundle(tmp_path, capsys, *log, source="app")
    assert code == EXIT_INCLUSION and "CLEAN" not in out, out + err
    assert "the bundle is filtered to source 'app'" in err and "export the span without --source" in err


class HidingNotary:
    """Answers as a notary does (entry lines, range proofs, lookups), but shows entry ``hide`` as a leaf."""

    def __init__(self, store, checkpoint, hide):
        self.store, self.checkpoint, self.hide = store, checkpoint, hide

    def range_proof(self, start, end, size=None):
        proof = rangeproof.range_proof(start, end, self.store.size, self.store.subtree_hash)
        return {"checkpoint": self.checkpoint, "proof": [base64.b64encode(h).decode() for h in proof]}

    def entries(self, start, end, source=None):
        shown = lines_of(self.store, start, end, None if source is None else source.encode(), self.hide)
        return "".join(line + "\n" for line in shown)

    def lookup(self, digests, source=None):
        at = {digest(t): 2 * i for i, t in enumerate(LINES)}
        return {"anchored_size": self.store.size, "indices": [[at[d]] if d in at else [] for d in digests]}


def test_a_notary_hiding_the_deleted_line_s_entry_as_a_leaf_is_refused(log):
    store, checkpoint = log
    trusted = TrustedKeys.from_strings([str(SIGNER.verifier(ORIGIN))])
    file = [digest(t) for i, t in enumerate(LINES) if i != DELETED]
    assert forensics.analyse(file, DaemonIndex(HidingNotary(store, checkpoint, None), "app", trusted)).tampered
    with pytest.raises(NotaryError, match=f"entry {2 * DELETED} is shown only by its leaf hash"):
        forensics.analyse(file, DaemonIndex(HidingNotary(store, checkpoint, 2 * DELETED), "app", trusted))


def test_a_source_name_holding_a_line_separator_is_read_whole_from_the_notary(tmp_path):
    """U+2028 is valid in a source name; the entry lines were cut there (str.splitlines), failing the export."""
    from notary.cli_forensics import _fetch

    source = "app\u2028eu"
    store = LogStore(tmp_path / "sep.db", create=True)
    store.append_entries([Entry(digest(str(i)), source).encode() for i in range(4)])
    signed = asyncio.run(sign_checkpoint(Checkpoint(ORIGIN, 4, store.tree_hash()), [SIGNER]))
    _, _, span = _fetch(HidingNotary(store, signed.note.format(), None), 0, 4, None, None)
    assert [s for _, _, s in span.records] == [source] * 4
    store.close()


@pytest.mark.parametrize("doc", [
    b"[" * 100_000,  # nested past the parser's recursion limit
    ('{"format":"notary-chain/v1",' + ",".join(f'"{f}":"\\ud800"' for f in (
        "record_proof", "host_seal", "central_proof", "central_seal")) + "}").encode(),  # a lone surrogate
])
def test_a_malformed_chain_proof_is_a_format_error(doc):
    """Before: RecursionError and UnicodeEncodeError, a traceback and exit 1 from notary verify-chain."""
    from notary.errors import FormatError
    from notary.hierarchy import parse_chain

    with pytest.raises(FormatError):
        parse_chain(doc)


def test_past_the_span_a_leaf_hash_makes_the_edge_unknown_not_absent(tmp_path, capsys, log):
    """Lines cut from the end of the file are pointed at by the source's next record; a bundle that shows an
    entry past the span by its leaf hash alone could hide that record, so the edge is "unknown", never None."""
    import json

    store, checkpoint = log
    size = store.size
    proof = rangeproof.range_proof(0, size, size, store.subtree_hash)
    path = tmp_path / "cut.log"
    path.write_text("".join(t + "\n" for t in LINES[:8]))  # lines 8 and 9 cut from the end
    edges = {}
    for hide in (None, 2 * 9):
        bundle = tmp_path / f"{hide}.bundle"
        bundle.write_text("".join(format_bundle(0, size, None, proof, lines_of(store, 0, size, None, hide), checkpoint)))
        capsys.readouterr()
        code = main(["verify-log", str(path), "--source", "app", "--bundle", str(bundle), "--json",
                     "--vkey", str(SIGNER.verifier(ORIGIN))])
        report = json.loads(capsys.readouterr().out)
        assert code == 0 and report["result"] == "clean" and report["span"] == {"from": 0, "to": 15}
        edges[hide] = report["edges"]
    assert edges[None]["after"] == 16 and edges[None]["before"] is None  # line 8's entry
    assert edges[18]["after"] == "unknown"
