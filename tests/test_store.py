"""notary.store: durability, reopening, and clear errors on a bad store."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from notary import merkle
from notary.entry import EntryRun
from notary.errors import StoreError
from notary.store import LogStore
from tests.rfc6962_reference import ReferenceTree

BATCH = 2000


def batch_entries(b: int) -> list[bytes]:
    return [b"batch-%d-entry-%d" % (b, j) for j in range(BATCH)]


# A writer that says "open" once the store is open, then appends numbered batches
# forever and prints the size after each commit.
WRITER = """
import sys
from notary.store import LogStore
from tests.test_store import batch_entries
store = LogStore(sys.argv[1], create=True)
print("open", flush=True)
b = store.size // {batch}
while True:
    store.append_entries(batch_entries(b))
    b += 1
    print(store.size, flush=True)
""".format(batch=BATCH)


def test_kill_mid_append_keeps_exactly_committed_batches(tmp_path):
    """SIGKILL at random moments: the store holds every acknowledged batch, whole, and nothing torn."""
    path = tmp_path / "log.db"
    rng = random.Random(6962)
    acknowledged = 0
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent))
    for round_ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, env=env, text=True)
        # Kill only once the store is open: on a slow machine the interpreter's
        # start alone can outlast the shortest sleep, and the file would not exist.
        first = proc.stdout.readline().strip()
        assert first == "open", f"round {round_}: the writer did not open the store (said {first!r})"
        time.sleep(rng.uniform(0.3, 1.2))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        sizes = [int(line) for line in out.split()]
        if sizes:
            acknowledged = sizes[-1]
        with LogStore(path) as store:
            # Whole batches only, at least everything acknowledged, at most one
            # batch committed but killed before it could say so.
            assert store.size % BATCH == 0, f"round {round_}: torn batch, size {store.size}"
            assert acknowledged <= store.size <= acknowledged + BATCH, (round_, acknowledged, store.size)
            acknowledged = store.size
    assert acknowledged >= 3 * BATCH, "the writer never got going; the test proved nothing"
    entries = [e for b in range(acknowledged // BATCH) for e in batch_entries(b)]
    ref = ReferenceTree(entries)
    with LogStore(path) as store:
        assert store.tree_hash() == ref.root(len(entries))
        for index in rng.sample(range(len(entries)), 50):
            assert store.entry(index) == entries[index]
            merkle.verify_inclusion(merkle.leaf_hash(entries[index]), index, store.size,
                                    store.inclusion_proof(index), ref.root(len(entries)))
        old = rng.randrange(1, store.size)
        merkle.verify_consistency(old, store.size, ref.root(old), store.tree_hash(), store.consistency_proof(old))


def test_reopened_store_answers_the_same(tmp_path):
    path = tmp_path / "log.db"
    with LogStore(path, create=True) as store:
        store.append_entries([b"a%d" % i for i in range(1000)])
        store.append_leaf_hashes([merkle.leaf_hash(b"h%d" % i) for i in range(37)])
        root, proof, cproof = store.tree_hash(), store.inclusion_proof(500), store.consistency_proof(999)
    with LogStore(path, readonly=True) as store:
        assert store.size == 1037
        assert (store.tree_hash(), store.inclusion_proof(500), store.consistency_proof(999)) == (root, proof, cproof)
        assert store.entry(999) == b"a999"
        assert store.entry(1000) is None  # appended as a precomputed leaf hash
        assert store.leaf_hash(1000) == merkle.leaf_hash(b"h0")


def test_empty_store_has_the_empty_root(tmp_path):
    with LogStore(tmp_path / "log.db", create=True) as store:
        assert store.size == 0
        assert store.tree_hash() == merkle.EMPTY_ROOT
        assert store.append_entries([]) == 0


def test_append_returns_first_index(tmp_path):
    with LogStore(tmp_path / "log.db", create=True) as store:
        assert store.append_entries([b"x"] * 5) == 0
        assert store.append_leaf_hashes([b"\x00" * 32] * 3) == 5
        assert store.append_entries([b"y"]) == 8


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="no log store at .*nope.db"):
        LogStore(tmp_path / "nope.db")


def test_file_that_is_not_a_database_is_refused(tmp_path):
    path = tmp_path / "log.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="unreadable"):
        LogStore(path)


def test_other_sqlite_database_is_refused(tmp_path):
    path = tmp_path / "log.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(StoreError, match="not a merkle-notary log store"):
        LogStore(path)


def test_newer_format_version_is_refused(tmp_path):
    path = tmp_path / "log.db"
    LogStore(path, create=True).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'version'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="format version 99"):
        LogStore(path)


def _corrupt(path: Path, sql: str, *args) -> None:
    db = sqlite3.connect(path)
    db.execute(sql, args)
    db.commit()
    db.close()


def _store_with(path: Path, n: int) -> None:
    _store_with_entries(path, [b"e%d" % i for i in range(n)])


def _store_with_entries(path: Path, entries: list[bytes]) -> None:
    with LogStore(path, create=True) as store:
        store.append_entries(entries)


def test_missing_upper_tile_is_detected_at_open(tmp_path):
    path = tmp_path / "log.db"
    _store_with(path, 5000)
    _corrupt(path, "DELETE FROM tiles WHERE id = (SELECT max(id) FROM tiles)")
    with pytest.raises(StoreError, match="corrupt: tile level"):
        LogStore(path)


def test_truncated_leaf_tile_is_detected_at_open(tmp_path):
    path = tmp_path / "log.db"
    _store_with(path, 100)
    _corrupt(path, "UPDATE tiles SET hashes = substr(hashes, 1, 40) WHERE id = (SELECT max(id) FROM tiles WHERE id < (1 << 48))")
    with pytest.raises(StoreError, match="corrupt: leaf tile"):
        LogStore(path)


def test_missing_inner_tile_is_a_clear_error_when_read(tmp_path):
    path = tmp_path / "log.db"
    _store_with(path, 100)
    _corrupt(path, "DELETE FROM tiles WHERE id = 2")
    with LogStore(path) as store:
        with pytest.raises(StoreError, match="missing tile 2 of level 0"):
            store.inclusion_proof(40)


def test_second_writer_is_detected_and_nothing_is_lost(tmp_path):
    path = tmp_path / "log.db"
    a = LogStore(path, create=True)
    b = LogStore(path)
    a.append_entries([b"from a"])
    with pytest.raises(StoreError, match="appended to by another writer"):
        b.append_entries([b"from b"])
    assert b.refresh() == 1
    b.append_entries([b"from b"])
    a.close()
    b.close()
    with LogStore(path) as store:
        assert [store.entry(0), store.entry(1)] == [b"from a", b"from b"]


def test_read_only_store_refuses_to_append(tmp_path):
    path = tmp_path / "log.db"
    _store_with(path, 3)
    with LogStore(path, readonly=True) as store:
        with pytest.raises(StoreError, match="nothing was appended"):
            store.append_entries([b"x"])
        assert store.size == 3


def test_bad_leaf_hash_is_refused_before_anything_is_written(tmp_path):
    with LogStore(tmp_path / "log.db", create=True) as store:
        with pytest.raises(StoreError, match="leaf hash 1 of the batch is not 32 bytes"):
            store.append_leaf_hashes([b"\x00" * 32, b"\x00" * 31])
        assert store.size == 0


@pytest.mark.parametrize("call", [
    lambda s: s.tree_hash(11),
    lambda s: s.inclusion_proof(10),
    lambda s: s.inclusion_proof(3, 11),
    lambda s: s.consistency_proof(5, 11),
    lambda s: s.consistency_proof(6, 5),
    lambda s: s.entry(-1),
])
def test_requests_outside_the_log_are_clear_errors(tmp_path, call):
    path = tmp_path / "log.db"
    _store_with(path, 10)
    with LogStore(path) as store:
        with pytest.raises(StoreError, match="not in|no consistency proof"):
            call(store)


def test_find_by_digest_across_epochs(tmp_path):
    """Lookups see every entry holding a digest, in log order, whichever epoch of the index it is in."""
    from notary.entry import Entry
    from notary.digest_index import EPOCH_BITS

    target = bytes.fromhex("42" * 32)
    twin = bytes.fromhex("42" * 8 + "00" * 24)  # same 8-byte prefix, another digest
    filler = [Entry(i.to_bytes(32, "big"), "filler").encode() for i in range((1 << EPOCH_BITS) + 10)]
    with LogStore(tmp_path / "log.db", create=True) as store:
        store.append_entries([Entry(target, "a").encode(), Entry(twin, "b").encode()])
        store.append_entries(filler)
        store.append_leaf_hashes([merkle.leaf_hash(Entry(target, "hash-only").encode())])
        store.append_entries([Entry(target, "c").encode()])
        last = store.size - 1
        assert store.find_by_digest(target) == [0, last]
        assert store.find_by_digest(twin) == [1]
        assert store.find_by_digest(b"\x99" * 32) == []


def test_verify_accepts_an_untouched_store(tmp_path):
    path = tmp_path / "log.db"
    with LogStore(path, create=True) as store:
        for b in range(7):
            store.append_entries([b"v-%d-%d" % (b, i) for i in range(1000 + b)])
        store.append_leaf_hashes([merkle.leaf_hash(b"bare")] * 5)
        assert store.verify() == store.size


def test_verify_finds_an_entry_rewritten_with_its_leaf_hash_untouched(tmp_path):
    path = tmp_path / "log.db"
    _store_with(path, 5000)
    _corrupt(path, "UPDATE entries SET entry = ? WHERE idx = 4321", b"forged")
    with LogStore(path) as store:
        with pytest.raises(StoreError, match="entry 4321 does not match its stored leaf hash"):
            store.verify()


def test_verify_finds_an_entry_and_leaf_hash_rewritten_together(tmp_path):
    """The tamperer fixed the leaf hash too: the node above it no longer matches."""
    path = tmp_path / "log.db"
    _store_with(path, 5000)
    db = sqlite3.connect(path)
    (tile,) = db.execute("SELECT hashes FROM tiles WHERE id = ?", (4321 // 16,)).fetchone()
    offset = (4321 % 16) * 32
    tile = tile[:offset] + merkle.leaf_hash(b"forged") + tile[offset + 32:]
    db.execute("UPDATE tiles SET hashes = ? WHERE id = ?", (tile, 4321 // 16))
    db.execute("UPDATE entries SET entry = ? WHERE idx = 4321", (b"forged",))
    db.commit()
    db.close()
    with LogStore(path) as store:
        with pytest.raises(StoreError, match=r"leaves \[4320, 4336\) at tree level 4 is not the hash of its children"):
            store.verify()


def _sealed_at(data_dir: Path, size: int) -> None:
    """A seals.db as the daemon writes it: the seal of ``size``, its checkpoint signed (in memory)."""
    import asyncio

    from notary.checkpoint import Checkpoint, sign_checkpoint
    from notary.seals import Seal, SealDB
    from tests.support import SoftwareSigner

    with LogStore(data_dir / "log.db", readonly=True) as store:
        root = store.tree_hash(size)

    async def seal() -> None:
        signed = await sign_checkpoint(Checkpoint("example.com/log", size, root), [SoftwareSigner.ed25519(b"k" * 32)])
        seals = SealDB(data_dir / "seals.db")
        try:
            await seals.add(Seal(size, root, signed.encode(), 0, (), "2026-01-01T00:00:00Z"))
        finally:
            seals.close()

    asyncio.run(seal())


def test_check_store_command(tmp_path, capsys):
    from notary.cli import main

    _store_with(tmp_path / "log.db", 300)
    _sealed_at(tmp_path, 300)
    assert main(["check-store", str(tmp_path)]) == 0
    assert "OK: 300 entries and their tree recomputed; 1 seals agree" in capsys.readouterr().out
    _corrupt(tmp_path / "log.db", "UPDATE entries SET entry = ? WHERE idx = 7", b"forged")
    assert main(["check-store", str(tmp_path)]) == 9
    assert "entry 7 does not match its stored leaf hash" in capsys.readouterr().err


def test_check_store_without_seal_records_fails(tmp_path, capsys):
    """A log rewritten whole (entries and nodes) is consistent in itself: only the seals can show it, so a data
    directory without seals.db (removed to hide that) fails the check instead of passing on the tree alone."""
    from notary.cli import main

    _store_with(tmp_path / "log.db", 300)
    assert main(["check-store", str(tmp_path)]) == 9
    assert "seals.db does not exist: no seal can be checked" in capsys.readouterr().err


def test_check_store_checks_the_signed_checkpoint_not_only_the_root_column(tmp_path, capsys):
    """Rewriting the log and the plain root_hash column of seals.db alike is found: the signed checkpoint still
    names the original root."""
    from notary.cli import main

    _store_with(tmp_path / "log.db", 300)
    _sealed_at(tmp_path, 300)
    _corrupt(tmp_path / "log.db", "UPDATE entries SET entry = ? WHERE idx = 0", b"forged")
    with LogStore(tmp_path / "log.db") as store:  # the forger recomputes the whole tree from the forged entries
        entries = [store.entry(i) for i in range(300)]
    (tmp_path / "log.db").unlink()
    _store_with_entries(tmp_path / "log.db", entries)
    with LogStore(tmp_path / "log.db", readonly=True) as store:
        forged_root = store.tree_hash(300)
    _corrupt(tmp_path / "seals.db", "UPDATE seals SET root_hash = ?", forged_root)
    assert main(["check-store", str(tmp_path)]) == 9
    assert "seal 300: seals.db gives root" in capsys.readouterr().err


def test_check_store_reports_unreadable_seal_records_in_one_sentence(tmp_path, capsys):
    from notary.cli import main

    _store_with(tmp_path / "log.db", 3)
    (tmp_path / "seals.db").write_bytes(b"not a database" * 100)
    assert main(["check-store", str(tmp_path)]) == 9  # not a traceback
    assert "cannot be read: file is not a database" in capsys.readouterr().err


def test_check_store_tells_a_wrong_directory_or_user_from_a_finding(tmp_path, capsys, monkeypatch):
    """Monitoring on the weekly unit must tell "the store is damaged" (9) from "the check did not run" (1, 2)."""
    from notary.cli import main

    assert main(["check-store", str(tmp_path / "nowhere")]) == 2
    assert "is not a directory: give the daemon's data_dir" in capsys.readouterr().err
    assert main(["check-store", str(tmp_path)]) == 2
    assert "holds no log.db: it is not a daemon's data_dir" in capsys.readouterr().err
    _store_with(tmp_path / "log.db", 3)
    _sealed_at(tmp_path, 3)
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as another user than the daemon's (tests run as root)
    assert main(["check-store", str(tmp_path)]) == 1
    assert "cannot be read as this user" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(["check-store", str(tmp_path)]) == 0
    (tmp_path / "log.db").write_bytes(b"not a database" * 1000)  # damaged beyond SQLite's reading: a finding
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp_path / 'log.db'}{suffix}").unlink(missing_ok=True)
    assert main(["check-store", str(tmp_path)]) == 9
    assert "is unreadable" in capsys.readouterr().err


def test_the_weekly_check_unit_checks_the_daemon_data_dir_as_its_user():
    import shlex

    from notary.cli import build_parser

    root = Path(__file__).resolve().parents[1] / "config"

    def settings(name: str) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for line in (root / name).read_text().replace("\\\n", " ").splitlines():
            if "=" in line and not line.startswith("#"):
                key, value = line.split("=", 1)
                found.setdefault(key, []).append(value)
        return found

    daemon, check, timer = (settings(name) for name in ("merkle-notary.service", "merkle-notary-check.service",
                                                        "merkle-notary-check.timer"))
    command = shlex.split(check["ExecStart"][0])
    args = build_parser().parse_args(command[1:])
    assert command[0] == shlex.split(daemon["ExecStart"][0])[0]  # the daemon's own installation
    assert args.command == "check-store" and args.data_dir == Path("/var/lib") / daemon["StateDirectory"][0]
    assert check["User"] == daemon["User"] and check["Type"] == ["oneshot"]
    assert check["ReadWritePaths"] == daemon["ReadWritePaths"]  # SQLite writes log.db-shm to read beside the writer
    assert timer["OnCalendar"] == ["Sun *-*-* 04:00:00 UTC"] and timer["Persistent"] == ["yes"]


@pytest.mark.parametrize("shape", ["one run", "a few runs", "every length differs"])
def test_entries_of_mixed_lengths_read_back_exactly(tmp_path, shape):
    """Appends insert runs of equal length as one statement, or row by row when runs are short: same result."""
    if shape == "one run":
        batch = [b"%08d" % i for i in range(1000)]
    elif shape == "a few runs":
        batch = [b"a" * 40 + b"%04d" % i for i in range(300)] + [b"short"] + [b"b" * 7 + b"%03d" % i for i in range(500)]
    else:
        batch = [b"x" * (i % 97) + b"%d" % i for i in range(600)]
    path = tmp_path / "log.db"
    with LogStore(path, create=True) as store:
        store.append_entries([b"before"])
        assert store.append_entries(batch) == 1
        store.append_entries([b"after"])
        assert store.entries(0, store.size) == dict(enumerate([b"before", *batch, b"after"]))
        assert store.tree_hash() == ReferenceTree([b"before", *batch, b"after"]).root(len(batch) + 2)
        store.verify()


def test_runs_of_a_group_commit_append_like_their_entries(tmp_path):
    """The daemon appends submissions as runs; neighbours of one width are joined, short runs go row by row: same log."""
    subs = [[b"a" * 37 + b"%03d" % i for i in range(200)], [b"b" * 40], [b"c" * 40 + b"%d" % i for i in range(3)],
            [b"d" * 37 + b"%03d" % i for i in range(50)], [b"e" * 37 + b"%03d" % i for i in range(60)]]
    flat = [e for sub in subs for e in sub]
    with LogStore(tmp_path / "log.db", create=True) as store:
        assert store.append_runs([run for sub in subs for run in EntryRun.group(sub)]) == 0
        assert store.entries(0, store.size) == dict(enumerate(flat))
        assert store.tree_hash() == ReferenceTree(flat).root(len(flat))
        store.verify()


def test_empty_entries_append_as_a_run(tmp_path):
    """The store takes any entries, empty ones too (an RFC 6962 test vector has one), in runs of width 0."""
    batch = [b"", b"", b"x", b"", *[b""] * 10]
    with LogStore(tmp_path / "log.db", create=True) as store:
        store.append_entries(batch)
        assert store.entries(0, store.size) == dict(enumerate(batch))
        assert store.tree_hash() == ReferenceTree(batch).root(len(batch))


@pytest.mark.parametrize("damage", ["DELETE FROM tiles WHERE id = 47",
                                    "UPDATE tiles SET hashes = substr(hashes, 1, 64) WHERE id = 2"])
def test_verify_names_a_missing_or_short_tile(tmp_path, damage):
    """A tile gone from the middle of a level (with no entries to notice it first) is a clear error, not a traceback."""
    path = tmp_path / "log.db"
    with LogStore(path, create=True) as store:  # leaf hashes only: verify reads the tiles alone
        store.append_leaf_hashes([merkle.leaf_hash(b"%d" % i) for i in range(16 * 48 + 5)])
    _corrupt(path, damage)
    with LogStore(path) as store:
        with pytest.raises(StoreError, match=r"corrupt: tile \d+ of level 0 is missing or short"):
            store.verify()


def test_opening_beside_a_writer_reads_one_snapshot(tmp_path, monkeypatch):
    """The size and the shape of the tiles are read together: an append between them is no 'corrupt' store."""
    path = tmp_path / "log.db"
    writer = LogStore(path, create=True)
    writer.append_entries([b"e%d" % i for i in range(100)])
    read_size = LogStore._read_size

    def size_then_an_append(self):
        size = read_size(self)
        if self is not writer:
            writer.append_entries([b"x"])  # the daemon commits right after the size was read
        return size

    monkeypatch.setattr(LogStore, "_read_size", size_then_an_append)
    with LogStore(path, readonly=True) as reader:
        assert reader.size == 100
    writer.close()
