"""Durable sequencing with group commit.

``submit`` returns an entry's index only after the append that holds it has
committed (SQLite WAL, synchronous=FULL): an acknowledged entry survives any
crash. Submissions that arrive while a commit is in flight wait together and
share the next one, so many submissions share one fsync.

Appends go to the store's writer process (``LogWriter``, notary/store_process.py),
which also checkpoints the write-ahead log and builds the digest index beside
the commits, so that an acknowledgement waits for neither. Reads (the sealer's
tree heads and proofs, the auditors' answers) run in order on a read thread
of the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from notary.entry import EntryRun
from notary.errors import NotaryError
from notary.store import LogStore
from notary.store_process import StoreProcess, WriterGone, WriterStatus

T = TypeVar("T")

log = logging.getLogger("notary.sequencer")

# One commit takes at most this many entries, so a burst cannot make one
# transaction (and the memory it holds) unbounded.
MAX_COMMIT_ENTRIES = 50_000


class RetryLater(NotaryError):
    """Nothing of the submission was appended, and the same submission may succeed after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(RetryLater):
    """Too much is waiting to be made durable or anchored: retry later."""


class CommitFailed(RetryLater):
    """The store did not commit the transaction that held the submission: none of it was appended."""


class CommitUnknown(NotaryError):
    """The store's writer process ended during the commit: the submission may or may not have been appended."""


class TooLarge(NotaryError):
    """One submission of more entries than may wait at once: no retry can make it fit."""


class LogWriter:
    """The log store: appends in a writer process of its own (notary/store_process.py), reads on a thread here.

    Reads run in order on one thread, on a read-only connection that is
    brought up to the committed size before each one. Digest lookups have a
    thread and a connection of their own (``lookup``): a batch of them, or
    one scanning entries the index has not reached, can take seconds, and
    the sealer's reads must not wait behind it.
    """

    def __init__(self, path: Path, *, create: bool = True):
        self.path = Path(path)
        self._process = StoreProcess(self.path, create=create)
        self._reads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-reads")
        self._lookups = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-lookups")
        try:
            self.store: LogStore = self._reads.submit(LogStore, self.path, readonly=True).result()
            self._lookup_store: LogStore = self._lookups.submit(LogStore, self.path, readonly=True).result()
        except BaseException:
            self._process.close()
            raise
        self.committed = self.store.size

    @property
    def status(self) -> WriterStatus:
        """The writer process's digest index and checkpoint state, as of its last answer."""
        return self._process.status

    async def append(self, runs: Sequence[EntryRun]) -> int:
        """Append the entries of ``runs`` in one transaction; the index of the first once they are durable."""
        first = await self._process.append_async(runs)
        self.committed = max(self.committed, first + sum(r.count for r in runs))
        return first

    def waited(self) -> float:
        """Seconds the request in flight (a commit, a status) has waited for the writer process; 0.0 when none is."""
        return self._process.waited()

    async def refresh_status(self) -> WriterStatus:
        """Ask the writer process how its digest index and checkpoints are doing (as of the last answer while a commit is in flight)."""
        return await self._process.refresh_status_async()

    async def watch(self) -> None:
        """Raise ``WriterGone`` when the writer process ends on its own (the daemon then exits and is restarted)."""
        code = await self._process.wait_ended()
        raise WriterGone(f"the writer process of log store {self.path} ended unexpectedly (exit code {code}); "
                         "nothing it had not committed was acknowledged")

    def _read(self, store: LogStore, fn: Callable[[LogStore], T]) -> T:
        if store.size < self.committed:
            store.refresh()
        return fn(store)

    async def run(self, fn: Callable[[LogStore], T]) -> T:
        """``fn(store)`` on the read thread, with every acknowledged append visible."""
        return await asyncio.get_running_loop().run_in_executor(self._reads, self._read, self.store, fn)

    async def lookup(self, fn: Callable[[LogStore], T]) -> T:
        """``fn(store)`` on the lookup thread (digest lookups), with every acknowledged append visible."""
        return await asyncio.get_running_loop().run_in_executor(self._lookups, self._read, self._lookup_store, fn)

    def close(self) -> None:
        self._process.close()
        self._reads.submit(self.store.close).result()
        self._reads.shutdown()
        self._lookups.submit(self._lookup_store.close).result()
        self._lookups.shutdown()


class DigestFinder:
    """Lookups by digest, gathered: those that arrive while one runs share the next scan.

    Each lookup scans the entries the digest index has not reached yet; while
    the index lags (after a burst, or while a lost index is rebuilt) that is
    up to the whole log. The lookups waiting together, single digests
    (``GET /v1/proof?digest=``) and batches (``POST /v1/lookup``) alike, are
    answered by one ``find_by_digests`` over all their digests, so one scan
    serves them all instead of one scan each. A lookup never waits for more
    than the one running before it, and sees every append acknowledged
    before it was asked.
    """

    def __init__(self, writer: LogWriter):
        self._writer = writer
        self._waiting: list[tuple[Sequence[bytes], asyncio.Future[list[list[int]]]]] = []
        self._draining: asyncio.Task | None = None

    async def find(self, digest: bytes) -> list[int]:
        """Indices of the v1 entries that hold ``digest``, in log order."""
        return (await self.find_all([digest]))[0]

    async def find_all(self, digests: Sequence[bytes]) -> list[list[int]]:
        """For each of ``digests``, in order: the indices of the v1 entries that hold it, in log order."""
        future: asyncio.Future[list[list[int]]] = asyncio.get_running_loop().create_future()
        self._waiting.append((digests, future))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            wanted = list(dict.fromkeys(d for digests, future in batch if not future.done() for d in digests))
            try:
                found = await self._writer.lookup(lambda store: store.find_by_digests(wanted))
            except Exception as exc:  # each waiting request answers with it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            by_digest = dict(zip(wanted, found))
            for digests, future in batch:
                if not future.done():  # a request whose client went away is cancelled
                    future.set_result([list(by_digest[d]) for d in digests])


class Sequencer:
    def __init__(self, writer: LogWriter, max_pending: int):
        self._writer = writer
        self._max_pending = max_pending
        self._pending: deque[tuple[EntryRun, asyncio.Future[int]]] = deque()
        self._pending_entries = 0
        # Submissions accepted, and how many of them (the first ones: commits go in order) have a known
        # outcome, committed or failed; ``settled`` waits on these.
        self._accepted = 0
        self._decided = 0
        self._deciding: list[tuple[int, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._closed = False
        self.size = writer.store.size  # committed entries
        self.last_commit = time.monotonic()
        self.commits = 0
        self.commit_failures = 0
        self.commit_error: str | None = None  # the last failed commit's error, until a commit succeeds
        self.committed_entries = 0
        self.on_commit: Callable[[int], None] = lambda size: None

    @property
    def pending_entries(self) -> int:
        return self._pending_entries

    async def submit(self, entries: EntryRun) -> int:
        """Append ``entries``; return the index of the first once they are durable."""
        if entries.count > self._max_pending:
            raise TooLarge(f"{entries.count} entries in one submission, more than may wait to be written at once "
                           f"(limits.max_pending_entries, {self._max_pending}); send fewer at a time")
        if self._closed:
            raise Overloaded("the notary is shutting down and accepts no new entries", retry_after=5)
        if self._pending_entries + entries.count > self._max_pending:
            raise Overloaded(
                f"{self._pending_entries} entries are waiting to be written (limit {self._max_pending}); retry later"
            )
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((entries, future))
        self._pending_entries += entries.count
        self._accepted += 1
        self._wakeup.set()
        return await future

    async def settled(self) -> None:
        """Until every submission accepted before this call is committed or has failed.

        Also those whose submitter stopped waiting (a client that timed out or
        went away): their entries are committed all the same, so a lookup made
        after this sees them. A producer that lost an answer looks before it
        sends again (``POST /v1/lookup?source=``, the unix socket's ``lookup``).
        """
        if self._decided >= self._accepted:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._deciding.append((self._accepted, future))
        await future

    def _decide(self, count: int) -> None:
        """``count`` more submissions, the oldest undecided ones, have their outcome."""
        self._decided += count
        still = []
        for upto, future in self._deciding:
            if upto <= self._decided:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((upto, future))
        self._deciding = still

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
            while self._pending and (not batch or count + self._pending[0][0].count <= MAX_COMMIT_ENTRIES):
                item = self._pending.popleft()
                batch.append(item)
                count += item[0].count
            try:
                first = await self._writer.append([run for run, _ in batch])
            except Exception as exc:  # nothing was appended (one transaction): every waiter learns it
                self._pending_entries -= count
                self.commit_failures += 1
                self.commit_error = f"{type(exc).__name__}: {exc}"
                log.error("a commit of %d entries failed, nothing was appended: %s", count, exc)
                failed = CommitFailed(f"the log store did not commit the entries ({exc}); nothing was appended, "
                                      "retry later", retry_after=5)
                fatal = isinstance(exc, WriterGone)  # the daemon exits and is restarted
                outcome: NotaryError = failed
                decided = len(batch)
                if fatal:
                    # The writer may have committed before it died: this batch's fate is not known (a
                    # retry could append it twice). The submissions still queued were never sent.
                    outcome = CommitUnknown(
                        f"the log store's writer process ended during the commit ({exc}), so whether these entries "
                        "were appended is not known; the notary restarts: look them up (POST /v1/lookup) before "
                        "sending them again")
                    self._closed = True
                    for _, future in self._pending:
                        if not future.done():
                            future.set_exception(failed)
                    decided += len(self._pending)
                    self._pending.clear()
                for _, future in batch:
                    if not future.done():
                        future.set_exception(outcome)
                self._decide(decided)
                if fatal:
                    raise
                continue
            self._pending_entries -= count
            self.size = first + count
            self.commits += 1
            self.commit_error = None
            self.committed_entries += count
            self.last_commit = time.monotonic()
            offset = first
            for run, future in batch:
                if not future.done():  # a cancelled waiter's entries are durable all the same
                    future.set_result(offset)
                offset += run.count
            self._decide(len(batch))
            self.on_commit(self.size)
