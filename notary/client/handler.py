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
  the line (and every spooled line before it); otherwise it raises
  ``NotAcknowledgedError`` through ``logger.info(...)`` to the caller.
- ``fail_open``: ``emit`` returns once the line is in the sink and the spool;
  a background thread drains the spool when the notary answers, warning (and
  counting, see ``metrics_text``) while it is not empty.

Properties proved against a real daemon in tests/daemon/test_producer_client.py.
"""

from __future__ import annotations

import datetime
import fcntl
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
from notary.client.sync import ClientError, record_digest
from notary.errors import NotaryError

Mode = Literal["fail_closed", "fail_open"]
MODES: tuple[Mode, ...] = ("fail_closed", "fail_open")

BATCH_LINES = 256  # lines per submission; must not exceed the daemon's limits.max_request_digests (default 10000)
RETRY_FIRST = 0.5  # seconds before the first retry of a failed drain, doubled up to RETRY_MAX
RETRY_MAX = 30.0
WARN_INTERVAL = 30.0  # at most one spool warning per this many seconds

log = logging.getLogger(__name__)


class HandlerError(NotaryError):
    """The sink or its ledger cannot be used as they are."""


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
    """RFC 8785 canonical JSON of the document: one line (JSON escapes every control character)."""
    return rfc8785.dumps(document)


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


class NotaryHandler(logging.Handler):
    """``NotaryHandler(sink, transport, mode="fail_closed", modes={"app.ui": "fail_open"})``.

    A record whose ``msg`` is a mapping (an event from ``notary.audit_events``)
    is written as that mapping; any other record as ``{"level", "logger",
    "message", "time"}``. Attach it to the audit loggers with ``attach``, never
    behind a ``QueueHandler``: a queue returns before the notary answered,
    which defeats fail-closed. It has no level of its own: a level would drop
    records silently.
    """

    def __init__(self, sink: Path | str, transport: Transport, *, mode: Mode = "fail_closed",
                 modes: Mapping[str, Mode] | None = None):
        super().__init__()
        for m in [mode, *(modes or {}).values()]:
            _check_mode(m)
        self.sink = Path(sink)
        self.transport = transport
        self.mode = mode
        self.modes = dict(modes or {})
        # Our own warnings go to notary.client.*: never write them into the sink they are about.
        self.addFilter(lambda record: not record.name.startswith("notary.client"))
        self.acknowledged_total = 0
        self.submit_failures_total = 0
        self._db_lock = threading.Lock()  # the ledger connection, shared by callers and the drainer
        self._submit_lock = threading.Lock()  # one submission at a time keeps the log in sink order
        self._wake = threading.Event()  # a line was spooled
        self._stop = threading.Event()
        self._closing = False
        self._broken: str | None = None  # why no more lines can be written, after a failed write
        self._last_warning = 0.0
        self._attached: list[logging.Logger] = []
        self._db = sqlite3.connect(str(self.sink) + ".notary", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_LEDGER_SCHEMA)
        try:
            self._file = self._open_sink()
        except BaseException:
            self._db.close()
            raise
        self._drainer = threading.Thread(target=self._drain_forever, name=f"notary-spool {self.sink.name}",
                                         daemon=True)
        self._drainer.start()

    # -- the sink and its ledger -------------------------------------------------

    def _open_sink(self):
        """Open the sink for appending after reconciling it with the ledger.

        Lines written but not yet in the ledger (a crash between the two
        writes) are added to the spool; a torn last line (a crash inside the
        write; no caller was ever answered for it) is cut off. A sink shorter
        than the ledger, or whose last recorded line changed, is refused.
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
            raise HandlerError(f"sink {self.sink} has {size} bytes but its ledger records {end}: "
                               "lines were removed from the audit log")
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
        for raw in complete.splitlines(keepends=True):
            end += len(raw)
            line += 1
            rows.append((line, end, record_digest(raw[:-1]), time.time()))
        if rows:
            with self._db_lock:
                self._db.executemany("INSERT INTO lines (line, end_offset, digest, written_at) VALUES (?, ?, ?, ?)",
                                     rows)
        if created:
            _fsync_dir(self.sink.parent)
        return f

    def _append(self, document: Mapping) -> tuple[int, bytes]:
        """Write one line to the sink (fsync) and its row to the ledger; return (line number, digest)."""
        data = canonical_line(document)
        digest = record_digest(data)
        with self._db_lock:
            if self._broken:
                raise HandlerError(self._broken)
            try:
                self._file.write(data + b"\n")
                self._file.flush()
                os.fsync(self._file.fileno())
                end = self._file.tell()
                (line,) = self._db.execute("SELECT coalesce(max(line), 0) + 1 FROM lines").fetchone()
                self._db.execute("INSERT INTO lines (line, end_offset, digest, written_at) VALUES (?, ?, ?, ?)",
                                 (line, end, digest, time.time()))
            except (OSError, sqlite3.Error) as exc:
                # The sink may now hold a (torn) line the ledger lacks; only the reconciliation at start
                # puts them back in step, so refuse every later line until the handler is reopened.
                self._broken = (f"the audit handler of {self.sink} failed to write a line ({exc}); "
                                "reopen it (a new NotaryHandler on the same sink) to reconcile sink and ledger")
                raise HandlerError(self._broken) from exc
        return line, digest

    # -- submitting -------------------------------------------------------------

    def _submit_spooled(self, until: int | None = None) -> None:
        """Submit spooled lines in line order, in batches, until none is left (or line ``until`` is in).

        Raises ClientError when the notary does not acknowledge a batch.
        """
        with self._submit_lock:
            while True:
                with self._db_lock:
                    rows = self._db.execute("SELECT line, digest FROM lines WHERE entry_index IS NULL "
                                            "ORDER BY line LIMIT ?", (BATCH_LINES,)).fetchall()
                if not rows or (until is not None and rows[0][0] > until):
                    return
                try:
                    indices = self.transport.submit_indices([d for _, d in rows])
                    if len(indices) != len(rows):
                        raise ClientError(f"the notary answered {len(indices)} indices for {len(rows)} digests")
                except Exception as exc:
                    # Whatever went wrong, the lines are not acknowledged: one error type for the callers.
                    self.submit_failures_total += 1
                    if isinstance(exc, ClientError):
                        raise
                    raise ClientError(f"submitting through {type(self.transport).__name__} failed: "
                                      f"{type(exc).__name__}: {exc}") from exc
                now = time.time()
                with self._db_lock:
                    self._db.execute("BEGIN")
                    self._db.executemany("UPDATE lines SET entry_index = ?, acknowledged_at = ? WHERE line = ?",
                                         [(i, now, line) for i, (line, _) in zip(indices, rows)])
                    self._db.execute("COMMIT")
                self.acknowledged_total += len(rows)

    def _drain_forever(self) -> None:
        delay = RETRY_FIRST
        while not self._stop.is_set():
            self._wake.clear()  # before submitting: a line spooled meanwhile wakes the next wait at once
            try:
                self._submit_spooled()
            except Exception as exc:  # the thread must outlive any failure, or the spool would sit unnoticed
                self._warn_spooled(str(exc))
                self._stop.wait(delay)  # back off; new lines do not hurry a notary that is away
                delay = min(delay * 2, RETRY_MAX)
                continue
            delay = RETRY_FIRST
            self._wake.wait()

    def _warn_spooled(self, cause: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARN_INTERVAL:
            self._last_warning = now
            log.warning("audit spool of %s holds %d lines not yet acknowledged by the notary: %s",
                        self.sink, self.spool_depth, cause)

    # -- the public interface ---------------------------------------------------

    def attach(self, logger: logging.Logger | str, mode: Mode | None = None) -> logging.Logger:
        """Make ``logger`` an audit logger of this handler: every call on it is a record.

        Sets its mode (default: the handler's), adds the handler, lets every
        level through (a level filter would drop a record silently, before any
        handler sees it) and stops propagation, so audit records stay out of
        the application's logs and its handlers cannot swallow the exception.
        """
        logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        if mode is not None:
            self.modes[logger.name] = _check_mode(mode)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        if self not in logger.handlers:
            logger.addHandler(self)
            self._attached.append(logger)
        return logger

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
        NotAcknowledgedError. fail-open: returns with ``index=None`` once the
        line is spooled.
        """
        mode = _check_mode(mode or self.mode)
        if self._closing:
            raise HandlerError(f"the audit handler of {self.sink} is closed")
        line, digest = self._append(document)
        if mode == "fail_open":
            self._wake.set()
            return Receipt(line, digest, None)
        try:
            self._submit_spooled(until=line)
        except ClientError as exc:
            with self._db_lock:
                self._db.execute("UPDATE lines SET refused_to_caller = 1 WHERE line = ?", (line,))
            self._wake.set()  # the drainer submits it once the notary is back, keeping the sink verifiable
            raise NotAcknowledgedError(self.sink, line, str(exc)) from None
        return Receipt(line, digest, self.index_of(line))

    def emit(self, record: logging.LogRecord) -> None:
        """Unlike most handlers, lets NotAcknowledgedError propagate to the logging call.

        ``logging.Handler.handle`` does not catch what ``emit`` raises; only
        handlers that call ``handleError`` themselves swallow errors, and this
        one never does, so ``logging.raiseExceptions`` has no effect here.
        """
        if isinstance(record.msg, Mapping):
            document = record.msg
        else:
            document = {"level": record.levelname, "logger": record.name, "message": record.getMessage(),
                        "time": utc_millis(datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc))}
        self.audit(document, mode=self.mode_for(record.name))

    def index_of(self, line: int) -> int | None:
        """The log index acknowledged for a sink line, or None while it is spooled."""
        with self._db_lock:
            row = self._db.execute("SELECT entry_index FROM lines WHERE line = ?", (line,)).fetchone()
        if row is None:
            raise HandlerError(f"sink {self.sink} has no line {line}")
        return row[0]

    @property
    def spool_depth(self) -> int:
        """Lines written to the sink and not yet acknowledged by the notary."""
        with self._db_lock:
            return self._db.execute("SELECT count(*) FROM lines WHERE entry_index IS NULL").fetchone()[0]

    def drain(self, timeout: float | None = None) -> bool:
        """Submit the spool from this thread until it is empty (True) or ``timeout`` seconds passed (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                self._submit_spooled()
                return True
            except ClientError:
                if deadline is not None and time.monotonic() + RETRY_FIRST >= deadline:
                    return False
                time.sleep(RETRY_FIRST)

    def metrics_text(self) -> str:
        """Prometheus text exposition of the spool, to append to the application's /metrics."""
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
        ])

    def close(self) -> None:
        """Detach, stop the drainer; what is still spooled stays on disk for the next start."""
        for logger in self._attached:
            logger.removeHandler(self)
        if not self._closing:
            self._closing = True
            self._stop.set()
            self._wake.set()
            self._drainer.join()
            with self._db_lock:
                self._file.close()
                self._db.close()
        super().close()


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
