"""Durable sequencing with group commit.

``submit`` returns an entry's index only after the append that holds it has
committed (SQLite WAL, synchronous=FULL): an acknowledged entry survives any
crash. Submissions that arrive while a commit is in flight wait together and
share the next one, so many submissions share one fsync.

The store is owned by one thread (``LogWriter``); every store operation, the
appends and the reads the sealer needs, runs there in order. Two helpers
work beside it on connections of their own, so that an acknowledgement waits
for neither: a ``WalCheckpointer`` thread copies the write-ahead log back into
the database, and the ``DigestIndexer`` builds the digest index (a file of
its own) behind the commits. Neither holds the log's write lock.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from notary.errors import NotaryError
from notary.store import LogStore, WalCheckpointer

log = logging.getLogger("notary")

T = TypeVar("T")

# One commit takes at most this many entries, so a burst cannot make one
# transaction (and the memory it holds) unbounded.
MAX_COMMIT_ENTRIES = 50_000
# The checkpointer copies the WAL back this often (at 100k entries/s about
# 25 commits, 2-3 MB), beside the commits. It cannot start the WAL over while
# commits keep coming, so the writer's own checkpoint still runs once the WAL
# reaches WAL_RESTART_PAGES (16 MiB): by then it finds nearly everything
# copied, pays for one fsync of the database file instead of the whole copy,
# and the next commit starts the WAL from the beginning.
CHECKPOINT_INTERVAL = 0.25
WAL_RESTART_PAGES = 2048
# Leaves the indexer adds to the digest index in one transaction, and how
# long it lets entries gather between transactions (each has a fixed cost;
# lookups scan what it has not reached, about INDEX_INTERVAL's worth).
INDEX_CHUNK = 20_000
INDEX_INTERVAL = 0.1
INDEX_BACKOFF_MAX = 30.0


class Overloaded(NotaryError):
    """Too much is waiting to be made durable or anchored: retry later."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class LogWriter:
    """The store on its own thread: all store calls are serialized there."""

    def __init__(self, path: Path, *, create: bool = True):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self.store: LogStore = self._executor.submit(
            lambda: LogStore(path, create=create, wal_autocheckpoint=WAL_RESTART_PAGES)).result()
        self._checkpointer = WalCheckpointer(path)
        self._stop = threading.Event()
        self.checkpoint_failures = 0
        self._thread = threading.Thread(target=self._checkpoint_loop, name="wal-checkpoint", daemon=True)
        self._thread.start()

    def _checkpoint_loop(self) -> None:
        while not self._stop.wait(CHECKPOINT_INTERVAL):
            try:
                self._checkpointer.checkpoint()
            except Exception as exc:  # the writer's own checkpoint keeps the WAL bounded
                self.checkpoint_failures += 1
                log.warning("checkpointing the log store's write-ahead log failed: %s", exc)

    async def run(self, fn: Callable[[LogStore], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self.store)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._checkpointer.close()
        self._executor.submit(self.store.close).result()
        self._executor.shutdown()


class DigestIndexer:
    """Builds the digest index behind the commits: its own thread, its own read-only store.

    Lookups stay complete whatever its lag (``LogStore.find_by_digest`` scans
    the entries past the index); the lag only makes them slower, and
    ``notary_digest_index_lag_entries`` shows it. Opening checks the index
    file: an unusable one stops the daemon's start with an error naming it.
    """

    def __init__(self, path: Path):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="indexer")
        self.store: LogStore = self._executor.submit(self._open, path).result()
        self.indexed = self.store.indexed
        self.failures = 0
        self.last_error: str | None = None
        self._wakeup = asyncio.Event()

    @staticmethod
    def _open(path: Path) -> LogStore:
        store = LogStore(path, readonly=True)
        try:
            store.index_pending(0)  # opens (or creates) the index file and checks it belongs to this log
        except BaseException:
            store.close()
            raise
        return store

    def poke(self, size: int = 0) -> None:
        self._wakeup.set()

    def _step(self) -> int:
        self.store.refresh()
        added = self.store.index_pending(INDEX_CHUNK)
        self.indexed = self.store.indexed
        return added

    async def run(self, stopping: asyncio.Event) -> None:
        """Index until ``stopping``; what is left is indexed at the next start."""
        loop = asyncio.get_running_loop()
        backoff = 0.5
        stop = asyncio.ensure_future(stopping.wait())
        try:
            while not stopping.is_set():
                self._wakeup.clear()
                try:
                    added = await loop.run_in_executor(self._executor, self._step)
                    backoff, self.last_error = 0.5, None
                except Exception as exc:  # lookups scan what is not indexed: log and retry
                    self.failures += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.error("building the digest index failed, retrying in %.1fs: %s", backoff, exc)
                    await asyncio.wait([stop], timeout=backoff)
                    backoff = min(backoff * 2, INDEX_BACKOFF_MAX)
                    continue
                if not added:
                    wake = asyncio.ensure_future(self._wakeup.wait())
                    await asyncio.wait([wake, stop], return_when=asyncio.FIRST_COMPLETED)
                    wake.cancel()
                elif added < INDEX_CHUNK:
                    await asyncio.wait([stop], timeout=INDEX_INTERVAL)
        finally:
            stop.cancel()

    def close(self) -> None:
        self._executor.submit(self.store.close).result()
        self._executor.shutdown()


class Sequencer:
    def __init__(self, writer: LogWriter, max_pending: int):
        self._writer = writer
        self._max_pending = max_pending
        self._pending: deque[tuple[Sequence[bytes], asyncio.Future[int]]] = deque()
        self._pending_entries = 0
        self._wakeup = asyncio.Event()
        self._closed = False
        self.size = writer.store.size  # committed entries
        self.last_commit = time.monotonic()
        self.commits = 0
        self.committed_entries = 0
        self.on_commit: list[Callable[[int], None]] = []  # called with the new size after each commit

    @property
    def pending_entries(self) -> int:
        return self._pending_entries

    async def submit(self, entries: Sequence[bytes]) -> int:
        """Append ``entries``; return the index of the first once they are durable."""
        if self._closed:
            raise Overloaded("the notary is shutting down and accepts no new entries", retry_after=5)
        if self._pending_entries + len(entries) > self._max_pending:
            raise Overloaded(
                f"{self._pending_entries} entries are waiting to be written (limit {self._max_pending}); retry later"
            )
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((entries, future))
        self._pending_entries += len(entries)
        self._wakeup.set()
        return await future

    def close(self) -> None:
        """Refuse new submissions; those already accepted are still committed by ``run``."""
        self._closed = True
        self._wakeup.set()

    async def run(self) -> None:
        """Commit pending submissions until closed and drained."""
        while True:
            if not self._pending:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch, count = [], 0
            while self._pending and (not batch or count + len(self._pending[0][0]) <= MAX_COMMIT_ENTRIES):
                item = self._pending.popleft()
                batch.append(item)
                count += len(item[0])
            entries = [e for sub, _ in batch for e in sub]
            try:
                first = await self._writer.run(lambda store: store.append_entries(entries))
            except Exception as exc:  # nothing was appended: every waiter learns it
                self._pending_entries -= count
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self._pending_entries -= count
            self.size = first + len(entries)
            self.commits += 1
            self.committed_entries += len(entries)
            self.last_commit = time.monotonic()
            offset = first
            for sub, future in batch:
                if not future.done():  # a cancelled waiter's entries are durable all the same
                    future.set_result(offset)
                offset += len(sub)
            for listener in self.on_commit:
                listener(self.size)
