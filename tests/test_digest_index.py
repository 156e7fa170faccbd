"""The digest index (notary/digest_index.py): complete lookups whatever its lag, crash safety, clear errors."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from notary.digest_index import EPOCH_BITS, index_path
from notary.entry import Entry
from notary.errors import StoreError
from notary.store import LogStore, WalCheckpointer


def digest(i: int, tag: str = "d") -> bytes:
    import hashlib
    return hashlib.sha256(f"{tag}-{i}".encode()).digest()


def entries(start: int, n: int, source: str = "src") -> list[bytes]:
    return [Entry(digest(i), source).encode() for i in range(start, start + n)]


def damage_index(store_path: Path, sql: str) -> None:
    """Change the digest index file behind the store's back."""
    db = sqlite3.connect(index_path(store_path))
    db.execute(sql)
    db.commit()
    db.close()


def test_index_path_sits_beside_the_store(tmp_path):
    assert index_path(tmp_path / "log.db") == tmp_path / "log.digests.db"
    assert index_path(tmp_path / "store") == tmp_path / "store.digests"


def test_lookups_are_complete_before_during_and_after_indexing(tmp_path):
    """Indexed, partly indexed and unindexed leaves answer alike, across epochs, repeated digests included."""
    target = digest(10**6, "target")
    twin = target[:8] + bytes(24)  # same 8-byte prefix, another digest
    with LogStore(tmp_path / "log.db", create=True) as store:
        store.append_entries([Entry(target, "a").encode(), Entry(twin, "b").encode()])
        store.append_entries(entries(0, (1 << EPOCH_BITS) + 10))
        store.append_leaf_hashes([bytes(32)])  # a bare leaf has no entry to index
        store.append_entries([Entry(target, "c").encode()])
        last = store.size - 1
        expected = {target: [0, last], twin: [1], digest(5): [7], digest(1 << EPOCH_BITS): [2 + (1 << EPOCH_BITS)],
                    b"\x99" * 32: []}
        assert store.indexed == 0
        for d, want in expected.items():
            assert store.find_by_digest(d) == want
        boundaries = []
        while store.index_pending(25_000):
            boundaries.append(store.indexed)
            for d, want in expected.items():
                assert store.find_by_digest(d) == want, (store.indexed, d.hex())
        assert boundaries == [25_000, 50_000, store.size]
        assert store.index_pending() == 0
        store.verify()


@pytest.mark.parametrize("wanted", [3, 700])  # digests in the statement / looked up in Python
def test_a_lookup_of_many_digests_scans_the_unindexed_entries_once(tmp_path, wanted):
    """``find_by_digests`` answers each digest as a search of every entry would, with one pass over the unindexed ones."""
    rng = random.Random(wanted)
    log = [Entry(digest(rng.randrange(2500)), rng.choice(["a", "b"])).encode() for _ in range(4000)]  # repeats
    log += [b"\x02" + digest(7), b"", b"\x01" + digest(8)[:31]]  # not v1, or too short: never found
    log += [b"\x01" + digest(9)]  # 0x01 || digest with no source: found, as the index finds it
    log += [Entry(digest(i), "c").encode() for i in range(3000, 3400)]
    with LogStore(tmp_path / "log.db", create=True) as store:
        store.append_entries(log)
        expected: dict[bytes, list[int]] = {}
        for i, entry in enumerate(log):
            if entry[:1] == b"\x01" and len(entry) >= 33:
                expected.setdefault(entry[1:33], []).append(i)
        pool = [digest(i) for i in range(3500)] + [digest(i, "absent") for i in range(100)]
        request = rng.sample(pool, wanted - 3) + [digest(7), digest(8), digest(9)]
        request += request[: wanted // 3]  # the same digest twice in one request
        rng.shuffle(request)
        scans = []
        store._db.set_trace_callback(lambda sql: scans.append(sql) if "FROM entries WHERE idx >=" in sql else None)
        for limit in (0, 1500, 2000, None):  # unindexed, partly (twice), fully
            if limit != 0:
                store.index_pending(limit)
            scans.clear()
            answers = store.find_by_digests(request)
            assert answers == [expected.get(d, []) for d in request], store.indexed
            assert len(scans) == (store.indexed < store.size), scans
            assert all(store.find_by_digest(d) == expected.get(d, []) for d in request[:20])
        assert store.indexed == store.size
        assert store.find_by_digests([]) == []


def test_index_survives_reopen_and_follows_a_readonly_indexer(tmp_path):
    """The daemon's way: the writer appends, a read-only store of the same file indexes behind it."""
    path = tmp_path / "log.db"
    with LogStore(path, create=True) as writer, LogStore(path, readonly=True) as indexer:
        for b in range(5):
            writer.append_entries(entries(1000 * b, 1000))
            indexer.refresh()
            assert indexer.index_pending() == 1000
        assert writer.indexed == 5000
        assert writer.find_by_digest(digest(4321)) == [4321]
    with LogStore(path) as store:
        assert store.indexed == 5000
        store.append_entries(entries(5000, 10))
        assert store.indexed == 5000 and store.find_by_digest(digest(5009)) == [5009]


def test_missing_index_is_rebuilt(tmp_path):
    path = tmp_path / "log.db"
    with LogStore(path, create=True) as store:
        store.append_entries(entries(0, 3000))
        store.index_pending()
    os.remove(index_path(path))
    with LogStore(path) as store:
        assert store.indexed == 0 and store.find_by_digest(digest(2999)) == [2999]
        assert store.index_pending() == 3000
        assert store.find_by_digest(digest(2999)) == [2999]


def _copy_index(src: Path, dst: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{index_path(src)}{suffix}").exists():
            shutil.copy(f"{index_path(src)}{suffix}", f"{index_path(dst)}{suffix}")


def test_index_of_another_log_is_not_trusted_and_is_rebuilt(tmp_path):
    """An index copied from another log would hide entries: its root does not match, so it is ignored."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    a, b = tmp_path / "a" / "log.db", tmp_path / "b" / "log.db"
    with LogStore(a, create=True) as store:
        store.append_entries(entries(0, 2000, "other"))
        store.index_pending()
    with LogStore(b, create=True) as store:
        store.append_entries(entries(0, 3000))
    _copy_index(a, b)
    with LogStore(b) as store:
        assert store.indexed == 0  # not this log's: 2000 leaves of another root
        assert store.find_by_digest(digest(10)) == [10]
        assert store.index_pending() == 3000
        assert store.indexed == 3000 and store.find_by_digest(digest(10)) == [10]
        store.verify()


def test_index_longer_than_a_restored_store_is_rebuilt(tmp_path):
    """log.db restored from an older backup, the index left from the longer history: ignored, rebuilt."""
    path = tmp_path / "log.db"
    backup = tmp_path / "backup.db"
    with LogStore(path, create=True) as store:
        store.append_entries(entries(0, 1000))
    shutil.copy(path, backup)
    with LogStore(path) as store:
        store.append_entries(entries(1000, 1000))
        store.index_pending()
    os.replace(backup, path)
    with LogStore(path) as store:
        assert store.size == 1000 and store.indexed == 0
        store.append_entries(entries(5000, 1000))  # the history goes on differently
        assert store.find_by_digest(digest(1500)) == []
        assert store.find_by_digest(digest(5500)) == [1500]
        store.index_pending()
        assert store.find_by_digest(digest(5500)) == [1500]
        store.verify()


def test_unusable_index_is_a_clear_error(tmp_path):
    path = tmp_path / "log.db"
    with LogStore(path, create=True) as store:
        store.append_entries(entries(0, 100))
    index_path(path).write_bytes(b"this is not a database at all" * 100)
    with LogStore(path) as store:
        with pytest.raises(StoreError, match=r"digest index .*log\.digests\.db is unusable.*move it aside"):
            store.find_by_digest(digest(1))
        with pytest.raises(StoreError, match="digest index .* is unusable"):
            store.index_pending()


def test_version_1_store_is_read_and_upgraded(tmp_path):
    """A store written before the index had its own file: read as it is, upgraded by a writable open."""
    path = tmp_path / "log.db"
    with LogStore(path, create=True) as store:
        store.append_entries(entries(0, 2000))
        root = store.tree_hash()
    db = sqlite3.connect(path)  # what version 1 looked like: the index inside the store
    db.execute("CREATE TABLE digests (epoch INTEGER NOT NULL, prefix INTEGER NOT NULL, idx INTEGER NOT NULL, "
               "PRIMARY KEY (epoch, prefix, idx)) WITHOUT ROWID")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'version'")
    db.commit()
    db.close()
    with LogStore(path, readonly=True) as store:
        assert store.tree_hash() == root and store.find_by_digest(digest(77)) == [77]
    with LogStore(path) as store:
        assert store.find_by_digest(digest(1999)) == [1999]
        store.index_pending()
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone() == ("2",)
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'digests'").fetchone() is None
    db.close()


@pytest.mark.parametrize("damage, found", [
    ("DELETE FROM digests WHERE idx = 1234", "should index (1234,"),
    ("UPDATE digests SET prefix = x'0000000000000000' WHERE idx = 99", "should index (99,"),
    ("INSERT INTO digests VALUES (0, x'05', 1500)", "and has (1500, b'\\x05')"),
])
def test_verify_finds_a_damaged_index(tmp_path, damage, found):
    path = tmp_path / "log.db"
    with LogStore(path, create=True) as store:
        store.append_entries(entries(0, 3000))
        store.index_pending()
        store.verify()
    damage_index(path, damage)
    with LogStore(path) as store:
        with pytest.raises(StoreError, match=r"digest index .* is damaged: .*" + re.escape(found)):
            store.verify()


# Says "open" once the store is open, then indexes it, printing the boundary after each commit.
INDEXER = """
import sys
from notary.store import LogStore
store = LogStore(sys.argv[1], readonly=True)
print("open", flush=True)
while store.index_pending(700):
    print(store.indexed, flush=True)
"""


def test_kill_mid_indexing_keeps_index_and_boundary_together(tmp_path):
    """SIGKILL while indexing: the index never covers less than it said, never holds rows past its boundary."""
    path = tmp_path / "log.db"
    with LogStore(path, create=True) as store:
        store.append_entries(entries(0, 60_000))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent))
    rng = random.Random(9162)
    said = 0
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", INDEXER, str(path)], stdout=subprocess.PIPE, env=env, text=True)
        # The random moment counts from the open store, not from the interpreter's start.
        assert proc.stdout.readline().strip() == "open", "the indexer did not open the store"
        time.sleep(rng.uniform(0.3, 0.9))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        if out.split():
            said = int(out.split()[-1])
        with LogStore(path, readonly=True) as store:
            assert said <= store.indexed <= said + 700 or store.indexed == store.size
            said = store.indexed
            store.verify()  # rows exactly those of the leaves below the boundary
    assert said > 2000, "the indexer never got going; the test proved nothing"


def test_checkpointer_copies_the_wal_beside_the_commits_and_the_wal_stays_bounded(tmp_path):
    """The checkpointer copies frames while commits go on; the writer's own checkpoint lets the WAL start over."""
    path = tmp_path / "log.db"
    wal = Path(f"{path}-wal")
    page = 8192
    with LogStore(path, create=True, wal_autocheckpoint=300) as store:
        checkpointer = WalCheckpointer(path)
        stop = threading.Event()
        copied = []

        def loop() -> None:
            while not stop.wait(0.02):
                copied.append(checkpointer.checkpoint()[1])

        thread = threading.Thread(target=loop)
        thread.start()
        try:
            peak = 0
            for b in range(300):
                store.append_entries(entries(1000 * b, 1000))
                peak = max(peak, wal.stat().st_size)
        finally:
            stop.set()
            thread.join()
            checkpointer.close()
        assert sum(copied) > 1000, "the checkpointer copied next to nothing"
        # One commit writes about 15 pages: never much past the 300-page restart point.
        assert peak < 400 * page, f"the WAL grew to {peak // page} pages"
        assert store.size == 300_000
        store.verify()
    db = sqlite3.connect(path)  # everything reached the database file itself
    assert db.execute("SELECT count(*) FROM entries").fetchone() == (300_000,)
    db.close()


def test_checkpointer_alone_starts_the_wal_over_while_commits_keep_coming(tmp_path):
    """The writer process's checkpoint thread, paced as in the daemon, lets the WAL start over between commits.

    The writer's own automatic checkpoint is off here, so every start-over
    is the checkpointer's doing. Each start-over moves the checkpoint
    sequence number in the WAL header (bytes 12-15; sqlite.org/fileformat2).
    Passes every 0.25 s made 2 in 300 commits; every 20 ms, 40-53 (with or
    without three CPU-bound processes beside it).
    """
    from notary import store_process

    path = tmp_path / "log.db"
    wal = Path(f"{path}-wal")
    with LogStore(path, create=True, wal_autocheckpoint=0) as store:
        helpers = store_process._Helpers(path)
        try:
            sequences = set()
            for b in range(300):
                store.append_entries(entries(1000 * b, 1000))
                with open(wal, "rb") as f:
                    sequences.add(int.from_bytes(f.read(16)[12:16], "big"))
                time.sleep(0.005)  # a commit every few milliseconds, as at 140k entries/s
        finally:
            helpers.close()
        assert helpers.checkpoint_failures == 0
        assert len(sequences) - 1 >= 10, f"the WAL started over {len(sequences) - 1} times in 300 commits"
        assert store.size == 300_000
        store.verify()
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM entries").fetchone() == (300_000,)
    db.close()


def test_verify_beside_a_writer_never_holds_the_wal_and_checks_the_tree_it_started_with(tmp_path, monkeypatch):
    """``notary check-store`` on a live daemon: the writer's checkpoints get past it, so the WAL cannot grow with the ingest."""
    import notary.store

    path = tmp_path / "log.db"
    writer = LogStore(path, create=True)
    writer.append_entries(entries(0, 6000))
    monkeypatch.setattr(notary.store, "_VERIFY_PAGE", 512, raising=False)
    checker = LogStore(path, readonly=True)
    leaf_hash, calls, checkpoints = notary.store.merkle.leaf_hash, [0], []

    def leaf_hash_and_meanwhile_append(data: bytes) -> bytes:
        calls[0] += 1
        if calls[0] % 1000 == 0 and writer.size < 30_000:  # the daemon appends while the check runs
            monkeypatch.setattr(notary.store.merkle, "leaf_hash", leaf_hash)
            writer.append_entries(entries(writer.size, 2000))
            checkpoints.append(writer._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())
            monkeypatch.setattr(notary.store.merkle, "leaf_hash", leaf_hash_and_meanwhile_append)
        return leaf_hash(data)

    monkeypatch.setattr(notary.store.merkle, "leaf_hash", leaf_hash_and_meanwhile_append)
    try:
        assert checker.verify() == 6000
    finally:
        monkeypatch.setattr(notary.store.merkle, "leaf_hash", leaf_hash)
        checker.close()
    assert len(checkpoints) >= 5
    # (busy, WAL frames, frames copied): a reader holding one snapshot through the check makes these busy.
    assert all(busy == 0 for busy, _, _ in checkpoints), checkpoints
    assert os.path.getsize(f"{path}-wal") == 0
    with LogStore(path, readonly=True) as again:
        assert again.verify() == writer.size
    writer.close()


def test_verify_checks_an_index_that_a_running_daemon_moved_past_the_size_it_started_with(tmp_path):
    path = tmp_path / "log.db"
    with LogStore(path, create=True) as store:
        store.append_entries(entries(0, 3000))
    checker = LogStore(path, readonly=True)  # opened at 3000 entries
    with LogStore(path) as store:  # then the daemon appends and indexes on
        store.append_entries(entries(3000, 1000))
        store.index_pending()
    damage_index(path, "DELETE FROM digests WHERE idx = 1234")
    try:
        with pytest.raises(StoreError, match=r"digest index .* is damaged: .*should index \(1234,"):
            checker.verify()
    finally:
        checker.close()


def test_verify_checks_the_index_even_when_the_daemon_indexes_on_while_it_looks(tmp_path, caplog):
    path = tmp_path / "log.db"
    writer = LogStore(path, create=True)
    writer.append_entries(entries(0, 1000))
    writer.index_pending()
    checker = LogStore(path, readonly=True)  # opened at 1000 entries
    writer.append_entries(entries(1000, 1000))
    writer.index_pending()
    refresh = checker.refresh

    def refresh_then_more() -> int:
        size = refresh()
        writer.append_entries(entries(writer.size, 1000))  # and again, right after the check caught up
        writer.index_pending()
        return size

    checker.refresh = refresh_then_more
    damage_index(path, "DELETE FROM digests WHERE idx = 1500")
    try:
        with pytest.raises(StoreError, match=r"digest index .* is damaged: .*should index \(1500,"):
            checker.verify()
        assert "not this log" not in caplog.text
    finally:
        checker.close()
        writer.close()
