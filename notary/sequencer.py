"""Durable sequencing with group commit.

``submit`` returns an entry's index only after the append that holds it has
committed (SQLite WAL, synchronous=FULL): an acknowledged entry survives any
crash. Submissions that arrive while a commit is in flight wait together and
share the next one, so many submissions share one fsync.

The store is owned by one thread (``LogWriter``); every store operation, the
appends and the reads the sealer needs, runs there in order.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from notary.errors import NotaryError
from notary.store import LogStore

T = TypeVar("T")

# One commit takes at most this many entries, so a burst cannot make one
# transaction (and the memory it holds) unbounded.
MAX_COMMIT_ENTRIES = 50_000


class Overloaded(NotaryError):
    """Too much is waiting to be made durable or anchored: retry later."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class LogWriter:
    """The store on its own thread: all store calls are serialized there."""

    def __init__(self, path: Path, *, create: bool = True):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self.store: LogStore = self._executor.submit(LogStore, path, create=create).result()

    async def run(self, fn: Callable[[LogStore], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self.store)

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
        self.on_commit: Callable[[int], None] = lambda size: None

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
            self.on_commit(self.size)
