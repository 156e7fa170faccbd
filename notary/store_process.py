"""The log store's writer in a process of its own.

The daemon's event loop, its anchoring threads (boto3 is pure Python) and the
store's writer used to share one GIL: a 1000-entry commit needs about 4 ms of
CPU, but under load it waited two to four times that for the GIL, and the
tail of the acknowledgement latency was that wait (docs/PERFORMANCE.md,
"Acknowledgement latency"). Here the writer, the WAL checkpointer and the
digest indexer run in a child process; the daemon sends it the entries of a
group commit and gets back the index of the first once they are durable.
Reads stay in the daemon, on a read-only connection of their own.

Safety:
- The child holds an exclusive lock on ``<store>.lock`` for its life, so two
  writers never share a store: a second daemon on the same data directory,
  or a restart racing the previous writer's exit, waits for the lock
  (``LOCK_TIMEOUT``) and then refuses to start, naming the file.
- It dies with the daemon: SIGKILL when its parent dies (``PR_SET_PDEATHSIG``),
  and end-of-file on its pipe ends it. SIGTERM and SIGINT are ignored, so that
  a signal sent to the whole service (systemd, Ctrl-C) leaves the writer to
  commit what the draining daemon still sends.
- A commit is one SQLite transaction in either process, so a crash of either
  keeps exactly the committed appends; the daemon acknowledges nothing the
  child has not reported committed.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import fcntl
import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from notary.entry import EntryRun
from notary.errors import StoreError
from notary.store import LogStore, WalCheckpointer

# The checkpointer copies the WAL back beside the commits: every
# CHECKPOINT_BUSY_INTERVAL while commits keep coming, every
# CHECKPOINT_INTERVAL when a pass found nothing new. Short passes matter: one
# that ends between two commits has copied the whole WAL, and the next commit
# starts the WAL over from the beginning. Passes every 0.25 s rarely did (each
# copied some 30 commits' pages, and commits landed meanwhile), so the WAL
# grew to WAL_RESTART_PAGES and the commit that crossed it ran SQLite's own
# checkpoint: 7-21 ms of CPU inside one acknowledgement, about every 0.6 s at
# 140k entries/s (docs/PERFORMANCE.md, "The WAL restart and the load
# generator's pauses"). That automatic checkpoint stays, as the bound on the
# WAL should the checkpointer fall behind.
CHECKPOINT_INTERVAL = 0.25
CHECKPOINT_BUSY_INTERVAL = 0.02
WAL_RESTART_PAGES = 2048  # 16 MiB
# Leaves the indexer adds to the digest index in one transaction, and how
# long it lets entries gather between transactions (each has a fixed cost;
# lookups scan what it has not reached, about INDEX_INTERVAL's worth).
INDEX_CHUNK = 20_000
INDEX_INTERVAL = 0.1
INDEX_BACKOFF_MAX = 30.0
LOCK_TIMEOUT = 30.0  # seconds to wait for a previous writer of the same store to exit
# A commit takes milliseconds (a 50,000-entry one well under a second): a
# request unanswered for this long means a writer stuck, most likely on the
# disk. /healthz says so; the submissions it holds wait, unacknowledged.
ANSWER_OVERDUE = 10.0
_PR_SET_PDEATHSIG = 1

log = logging.getLogger("notary")


class WriterGone(StoreError):
    """The writer process ended: nothing more can be appended until the daemon restarts."""


def lock_path(store_path: str | Path) -> Path:
    path = Path(store_path)
    return path.with_name(path.name + ".lock")


@dataclass(frozen=True)
class WriterStatus:
    """What the writer process reports with every answer."""

    indexed: int = 0  # leaves the digest index covers
    index_failures: int = 0
    index_error: str | None = None  # the last indexing failure, None once indexing succeeds again
    checkpoint_failures: int = 0


# -- the child ---------------------------------------------------------------


class _Helpers:
    """The checkpointer and the indexer: threads beside the writer, each on connections of its own."""

    def __init__(self, path: Path):
        self.indexer = LogStore(path, readonly=True)
        try:
            self.indexer.index_pending(0)  # opens (or creates) the index and checks it belongs to this log
            self.checkpointer = WalCheckpointer(path)
        except BaseException:
            self.indexer.close()
            raise
        self.indexed = self.indexer.indexed
        self.index_failures = 0
        self.index_error: str | None = None
        self.checkpoint_failures = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._checkpoint_loop, name="wal-checkpoint", daemon=True),
                        threading.Thread(target=self._index_loop, name="indexer", daemon=True)]
        for thread in self.threads:
            thread.start()

    def status(self) -> WriterStatus:
        return WriterStatus(self.indexed, self.index_failures, self.index_error, self.checkpoint_failures)

    def _checkpoint_loop(self) -> None:
        wait, last = CHECKPOINT_INTERVAL, None
        while not self.stop.wait(wait):
            try:
                result = self.checkpointer.checkpoint()
            except Exception as exc:  # the writer's own checkpoint keeps the WAL bounded; the count shows it
                self.checkpoint_failures += 1
                if self.checkpoint_failures == 1 or self.checkpoint_failures % 100 == 0:
                    log.warning("checkpointing the write-ahead log failed (%d times so far): %s",
                                self.checkpoint_failures, exc)
                wait, last = CHECKPOINT_INTERVAL, None
                continue
            # (frames in the WAL, frames copied) moves while commits come.
            wait = CHECKPOINT_BUSY_INTERVAL if result != last else CHECKPOINT_INTERVAL
            last = result

    def _index_loop(self) -> None:
        backoff = 0.5
        while not self.stop.is_set():
            try:
                self.indexer.refresh()
                added = self.indexer.index_pending(INDEX_CHUNK)
                self.indexed = self.indexer.indexed
                self.index_error, backoff = None, 0.5
            except Exception as exc:  # lookups scan what is not indexed: report and retry
                self.index_failures += 1
                error = f"{type(exc).__name__}: {exc}"
                if error != self.index_error:
                    log.error("building the digest index failed, retrying (lookups scan what it misses): %s", error)
                self.index_error = error
                self.stop.wait(backoff)
                backoff = min(backoff * 2, INDEX_BACKOFF_MAX)
                continue
            if added < INDEX_CHUNK:
                self.stop.wait(INDEX_INTERVAL)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()
        self.checkpointer.close()
        self.indexer.close()


def _die_with_parent(parent: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: end-of-file on the pipe still ends the child
        pass
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _lock(path: Path, timeout: float) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise StoreError(f"log store lock {path} is held by another writer (another daemon on this data "
                                 f"directory?) and was not released within {timeout:g}s") from None
            time.sleep(0.05)


def _serve(path_text: str, conn, create: bool, parent: int, lock_timeout: float) -> None:
    _die_with_parent(parent)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The daemon's standard error (the journal under systemd), as the daemon logs.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s (store writer): %(message)s")
    path = Path(path_text)
    store = helpers = None
    try:
        lock_fd = _lock(lock_path(path), lock_timeout)
        store = LogStore(path, create=create, wal_autocheckpoint=WAL_RESTART_PAGES)
        helpers = _Helpers(path)
    except Exception as exc:
        conn.send(("error", str(exc) if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}", None))
        if store is not None:
            store.close()
        return
    conn.send(("ok", store.size, helpers.status()))
    gc.freeze()  # start-up's objects live as long as the process: keep full collections short
    try:
        while True:
            try:
                request = conn.recv()
            except (EOFError, OSError):
                return
            if request[0] == "close":
                return
            if request[0] == "append":
                try:
                    first = store.append_runs([EntryRun(*run) for run in request[1]])
                except Exception as exc:  # nothing was appended (one transaction)
                    message = str(exc) if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"
                    conn.send(("error", message, helpers.status()))
                    continue
                conn.send(("ok", first, helpers.status()))
            else:  # "status"
                conn.send(("ok", store.size, helpers.status()))
    finally:
        helpers.close()
        store.close()
        os.close(lock_fd)


# -- the daemon's side ---------------------------------------------------------


def _wire(runs: Sequence[EntryRun]) -> list[tuple[bytes, int, int]]:
    """Runs as plain tuples for the pipe: pickling a dataclass costs some 20 times as much."""
    return [(run.data, run.width, run.count) for run in runs]


class StoreProcess:
    """A handle on the writer process.

    Blocking calls (``append``, ``refresh_status``) for tools and tests; the
    daemon uses the ``*_async`` ones from its event loop, which waits on the
    pipe itself: no thread hand-off on the acknowledgement path. Use one kind
    at a time.
    """

    def __init__(self, path: Path, *, create: bool = True, lock_timeout: float = LOCK_TIMEOUT):
        self.path = Path(path)
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(str(self.path), child, create, os.getpid(), lock_timeout),
                                    name="notary-store-writer")
        self._process.start()
        child.close()
        self._lock = threading.Lock()
        self._async_lock: asyncio.Lock | None = None
        self._sent_at: float | None = None  # when the request in flight was sent
        self._unread = 0  # answers to cancelled requests, still on the pipe ahead of the next request's own
        self.status = WriterStatus()
        # atexit runs last-registered first: this closes the pipe before
        # multiprocessing's own exit handler waits for the child.
        atexit.register(self.close)
        try:
            self.size: int = self._answer()
        except BaseException:
            self.close()
            raise

    def _answer(self):
        try:
            kind, value, status = self._conn.recv()
        except (EOFError, OSError):
            self._process.join(5)
            raise WriterGone(f"the writer process of log store {self.path} ended unexpectedly "
                             f"(exit code {self._process.exitcode})") from None
        if status is not None:
            self.status = status
        if kind == "error":
            raise StoreError(value)
        return value

    def _send(self, request: tuple) -> None:
        try:
            self._conn.send(request)
        except (OSError, ValueError):
            raise WriterGone(f"the writer process of log store {self.path} is gone "
                             f"(exit code {self._process.exitcode})") from None

    def _request(self, *request):
        with self._lock:
            while self._unread:  # a cancelled async request's answer (use one kind at a time, though)
                self._unread -= 1
                with contextlib.suppress(StoreError):
                    self._answer()
            self._send(request)
            return self._answer()

    def waited(self) -> float:
        """Seconds the request in flight has waited for the writer's answer; 0.0 when none is."""
        sent = self._sent_at
        return 0.0 if sent is None else time.monotonic() - sent

    def append(self, entries: Sequence[bytes]) -> int:
        """Append ``entries`` in one transaction; the index of the first once committed."""
        return self._request("append", _wire(EntryRun.group(entries)))

    def refresh_status(self) -> WriterStatus:
        self._request("status")
        return self.status

    async def _readable(self) -> None:
        """Until the writer's next answer is on the pipe, without blocking the event loop."""
        if self._conn.poll():
            return
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        fd = self._conn.fileno()
        loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
        try:
            await ready
        finally:
            loop.remove_reader(fd)

    async def _request_async(self, *request):
        if self._async_lock is None:
            self._async_lock = asyncio.Lock()
        async with self._async_lock:
            # The answers of cancelled requests come first on the pipe: take them off, or this request
            # would read one of them as its own.
            while self._unread:
                await self._readable()
                self._unread -= 1
                with contextlib.suppress(StoreError):
                    self._answer()
            self._sent_at = time.monotonic()
            try:
                self._send(request)
                await self._readable()
            except asyncio.CancelledError:
                # The writer still answers; reading that here would block the event loop for as long as
                # the writer takes, which a stalled disk makes forever. The next request reads it first;
                # meanwhile waited() goes on counting, as the writer is still busy.
                self._unread += 1
                raise
            except BaseException:
                self._sent_at = None
                raise
            self._sent_at = None
            return self._answer()

    async def wait_ended(self) -> int | None:
        """Return the writer's exit code once it has ended (the daemon watches this)."""
        loop = asyncio.get_running_loop()
        ended = loop.create_future()
        fd = self._process.sentinel
        loop.add_reader(fd, lambda: ended.done() or ended.set_result(None))
        try:
            await ended
        finally:
            loop.remove_reader(fd)
        self._process.join(5)
        return self._process.exitcode

    async def append_async(self, runs: Sequence[EntryRun]) -> int:
        """Append the entries of ``runs`` in one transaction, from an event loop; the index of the first once committed."""
        return await self._request_async("append", _wire(runs))

    async def refresh_status_async(self) -> WriterStatus:
        """The writer's status, asked now; while a request is in flight, as of the last answer.

        Never waits behind a commit: one stuck on the disk would hold up
        every /healthz and /metrics request meant to report it.
        """
        if (self._async_lock is None or not self._async_lock.locked()) and not self._unread:
            await self._request_async("status")
        return self.status

    def close(self) -> None:
        """Let the writer finish and exit; idempotent."""
        atexit.unregister(self.close)
        if self._process.pid is None:
            return
        with self._lock:
            try:
                self._conn.send(("close",))
            except (OSError, ValueError):
                pass
            self._conn.close()
        self._process.join(30)
        if self._process.exitcode is None:
            self._process.kill()
            self._process.join()
