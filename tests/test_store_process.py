"""notary/store_process.py: the writer process appends durably, holds the store alone, and dies with the daemon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from notary.entry import EntryRun
from notary.errors import StoreError
from notary.store import LogStore
from notary.store_process import StoreProcess, WriterGone, lock_path
from tests.rfc6962_reference import ReferenceTree


def test_appends_commit_and_the_indexer_follows(tmp_path):
    path = tmp_path / "log.db"
    writer = StoreProcess(path)
    try:
        assert writer.size == 0
        batches = [[b"p-%d-%d" % (b, i) for i in range(500)] for b in range(6)]
        firsts = [writer.append(batch) for batch in batches]
        assert firsts == [0, 500, 1000, 1500, 2000, 2500]
        with LogStore(path, readonly=True) as reader:  # committed: another connection sees it all
            everything = [e for batch in batches for e in batch]
            assert reader.size == 3000
            assert reader.tree_hash() == ReferenceTree(everything).root(3000)
        deadline = time.monotonic() + 10
        while writer.refresh_status().indexed < 3000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert writer.status.indexed == 3000 and writer.status.index_error is None
    finally:
        writer.close()


def test_a_second_writer_waits_for_the_lock_and_then_refuses(tmp_path):
    path = tmp_path / "log.db"
    first = StoreProcess(path)
    try:
        first.append([b"one"])
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"log store lock .*log\.db\.lock is held by another writer .* within 0\.5s"):
            StoreProcess(path, lock_timeout=0.5)
        assert time.monotonic() - started >= 0.5
        first.append([b"two"])  # the refused writer touched nothing
    finally:
        first.close()
    second = StoreProcess(path, lock_timeout=0.5)  # free once the first writer has exited
    try:
        assert second.size == 2
    finally:
        second.close()


def test_bad_store_is_refused_with_the_stores_own_message(tmp_path):
    path = tmp_path / "log.db"
    path.write_bytes(b"not a database" * 1000)
    with pytest.raises(StoreError, match="log store .* is unreadable"):
        StoreProcess(path, create=False)


def test_writer_gone_is_reported_as_such(tmp_path):
    path = tmp_path / "log.db"
    writer = StoreProcess(path)
    try:
        writer.append([b"kept"])
        os.kill(writer._process.pid, signal.SIGKILL)
        writer._process.join(10)
        with pytest.raises(WriterGone, match="writer process of log store .* (ended|is gone)"):
            writer.append([b"lost"])
    finally:
        writer.close()
    with LogStore(path) as store:
        assert store.size == 1 and store.entry(0) == b"kept"


# A daemon stand-in: starts a writer process, prints its pid, appends until killed.
PARENT = """
import sys
from notary.store_process import StoreProcess
w = StoreProcess(sys.argv[1])
print(w._process.pid, flush=True)
n = 0
while True:
    w.append([b"x-%d" % n])
    n += 1
"""


def test_writer_dies_with_a_killed_parent_and_the_next_one_takes_over(tmp_path):
    path = tmp_path / "log.db"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent))
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(path)], stdout=subprocess.PIPE, env=env, text=True)
    child = int(parent.stdout.readline())
    time.sleep(0.5)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"writer process {child} outlived its killed parent")
    assert lock_path(path).exists()
    writer = StoreProcess(path)  # takes the lock the dead writer held
    try:
        size = writer.size
        assert size > 0 and writer.append([b"after"]) == size
    finally:
        writer.close()
    with LogStore(path) as store:
        assert [store.entry(i) for i in range(size)] == [b"x-%d" % i for i in range(size)]


def test_a_long_lookup_does_not_hold_up_the_sealers_reads(tmp_path):
    """Digest lookups have a thread of their own: while one is stuck, tree heads still answer at once."""
    import asyncio
    import threading

    from notary.sequencer import LogWriter

    entries = [b"a", b"b", b"c"]

    async def main() -> None:
        writer = LogWriter(tmp_path / "log.db")
        try:
            assert await writer.append(EntryRun.group(entries)) == 0
            release = threading.Event()
            stuck = asyncio.ensure_future(writer.lookup(lambda s: release.wait(10) and s.find_by_digest(bytes(32))))
            await asyncio.sleep(0.1)  # the lookup thread is now inside it
            root = await asyncio.wait_for(writer.run(lambda s: s.tree_hash(3)), 5)
            assert root == ReferenceTree(entries).root(3)
            assert not stuck.done()
            release.set()
            assert await stuck == []
        finally:
            writer.close()

    asyncio.run(main())
