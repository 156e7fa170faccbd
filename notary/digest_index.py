"""The digest index: finds a log's v1 entries by the digest they hold.

It is derived data, kept in its own SQLite file beside the log store
(``log.db`` -> ``log.digests.db``) and built after the entries are
acknowledged (``LogStore.index_pending``; the daemon runs it on a thread of
its own). Building it therefore never holds the log's write lock and never
grows the log's write-ahead log: an acknowledgement waits for the entries and
the tree, not for the index (docs/PERFORMANCE.md, "Acknowledgement latency").

Invariants a reader relies on:
- ``indexed`` (meta) is how many leaves of the log the index covers; the rows
  of leaves below it are complete and never change, and ``indexed`` moves in
  the same transaction as the rows it covers. So a reader that reads
  ``indexed`` and then the rows below it sees a complete index of that prefix,
  whatever the indexer commits in between.
- ``root`` (meta) is the log's tree hash at ``indexed``: an index left over
  from another log, or from a longer history of this one (a store restored
  from an older backup), is recognized and not trusted.
- Commits use synchronous=NORMAL: a power loss may take back the last
  transactions, rows and boundary together, never one without the other
  (write-ahead logging). What is lost is rebuilt from the entries.

A lookup (``LogStore.find_by_digest``) confirms every candidate against the
entry itself, so a damaged index can hide an entry (``notary check-store``
finds that) but never make a lookup answer a wrong one.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from notary.errors import StoreError

FORMAT_NAME = "merkle-notary-digest-index"
FORMAT_VERSION = 1
EPOCH_BITS = 16  # entries per index epoch: 65536

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- Keyed by epoch first so that indexing touches only the newest part of the
-- B-tree: keyed by digest alone, every batch would rewrite pages all over it.
-- A lookup probes each epoch once.
CREATE TABLE digests (
    epoch INTEGER NOT NULL,   -- idx >> EPOCH_BITS
    prefix BLOB NOT NULL,     -- the digest's first 8 bytes
    idx INTEGER NOT NULL,
    PRIMARY KEY (epoch, prefix, idx)
) WITHOUT ROWID;
"""


def index_path(store_path: str | Path) -> Path:
    """Where the digest index of the store at ``store_path`` lives."""
    path = Path(store_path)
    return path.with_name(f"{path.stem}.digests{path.suffix}" if path.suffix else f"{path.name}.digests")


def digest_prefix(digest: bytes) -> bytes:
    return bytes(digest[:8])


def sql_text(value: bytes | str) -> str:
    """A TEXT value read with ``text_factory = bytes``, as text."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class DigestIndex:
    """One connection to a digest index file. Not thread-safe: one per thread."""

    def __init__(self, path: Path, *, writable: bool) -> None:
        self.path = path
        self.writable = writable
        uri = f"file:{path}" if writable else f"file:{path}?mode=ro"
        try:
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(self._unusable(exc)) from None
        self._db.text_factory = bytes
        try:
            if writable:
                self._setup()
            self._check_format()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(self._unusable(exc)) from None
        except StoreError:
            self._db.close()
            raise

    def _unusable(self, why: object) -> str:
        return (f"digest index {self.path} is unusable: {why}. It is derived from the log store: "
                "move it aside and it is rebuilt from the entries")

    def _setup(self) -> None:
        db = self._db
        mode = sql_text(db.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        if mode.lower() != "wal":
            raise StoreError(self._unusable(f"it cannot use write-ahead logging (journal mode {mode})"))
        db.execute("PRAGMA synchronous = NORMAL")
        if db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone():
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            if not db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                               [("format", FORMAT_NAME), ("version", str(FORMAT_VERSION)),
                                ("epoch_bits", str(EPOCH_BITS)), ("indexed", "0"), ("root", "")])
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _check_format(self) -> None:
        try:
            meta = {sql_text(k): sql_text(v) for k, v in self._db.execute("SELECT key, value FROM meta")}
        except sqlite3.OperationalError:
            raise StoreError(self._unusable("it has no meta table")) from None
        if meta.get("format") != FORMAT_NAME:
            raise StoreError(self._unusable(f"its format is {meta.get('format')!r}"))
        if meta.get("version") != str(FORMAT_VERSION) or meta.get("epoch_bits") != str(EPOCH_BITS):
            raise StoreError(self._unusable(f"it has version {meta.get('version')} and epoch bits "
                                            f"{meta.get('epoch_bits')}, this software writes {FORMAT_VERSION} and {EPOCH_BITS}"))

    def state(self) -> tuple[int, bytes]:
        """(leaves covered, the log's tree hash at that size; empty when none are)."""
        try:
            meta = dict(self._db.execute("SELECT key, value FROM meta WHERE key IN ('indexed', 'root')"))
        except sqlite3.DatabaseError as exc:
            raise StoreError(self._unusable(exc)) from None
        indexed, root = sql_text(meta.get(b"indexed", b"")), sql_text(meta.get(b"root", b""))
        try:
            return int(indexed), bytes.fromhex(root)
        except ValueError:
            raise StoreError(self._unusable(f"its boundary is {indexed!r} with root {root!r}")) from None

    def candidates(self, digest: bytes, below: int) -> list[int]:
        """Indices below ``below`` whose entries may hold ``digest`` (same 8-byte prefix), in order."""
        if below <= 0:
            return []
        try:
            rows = self._db.execute(
                """
                WITH RECURSIVE epochs(e) AS (SELECT 0 UNION ALL SELECT e + 1 FROM epochs WHERE e < ?)
                SELECT d.idx FROM epochs JOIN digests d ON d.epoch = epochs.e AND d.prefix = ?
                WHERE d.idx < ? ORDER BY d.idx
                """,
                ((below - 1) >> EPOCH_BITS, digest_prefix(digest), below),
            )
            return [idx for (idx,) in rows]
        except sqlite3.DatabaseError as exc:
            raise StoreError(self._unusable(exc)) from None

    def add(self, log_path: Path, start: int, end: int, root: bytes) -> None:
        """Index the entries of leaves ``[start, end)`` of the store at ``log_path``, whose tree hash at ``end`` is ``root``.

        One INSERT ... SELECT reads the entries straight from the store (attached
        read-only): SQLite does the whole batch without taking Python's GIL back
        once a row, so indexing beside the daemon's commits does not stall them.
        """
        db = self._db
        try:
            db.execute("ATTACH DATABASE ? AS log", (f"file:{log_path}?mode=ro",))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read log store {log_path} to index it: {exc}") from None
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                (indexed,) = db.execute("SELECT value FROM meta WHERE key = 'indexed'").fetchone()
                if sql_text(indexed) != str(start):
                    raise StoreError(f"digest index {self.path} covers {sql_text(indexed)} leaves, not {start}: "
                                     "another indexer is writing it")
                # In key order, each B-tree page is visited once.
                db.execute(
                    f"""
                    INSERT INTO digests (epoch, prefix, idx)
                    SELECT idx >> {EPOCH_BITS}, substr(entry, 2, 8), idx FROM log.entries
                    WHERE idx >= ? AND idx < ? AND length(entry) >= 33 AND substr(entry, 1, 1) = x'01'
                    ORDER BY 1, 2, 3
                    """, (start, end))
                db.executemany("UPDATE meta SET value = ? WHERE key = ?", [(str(end), "indexed"), (root.hex(), "root")])
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"indexing leaves [{start}, {end}) in {self.path} failed, nothing was indexed: {exc}") from None
        finally:
            db.execute("DETACH DATABASE log")

    def reset(self) -> None:
        """Forget everything: the index covers no leaf."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM digests")
                db.executemany("UPDATE meta SET value = ? WHERE key = ?", [("0", "indexed"), ("", "root")])
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise StoreError(self._unusable(exc)) from None

    def rows(self, epoch: int) -> list[tuple[int, bytes]]:
        """(idx, prefix) of one epoch, in index order (for ``LogStore.verify``)."""
        try:
            rows = self._db.execute("SELECT idx, prefix FROM digests WHERE epoch = ? ORDER BY idx", (epoch,))
            return list(rows)
        except sqlite3.DatabaseError as exc:
            raise StoreError(self._unusable(exc)) from None

    def close(self) -> None:
        self._db.close()
