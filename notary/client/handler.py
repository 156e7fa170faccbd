"""A logging.Handler that cannot silently lose an audit record.

Each record becomes one line of the sink (the audit log file, separate from
application logs): RFC 8785 canonical JSON, so the line's digest, SHA-256 of
its bytes without the newline (docs/FORMATS.md, "Records"), can be recomputed
from the event by anyone. The line is fsynced, then its digest is submitted.

Beside the sink, a SQLite ledger (``<sink>.notary``) holds one row per line:
its digest, its end offset in the sink and, once the notary acknowledged it,
the entry's index. Rows without an index are the spool: they are submitted in
line order, so the sink's lines appear in the log in the sink's order.

Modes, chosen per logger name (``modes``, the longest matching prefix wins):
- ``fail_closed``: ``emit`` returns only once the notary durably acknowledged
  the line (and every spooled line before it), within ``wait`` seconds;
  otherwise it raises ``NotAcknowledgedError`` through ``logger.info(...)``.
- ``fail_open``: ``emit`` returns once the line is in the sink and the spool.
Only the background thread submits: it drains the spool in line order when
the notary answers, warning (and counting, see ``metrics_text``) while it is
not empty; fail-closed callers and ``drain`` wait for it with a deadline.

Properties proved against a real daemon in tests/daemon/test_producer_client.py.
"""

from __future__ import annotations

import datetime
import fcntl
import io
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import rfc8785

from notary.audit_events import utc_millis
from notary.client.sync import ClientError, line_record, record_digest
from notary.errors import NotaryError

Mode = Literal["fail_closed", "fail_open"]
MODES: tuple[Mode, ...] = ("fail_closed", "fail_open")

DEFAULT_WAIT = 60.0  # seconds a fail-closed call waits when the transport has no ``timeout`` of its own
BATCH_LINES = 256  # lines per submission; must not exceed the daemon's limits.max_request_digests (default 10000)
RETRY_FIRST = 0.5  # seconds before the first retry of a failed drain, doubled up to RETRY_MAX
RETRY_MAX = 30.0
WARN_INTERVAL = 30.0  # at most one spool warning per this many seconds

log = logging.getLogger(__name__)


class HandlerError(NotaryError):
    """The sink or its ledger cannot be used as they are, or a record cannot be written as a line."""


class NotAcknowledgedError(ClientError):
    """A fail-closed line was not durably acknowledged by the notary: the action must not proceed.

    The line stays in the sink and in the spool (so the sink still verifies
    once the notary is back) with ``refused_to_caller`` set in the ledger.
    """

    def __init__(self, sink: Path, line: int, cause: str):
        self.sink, self.line = sink, line
        super().__init__(f"audit record {sink}:{line} was not acknowledged by the notary: {cause}")


class Transport(Protocol):
    """What the handler submits through: ``HttpClient`` or ``UnixClient`` from notary.client."""

    def submit_indices(self, digests: Sequence[bytes]) -> list[int]: ...


@dataclass(frozen=True)
class Receipt:
    line: int  # 1-based line number in the sink
    digest: bytes  # SHA-256 of the line without its newline
    index: int | None  # the log index, or None while spooled (fail-open)


def canonical_line(document: Mapping) -> bytes:
    """RFC 8785 canonical JSON of the document: one line (JSON escapes every control character).

    A value RFC 8785 cannot represent (an integer beyond ±(2**53 - 1), NaN or
    an infinity, a lone surrogate, a non-JSON type) is a HandlerError.
    """
    try:
        return rfc8785.dumps(document)
    except (rfc8785.CanonicalizationError, UnicodeError) as exc:
        raise HandlerError(f"the audit record cannot be written as RFC 8785 JSON: {type(exc).__name__}: {exc}") \
            from None


_LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS lines (
    line INTEGER PRIMARY KEY,           -- 1-based line number in the sink
    end_offset INTEGER NOT NULL,        -- byte offset just past the line's newline
    digest BLOB NOT NULL,               -- SHA-256 of the line without its newline
    written_at REAL NOT NULL,           -- unix time the line was written
    entry_index INTEGER,                -- the notary's index; NULL while spooled
    acknowledged_at REAL,
    refused_to_caller INTEGER NOT NULL DEFAULT 0  -- 1: a fail-closed caller got NotAcknowledgedError
);
CREATE INDEX IF NOT EXISTS spool ON lines(line) WHERE entry_index IS NULL;
"""


class AuditLogger(logging.Logger):
    """The logger ``NotaryHandler.attach`` returns: every call on it is a record for its handler.

    It is not registered with ``logging`` (``logging.getLogger(name)`` is
    another object), so ``logging.config.dictConfig``/``fileConfig`` cannot
    disable it or take its handler away, and it ignores ``logging.disable``
    and levels: any of them would drop a fail-closed record, and the caller
    would go on as if it had been notarized.
    """

    def __init__(self, name: str, handler: NotaryHandler):
        super().__init__(name)
        self.propagate = False  # audit records stay out of the application's logs; no other handler swallows them
        self.addHandler(handler)

    def isEnabledFor(self, level: int) -> bool:
        return True

    def handle(self, record: logging.LogRecord) -> None:
        if self.filter(record):  # only filters added to this logger on purpose; never ``disabled``
            self.callHandlers(record)


class NotaryHandler(logging.Handler):
    """``NotaryHandler(sink, transport, mode="fail_closed", modes={"app.ui": "fail_open"})``.

    A record whose ``msg`` is a mapping (an event from ``notary.audit_events``)
    is written as that mapping; any other record as ``{"level", "logger",
    "message", "time"}``. Log through the loggers ``attach`` returns, never
    behind a ``QueueHandler``: a queue returns before the notary answered,
    which defeats fail-closed. It has no level of its own: a level would drop
    records silently. Create it in the process that uses it: a handler used
    after a fork raises HandlerError (its threads, locks and ledger connection
    do not survive a fork).

    ``wait``: how long a fail-closed call waits for its acknowledgement, the
    transport's ``timeout`` (``DEFAULT_WAIT`` if it has none).
    """

    def __init__(self, sink: Path | str, transport: Transport, *, mode: Mode = "fail_closed",
                 modes: Mapping[str, Mode] | None = None):
        super().__init__()
        for m in [mode, *(modes or {}).values()]:
            _check_mode(m)
        self.sink = Path(sink).absolute()  # _check_sink_unchanged looks it up again, whatever the cwd then
        self.transport = transport
        self.mode = mode
        self.modes = dict(modes or {})
        self.wait = float(getattr(transport, "timeout", DEFAULT_WAIT))
        self.addFilter(_not_our_own)
        self.acknowledged_total = 0
        self.submit_failures_total = 0
        self.reconciled_total = 0  # lines found in the log after a failed submission, not submitted again
        self._unsure = True  # a spool left by an earlier process may have been submitted: look first
        self._pid = os.getpid()  # a fork copies the handler but not its drainer thread: see _check_process
        self._db_lock = threading.Lock()  # the sink's end and the ledger connection, shared by callers and the drainer
        # Only the drainer submits (one submission at a time keeps the log in sink order); callers waiting
        # for it are woken through _progress after every batch and every failed attempt.
        self._progress = threading.Condition()
        self._attempts = 0  # submission attempts the drainer started
        self._failed = (0, "")  # the number of the last failed attempt, and why it failed
        self._wake = threading.Event()  # a line was spooled
        self._hurry = threading.Event()  # a caller waits for the spool: retry now rather than backing off
        self._stop = threading.Event()
        self._closing = False
        self._broken: str | None = None  # why no more lines can be written, after a failed write
        self._last_warning = 0.0
        ledger = Path(str(self.sink) + ".notary")
        adopting = not ledger.exists()  # an existing sink without a ledger: its lines were written by others
        self._db = sqlite3.connect(str(ledger), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_LEDGER_SCHEMA)
        try:
            self._file, self._end = self._open_sink(adopting)
        except BaseException:
            self._db.close()
            raise
        self._drainer = threading.Thread(target=self._drain_forever, name=f"notary-spool {self.sink.name}",
                                         daemon=True)
        self._drainer.start()

    # -- the sink and its ledger -------------------------------------------------

    def _open_sink(self, adopting: bool):
        """Open the sink for appending after reconciling it with the ledger; return (file, end offset).

        Lines written but not yet in the ledger join the spool. Their callers
        were never told they were recorded (a crash between the two writes,
        or a failed ledger write that raised HandlerError), so their rows are
        marked ``refused_to_caller``, unless the ledger is new and the lines
        were there before it. A torn last line (a crash inside the write; no
        caller was ever answered for it) is cut off. A sink shorter than the
        ledger, or whose last recorded line changed, is refused.
        """
        last = self._db.execute("SELECT line, end_offset, digest FROM lines ORDER BY line DESC LIMIT 1").fetchone()
        line, end, digest = last or (0, 0, None)
        created = not self.sink.exists()
        f = open(self.sink, "a+b")
        try:
            # Two writers would interleave lines and number them twice: one handler per sink, machine-wide.
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise HandlerError(f"sink {self.sink} is in use by another handler (this process or another): "
                               "give each process its own sink") from None
        size = os.fstat(f.fileno()).st_size
        if size < end:
            f.close()
            raise HandlerError(f"sink {self.sink} has {size} bytes but its ledger records {end}: lines were "
                               "removed from the audit log, or it was rotated (never rotate a sink)")
        if digest is not None:
            start = self._db.execute("SELECT end_offset FROM lines WHERE line = ?", (line - 1,)).fetchone()
            f.seek(start[0] if start else 0)
            recorded = f.read(end - (start[0] if start else 0))
            if record_digest(recorded[:-1]) != digest:
                f.close()
                raise HandlerError(f"sink {self.sink} line {line} is not the line its ledger recorded: "
                                   "the audit log was rewritten")
        f.seek(end)
        tail = f.read()
        complete = tail[:tail.rfind(b"\n") + 1]
        if len(complete) < len(tail):
            log.warning("sink %s ends with %d bytes of a torn line (a crash while writing it); cut off",
                        self.sink, len(tail) - len(complete))
            f.truncate(end + len(complete))
            os.fsync(f.fileno())
        rows = []
        for raw in io.BytesIO(complete):  # lines split as line_digests splits them, so that verify-log agrees
            end += len(raw)
            line += 1
            rows.append((line, end, record_digest(line_record(raw)), time.time(), 0 if adopting else 1))
        if rows:
            with self._db_lock:
                self._db.executemany("INSERT INTO lines (line, end_offset, digest, written_at, refused_to_caller) "
                                     "VALUES (?, ?, ?, ?, ?)", rows)
        if created:
            _fsync_dir(self.sink.parent)
        return f, end

    def _append(self, document: Mapping) -> tuple[int, bytes]:
        """Write one line to the sink (fsync) and its row to the ledger; return (line number, digest)."""
        data = canonical_line(document)
        digest = record_digest(data)
        with self._db_lock:
            if self._broken:
                raise HandlerError(self._broken)
            try:
                self._check_sink_unchanged()
                self._file.write(data + b"\n")
                self._file.flush()
                os.fsync(self._file.fileno())
                end = self._file.tell()
                (line,) = self._db.execute("SELECT coalesce(max(line), 0) + 1 FROM lines").fetchone()
                self._db.execute("INSERT INTO lines (line, end_offset, digest, written_at) VALUES (?, ?, ?, ?)",
                                 (line, end, digest, time.time()))
                self._end = end
            except (OSError, sqlite3.Error, HandlerError) as exc:
                # The sink may now hold a (torn) line the ledger lacks; only the reconciliation at start
                # puts them back in step, so refuse every later line until the handler is reopened.
                self._broken = (f"the audit handler of {self.sink} failed to write a line ({exc}); "
                                "reopen it (a new NotaryHandler on the same sink) to reconcile sink and ledger")
                raise HandlerError(self._broken) from exc
        return line, digest

    def _check_sink_unchanged(self) -> None:
        """Refuse a sink renamed, replaced, truncated or appended to by another writer (logrotate, for one).

        Lines written after that would get ledger rows whose line numbers and
        offsets are not the sink's.
        """
        opened = os.fstat(self._file.fileno())
        try:
            named = os.stat(self.sink).st_ino
        except FileNotFoundError:
            named = None
        if named != opened.st_ino:
            raise HandlerError(f"sink {self.sink} was renamed or replaced since the handler opened it "
                               "(rotated?); never rotate a sink")
        if opened.st_size != self._end:
            raise HandlerError(f"sink {self.sink} has {opened.st_size} bytes, the handler wrote {self._end}: "
                               "it was truncated or written by something else (rotated with copytruncate?); "
                               "never rotate a sink")

    def _check_process(self) -> None:
        if os.getpid() != self._pid:
            raise HandlerError(f"the audit handler of {self.sink} was created in process {self._pid} before a "
                               f"fork, and used in process {os.getpid()}: create the handler in each worker "
                               "after the fork (gunicorn: in the post_fork hook, or without --preload)")

    # -- submitting (the drainer thread only) ---------------------------------------

    def _submit_spooled(self) -> None:
        """Submit spooled lines in line order, in batches, until none is left (or the handler closes).

        Raises ClientError when the notary does not acknowledge a batch.
        """
        while not self._stop.is_set():
            with self._db_lock:
                rows = self._db.execute("SELECT line, digest FROM lines WHERE entry_index IS NULL "
                                        "ORDER BY line LIMIT ?", (BATCH_LINES,)).fetchall()
            if not rows:
                self._unsure = False  # nothing is waiting whose fate is unknown
                return
            try:
                if self._unsure and self._reconcile(rows):
                    continue
                indices = self.transport.submit_indices([d for _, d in rows])
                if len(indices) != len(rows):
                    raise ClientError(f"the notary answered {len(indices)} indices for {len(rows)} digests")
            except Exception as exc:
                # Whatever went wrong, the lines are not acknowledged: one error type for the callers.
                # The notary may have appended them all the same (an answer lost on its way back, a
                # commit whose outcome it could not tell): look before sending them again.
                self._unsure = True
                self.submit_failures_total += 1
                if isinstance(exc, ClientError):
                    raise
                raise ClientError(f"submitting through {type(self.transport).__name__} failed: "
                                  f"{type(exc).__name__}: {exc}") from exc
            self._acknowledge(rows, indices)

    def _reconcile(self, rows: list[tuple[int, bytes]]) -> bool:
        """Before submitting again: mark the lines of ``rows`` the log already holds; True if there were any.

        Only with a transport that can look (``committed_prefix``: ``HttpClient``
        and ``UnixClient``); through one that cannot, the lines are submitted
        again, and may be in the log twice (docs/PRODUCERS.md).
        """
        look = getattr(self.transport, "committed_prefix", None)
        if look is None:
            return False
        with self._db_lock:
            (after,) = self._db.execute("SELECT coalesce(max(entry_index), -1) FROM lines").fetchone()
        found = look([d for _, d in rows], after)
        self._unsure = False
        if not found:
            return False
        log.warning("sink %s: lines %d to %d were already in the log (a submission whose answer was lost); "
                    "recorded at their indices, not submitted again", self.sink, rows[0][0], rows[len(found) - 1][0])
        self.reconciled_total += len(found)
        self._acknowledge(rows[:len(found)], found)
        return True

    def _acknowledge(self, rows: list[tuple[int, bytes]], indices: Sequence[int]) -> None:
        now = time.time()
        with self._db_lock:
            self._db.execute("BEGIN")
            self._db.executemany("UPDATE lines SET entry_index = ?, acknowledged_at = ? WHERE line = ?",
                                 [(i, now, line) for i, (line, _) in zip(indices, rows)])
            self._db.execute("COMMIT")
        self.acknowledged_total += len(rows)
        with self._progress:
            self._progress.notify_all()

    def _drain_forever(self) -> None:
        delay = RETRY_FIRST
        while not self._stop.is_set():
            self._wake.clear()  # before submitting: a line spooled meanwhile wakes the next wait at once
            self._hurry.clear()
            with self._progress:
                self._attempts += 1
                attempt = self._attempts
            try:
                self._submit_spooled()
            except Exception as exc:  # the thread must outlive any failure, or the spool would sit unnoticed
                with self._progress:
                    self._failed = (attempt, str(exc))
                    self._progress.notify_all()
                self._warn_spooled(str(exc))
                # Back off: new fail-open lines do not hurry a notary that is away, a waiting caller does,
                # but never to more than one attempt per RETRY_FIRST.
                failed_at = time.monotonic()
                self._hurry.wait(delay)
                self._stop.wait(failed_at + RETRY_FIRST - time.monotonic())
                delay = min(delay * 2, RETRY_MAX)
                continue
            delay = RETRY_FIRST
            with self._progress:
                self._progress.notify_all()  # the spool was empty: drain() may be waiting for that
            self._wake.wait()

    def _wait_for_progress(self, done, deadline: float | None) -> bool:
        """Wait until ``done()`` is true (True) or ``deadline`` (time.monotonic) passed (False).

        ``done`` is evaluated under ``_progress`` after every batch and every failed attempt.
        """
        with self._progress:
            while not done():
                remaining = None if deadline is None else deadline - time.monotonic()
                if (remaining is not None and remaining <= 0) or self._stop.is_set():
                    return False
                self._hurry.set()
                self._wake.set()
                self._progress.wait(remaining)
            return True

    def _warn_spooled(self, cause: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARN_INTERVAL:
            self._last_warning = now
            log.warning("audit spool of %s holds %d lines not yet acknowledged by the notary: %s",
                        self.sink, self.spool_depth, cause)

    # -- the public interface ---------------------------------------------------

    def attach(self, logger: logging.Logger | str, mode: Mode | None = None) -> AuditLogger:
        """The audit logger ``logger`` (a name) of this handler: every call on it is a record.

        Sets its mode (default: the handler's). Keep and use the returned
        logger: ``logging.getLogger(name)`` is logging's own logger of that
        name, not an audit logger, and logging's configuration can silence it.
        """
        name = logger if isinstance(logger, str) else logger.name
        if mode is not None:
            self.modes[name] = _check_mode(mode)
        return AuditLogger(name, self)

    def mode_for(self, logger_name: str) -> Mode:
        """The mode of the longest ``modes`` key that is ``logger_name`` or one of its ancestors."""
        parts = logger_name.split(".")
        for n in range(len(parts), 0, -1):
            if (mode := self.modes.get(".".join(parts[:n]))) is not None:
                return mode
        return self.mode

    def audit(self, document: Mapping, *, mode: Mode | None = None) -> Receipt:
        """Write ``document`` as one line and notarize it; the call path ``emit`` uses.

        fail-closed: returns the receipt with its index, or raises
        NotAcknowledgedError once a submission including the line failed or
        ``wait`` seconds passed. fail-open: returns with ``index=None`` once
        the line is spooled.
        """
        mode = _check_mode(mode or self.mode)
        self._check_process()
        if self._closing:
            raise HandlerError(f"the audit handler of {self.sink} is closed (logging.config.dictConfig and fileConfig "
                               "close every handler: configure logging before creating the audit handler)")
        line, digest = self._append(document)
        if mode == "fail_open":
            self._wake.set()
            return Receipt(line, digest, None)
        deadline = time.monotonic() + self.wait
        with self._progress:
            start = self._attempts  # an attempt started later read the spool after this line was in it

        def settled() -> bool:
            return self.index_of(line) is not None or self._failed[0] > start

        self._wait_for_progress(settled, deadline)
        if self.index_of(line) is None:
            with self._db_lock:
                self._db.execute("UPDATE lines SET refused_to_caller = 1 WHERE line = ?", (line,))
            attempt, cause = self._failed
            if attempt <= start:
                cause = "the handler was closed" if self._stop.is_set() else f"no answer within {self.wait:g} s"
            raise NotAcknowledgedError(self.sink, line, cause)
        return Receipt(line, digest, self.index_of(line))

    def handle(self, record: logging.LogRecord) -> bool:
        """``logging.Handler.handle`` without the handler's lock.

        ``_append`` orders the lines itself; the lock would make every call,
        fail-open ones too, wait while a fail-closed one waits for the notary.
        """
        passed = self.filter(record)
        if passed:
            self.emit(record)
        return passed

    def emit(self, record: logging.LogRecord) -> None:
        """Unlike most handlers, lets NotAcknowledgedError propagate to the logging call.

        ``handle`` does not catch what ``emit`` raises; only handlers that
        call ``handleError`` themselves swallow errors, and this one never
        does, so ``logging.raiseExceptions`` has no effect here.
        """
        if isinstance(record.msg, Mapping):
            document = record.msg
        else:
            document = {"level": record.levelname, "logger": record.name, "message": record.getMessage(),
                        "time": utc_millis(datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc))}
        self.audit(document, mode=self.mode_for(record.name))

    def index_of(self, line: int) -> int | None:
        """The log index acknowledged for a sink line, or None while it is spooled."""
        self._check_process()
        with self._db_lock:
            row = self._db.execute("SELECT entry_index FROM lines WHERE line = ?", (line,)).fetchone()
        if row is None:
            raise HandlerError(f"sink {self.sink} has no line {line}")
        return row[0]

    @property
    def spool_depth(self) -> int:
        """Lines written to the sink and not yet acknowledged by the notary."""
        self._check_process()
        with self._db_lock:
            return self._db.execute("SELECT count(*) FROM lines WHERE entry_index IS NULL").fetchone()[0]

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until the spool is empty (True) or ``timeout`` seconds passed (False), whatever the notary does.

        The background thread submits; while someone drains it retries
        every RETRY_FIRST seconds instead of backing off.
        """
        self._check_process()
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._wait_for_progress(lambda: self.spool_depth == 0, deadline)

    def metrics_text(self) -> str:
        """Prometheus text exposition of the spool, to append to the application's /metrics."""
        self._check_process()
        with self._db_lock:
            depth, oldest = self._db.execute(
                "SELECT count(*), min(written_at) FROM lines WHERE entry_index IS NULL").fetchone()
        age = time.time() - oldest if oldest is not None else 0.0
        sink = str(self.sink).replace("\\", "\\\\").replace('"', '\\"')
        return "".join(f"# TYPE {name} {kind}\n{name}{{sink=\"{sink}\"}} {value}\n" for name, kind, value in [
            ("notary_producer_spool_lines", "gauge", depth),
            ("notary_producer_oldest_spooled_age_seconds", "gauge", round(age, 3)),
            ("notary_producer_acknowledged_total", "counter", self.acknowledged_total),
            ("notary_producer_submit_failures_total", "counter", self.submit_failures_total),
            ("notary_producer_reconciled_lines_total", "counter", self.reconciled_total),
        ])

    def close(self) -> None:
        """Stop the drainer; later records raise HandlerError. What is still spooled stays for the next start.

        In a forked child it does nothing: closing the parent's ledger
        connection there could checkpoint and remove the parent's WAL.
        """
        if not self._closing and os.getpid() == self._pid:
            self._closing = True
            self._stop.set()
            self._wake.set()
            self._hurry.set()
            with self._progress:
                self._progress.notify_all()
            self._drainer.join()
            with self._db_lock:
                self._file.close()
                self._db.close()
        super().close()


def _not_our_own(record: logging.LogRecord) -> bool:
    """Our own warnings go to notary.client.*: never write them into the sink they are about."""
    return record.name != "notary.client" and not record.name.startswith("notary.client.")


def _check_mode(mode: str) -> Mode:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
