"""The durable Merkle log: SQLite (WAL, synchronous=FULL) holding hash tiles and entries.

Layout (docs/FORMATS.md, "Store"): the C2SP tlog-tiles idea with tiles of
height 4. Tile ``(L, N)`` holds the hashes of the tree nodes at level ``4*L``
with indices ``16*N .. 16*N+15`` (fewer in the rightmost, partial tile). Level-0
tiles hold the leaf hashes. Any complete subtree hash is then at most 15
SHA-256 calls away from one tile read, so a tree head or proof is O(log n)
reads, and the store holds about 1.07 hashes per leaf.

Guarantees:
- An append (entries or precomputed leaf hashes) is one transaction: after a
  crash the store holds exactly the committed appends (tests/test_store.py,
  ``test_kill_mid_append_keeps_exactly_committed_batches``).
- Opening never rebuilds anything: the tree size is read off the last level-0
  tile and the shape of every level is checked in O(log n) queries.
- Tiles that are complete never change, so they are cached (bounded LRU);
  memory does not grow with the log.
- The digest index that ``find_by_digests`` uses is a derived file of its own
  (notary/digest_index.py), built after the append by ``index_pending``; a
  lookup scans the entries the index does not cover yet (once for all the
  digests it looks up), so it never misses an appended entry.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import sqlite3
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from notary import merkle
from notary.digest_index import EPOCH_BITS, DigestIndex, digest_prefix, index_path, sql_text
from notary.entry import EntryRun
from notary.errors import StoreError

log = logging.getLogger("notary")

FORMAT_NAME = "merkle-notary-store"
# 2: the digest index moved to its own file. A version 1 store (which kept it
# in a table of its own) is read as it is and upgraded by a writable open.
FORMAT_VERSION = 2
_UPGRADABLE_VERSION = "1"

TILE_HEIGHT = 4  # tree levels per tile level (1 <= TILE_HEIGHT, fixed for a store's life)
TILE_WIDTH = 1 << TILE_HEIGHT  # hashes in a full tile
TILE_BYTES = TILE_WIDTH * merkle.HASH_SIZE
_LEVEL_SHIFT = 48  # tile row id = tile level << 48 | tile index (2**48 tiles a level is ample)
_PAGE_SIZE = 8192  # fits 15 full tiles a page; the 4 KiB default wastes one tile's room in eight
# A lookup of up to this many digests scans the unindexed entries with the
# digests in the statement (SQLite compares); more, and each v1 entry's digest
# comes back to Python once and is looked up in a dict.
_SCAN_IN_SQL_MAX = 500
_MIN_SLICED_RUN = 8  # entries in a run worth one INSERT that slices its blob (below: a row at a time)
# verify() reads this many entries (or this many leaves' worth of tiles) a
# statement. Each statement is a read transaction of its own, so a check
# beside a running daemon never holds one snapshot for minutes: the WAL
# checkpointer gets past it, and the WAL does not grow with the ingest.
_VERIFY_PAGE = 16_384
DEFAULT_TILE_CACHE = 4096  # complete tiles kept in memory: 2 MiB
_CACHED_LEVEL = 2 * TILE_HEIGHT  # subtree hashes this high or higher are memoized
DEFAULT_NODE_CACHE = 1 << 17  # memoized subtree hashes: about 20 MiB at most

_sha256 = hashlib.sha256

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tiles (id INTEGER PRIMARY KEY, hashes BLOB NOT NULL);
CREATE TABLE entries (idx INTEGER PRIMARY KEY, entry BLOB NOT NULL);
"""


def _tile_id(level: int, index: int) -> int:
    return level << _LEVEL_SHIFT | index


def _full_tile_roots(buf: bytes) -> list[bytes]:
    """Roots of the complete tiles in ``buf`` (hashes of one tile level, the first at a tile boundary).

    One tree level at a time across all the tiles: each pair of neighbouring
    hashes is one slice, so a level is one comprehension (a quarter less CPU
    than hashing tile by tile, which was about a quarter of a commit's CPU).
    """
    level = buf[: len(buf) - len(buf) % TILE_BYTES]
    pair = 2 * merkle.HASH_SIZE
    for _ in range(TILE_HEIGHT):
        level = b"".join([_sha256(b"\x01" + level[i : i + pair]).digest() for i in range(0, len(level), pair)])
    return [level[i : i + merkle.HASH_SIZE] for i in range(0, len(level), merkle.HASH_SIZE)]


class LogStore:
    """An append-only Merkle log in one SQLite file. Not thread-safe: one per thread."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = False, readonly: bool = False,
                 tile_cache: int = DEFAULT_TILE_CACHE, node_cache: int = DEFAULT_NODE_CACHE,
                 wal_autocheckpoint: int | None = None) -> None:
        """Open (or ``create``) the store at ``path``.

        ``wal_autocheckpoint``: pages of write-ahead log after which a commit
        copies it back into the database itself (SQLite's default is 1000).
        Beside a ``WalCheckpointer`` that commit finds nearly all of it copied.
        """
        self.path = Path(path)
        if not self.path.exists() and not create:
            raise StoreError(f"no log store at {self.path}")
        if create and readonly:
            raise StoreError("a store cannot be created read-only")
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cache_limit = tile_cache
        self._nodes: dict[tuple[int, int], bytes] = {}  # insertion-ordered: evicts the oldest
        self._node_limit = node_cache
        self._head: tuple[int, bytes] | None = None
        self._index: DigestIndex | None = None
        self._index_trusted: tuple[int, bytes] = (0, b"")  # the last index state checked against this log
        self._index_rejected: tuple[int, bytes] | None = None  # the last one found not to belong to it
        try:
            uri = f"file:{self.path}?mode=ro" if readonly else f"file:{self.path}"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open log store {self.path}: {exc}") from None
        # A tampered row may hold TEXT where a BLOB belongs: read it as bytes,
        # so that the shape and root checks judge it, not the UTF-8 decoder.
        self._db.text_factory = bytes
        try:
            self._setup(create, readonly)
            self._db.execute("BEGIN")  # one snapshot: a writer beside us may commit between the two
            try:
                self._size = self._read_size()
                self._check_shape(self._size)
            finally:
                self._db.execute("COMMIT")
            if self._version == _UPGRADABLE_VERSION and not readonly:
                self._upgrade()
            if wal_autocheckpoint is not None and not readonly:
                self._db.execute(f"PRAGMA wal_autocheckpoint = {int(wal_autocheckpoint)}")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"log store {self.path} is unreadable: {exc}") from None
        except StoreError:
            self._db.close()
            raise

    # -- opening ------------------------------------------------------------

    def _setup(self, create: bool, readonly: bool) -> None:
        db = self._db
        fresh = create and not db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone()
        if fresh:
            db.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
        if not readonly:
            mode = sql_text(db.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            if mode.lower() != "wal":
                raise StoreError(f"log store {self.path} cannot use write-ahead logging (journal mode {mode})")
        # FULL: a commit returns only after the WAL is fsynced, so an
        # acknowledged append survives power loss, not only a process crash.
        db.execute("PRAGMA synchronous = FULL")
        if fresh:
            with self._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("format", FORMAT_NAME), ("version", str(FORMAT_VERSION)), ("tile_height", str(TILE_HEIGHT))],
                )
        try:
            meta = {sql_text(k): sql_text(v) for k, v in db.execute("SELECT key, value FROM meta")}
        except sqlite3.OperationalError:
            raise StoreError(f"{self.path} is not a merkle-notary log store (no meta table)") from None
        if meta.get("format") != FORMAT_NAME:
            raise StoreError(f"{self.path} is not a merkle-notary log store (format {meta.get('format')!r})")
        self._version = meta.get("version")
        if self._version not in (str(FORMAT_VERSION), _UPGRADABLE_VERSION):
            raise StoreError(
                f"log store {self.path} has format version {meta.get('version')}, this software reads version {FORMAT_VERSION}"
            )
        if meta.get("tile_height") != str(TILE_HEIGHT):
            raise StoreError(f"log store {self.path} has tile height {meta.get('tile_height')}, expected {TILE_HEIGHT}")

    def _upgrade(self) -> None:
        """Version 1 -> 2: the digest index table gives way to the index file (rebuilt from the entries)."""
        with self._transaction():
            self._db.execute("DROP TABLE IF EXISTS digests")
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'version'", (str(FORMAT_VERSION),))
        self._version = str(FORMAT_VERSION)
        log.info("log store %s upgraded to format version %d; its digest index is rebuilt in %s",
                 self.path, FORMAT_VERSION, index_path(self.path))

    def _last_tile(self, level: int) -> tuple[int, int] | None:
        """(index, byte length) of the last tile of a tile level, or None."""
        row = self._db.execute(
            "SELECT id, length(hashes) FROM tiles WHERE id >= ? AND id < ? ORDER BY id DESC LIMIT 1",
            (_tile_id(level, 0), _tile_id(level + 1, 0)),
        ).fetchone()
        return None if row is None else (row[0] - _tile_id(level, 0), row[1])

    def _read_size(self) -> int:
        last = self._last_tile(0)
        if last is None:
            return 0
        index, length = last
        if length % merkle.HASH_SIZE or not 0 < length <= TILE_BYTES:
            raise StoreError(f"log store {self.path} is corrupt: leaf tile {index} is {length} bytes")
        return index * TILE_WIDTH + length // merkle.HASH_SIZE

    def _check_shape(self, size: int) -> None:
        """Every tile level must hold exactly the nodes a tree of ``size`` leaves has."""
        level = 0
        while True:
            nodes = size >> (TILE_HEIGHT * level)
            last = self._last_tile(level)
            if nodes == 0:
                if last is not None:
                    raise StoreError(f"log store {self.path} is corrupt: tile level {level} has tiles a tree of {size} leaves does not have")
                return
            want = ((nodes - 1) // TILE_WIDTH, (nodes - 1) % TILE_WIDTH + 1)
            if last is None or last != (want[0], want[1] * merkle.HASH_SIZE):
                got = "none" if last is None else f"tile {last[0]} of {last[1] // merkle.HASH_SIZE} hashes"
                raise StoreError(
                    f"log store {self.path} is corrupt: tile level {level} should end with tile {want[0]} "
                    f"of {want[1]} hashes for a tree of {size} leaves, found {got}"
                )
            level += 1

    # -- reading ------------------------------------------------------------

    @property
    def size(self) -> int:
        """Number of leaves committed."""
        return self._size

    def refresh(self) -> int:
        """Re-read the size, to see appends committed through another connection."""
        self._size = self._read_size()
        return self._size

    def _tile(self, level: int, index: int) -> bytes:
        tid = _tile_id(level, index)
        data = self._cache.get(tid)
        if data is not None:
            self._cache.move_to_end(tid)
            return data
        try:
            row = self._db.execute("SELECT hashes FROM tiles WHERE id = ?", (tid,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"log store {self.path} is unreadable at tile {index} of level {level}: {exc}") from None
        if row is None:
            raise StoreError(f"log store {self.path} is missing tile {index} of level {level}")
        data = row[0]
        if len(data) == TILE_BYTES:  # complete tiles never change
            self._cache[tid] = data
            if len(self._cache) > self._cache_limit:
                self._cache.popitem(last=False)
        return data

    def subtree_hash(self, level: int, index: int) -> bytes:
        """Hash of the complete subtree of height ``level`` over leaves [index*2**level, (index+1)*2**level)."""
        if level >= _CACHED_LEVEL:
            node = self._nodes.get((level, index))
            if node is not None:
                return node
        tile_level, rise = divmod(level, TILE_HEIGHT)
        first = index << rise  # first node of the subtree at level TILE_HEIGHT*tile_level
        tile_index, offset = divmod(first, TILE_WIDTH)
        data = self._tile(tile_level, tile_index)
        end = (offset + (1 << rise)) * 32
        if end > len(data):
            raise StoreError(f"log store {self.path} has no complete subtree at level {level}, index {index}")
        if rise == 0:
            node = data[end - 32 : end]
        else:
            hs = [data[i : i + 32] for i in range(offset * 32, end, 32)]
            while len(hs) > 1:
                hs = [_sha256(b"\x01" + hs[i] + hs[i + 1]).digest() for i in range(0, len(hs), 2)]
            node = hs[0]
        if level >= _CACHED_LEVEL:
            # Complete subtrees never change; the high ones are shared by most proofs.
            self._nodes[(level, index)] = node
            if len(self._nodes) > self._node_limit:
                self._nodes.pop(next(iter(self._nodes)))
        return node

    def _check_size(self, size: int | None) -> int:
        if size is None:
            return self._size
        if not 0 <= size <= self._size:
            raise StoreError(f"tree size {size} is not in the log, which has {self._size} leaves")
        return size

    def tree_hash(self, size: int | None = None) -> bytes:
        """Root hash of the tree of the first ``size`` leaves (default: all)."""
        size = self._check_size(size)
        if self._head is not None and self._head[0] == size:
            return self._head[1]
        root = merkle.tree_hash(size, self.subtree_hash)
        if size == self._size:
            self._head = (size, root)
        return root

    def leaf_hash(self, index: int) -> bytes:
        if not 0 <= index < self._size:
            raise StoreError(f"leaf index {index} is not in the log, which has {self._size} leaves")
        return self.subtree_hash(0, index)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        size = self._check_size(size)
        if not 0 <= index < size:
            raise StoreError(f"leaf index {index} is not in a tree of size {size}")
        return merkle.inclusion_proof(index, size, self.subtree_hash)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        new_size = self._check_size(new_size)
        if not 0 <= old_size <= new_size:
            raise StoreError(f"no consistency proof from tree size {old_size} to {new_size}")
        return merkle.consistency_proof(old_size, new_size, self.subtree_hash)

    def entry(self, index: int) -> bytes | None:
        """The entry at ``index``, or None where a precomputed leaf hash was appended."""
        if not 0 <= index < self._size:
            raise StoreError(f"leaf index {index} is not in the log, which has {self._size} leaves")
        row = self._db.execute("SELECT entry FROM entries WHERE idx = ?", (index,)).fetchone()
        return None if row is None else row[0]

    def entries(self, start: int, end: int) -> dict[int, bytes]:
        """The entries at indices ``[start, end)`` that have one (leaves appended bare have none)."""
        if not 0 <= start <= end <= self._size:
            raise StoreError(f"entries [{start}, {end}) are not in the log, which has {self._size} leaves")
        rows = self._db.execute("SELECT idx, entry FROM entries WHERE idx >= ? AND idx < ?", (start, end))
        return dict(rows)

    def find_by_digest(self, digest: bytes) -> list[int]:
        """Indices of the v1 entries (0x01 || digest || ...) that hold ``digest``, in log order."""
        return self.find_by_digests([digest])[0]

    def find_by_digests(self, digests: Sequence[bytes]) -> list[list[int]]:
        """For each of ``digests``, in order: the indices of the v1 entries that hold it, in log order.

        The digest index answers for the leaves it covers; the entries past
        it (appended, not indexed yet) are scanned once for all the digests,
        not once each: a 10,000-digest ``POST /v1/lookup`` while the index is
        rebuilt would otherwise scan the unindexed entries 10,000 times.
        Every answer is checked against the entry itself.
        """
        found: dict[bytes, list[int]] = {d: [] for d in digests}  # each distinct digest once
        if not found:
            return []
        size = self._size
        covered = self._trusted_index_size() if size else 0
        if covered:
            index = self._digest_index(writable=False)
            for digest in found:
                candidates = index.candidates(digest, covered)
                if candidates:
                    marks = ",".join("?" * len(candidates))
                    rows = self._db.execute(f"SELECT idx, entry FROM entries WHERE idx IN ({marks}) ORDER BY idx",
                                            candidates)
                    found[digest] = [idx for idx, entry in rows if entry[:1] == b"\x01" and entry[1:33] == digest]
        if covered < size:
            self._scan_for_digests(covered, size, found)
        return [list(found[d]) for d in digests]

    def _scan_for_digests(self, start: int, end: int, found: dict[bytes, list[int]]) -> None:
        """Append to ``found[d]`` the indices in ``[start, end)`` of the v1 entries holding ``d``: one pass over them."""
        if len(found) <= _SCAN_IN_SQL_MAX:
            # SQLite compares every entry with the few wanted ones itself.
            marks = ",".join("?" * len(found))
            rows = self._db.execute(
                f"SELECT idx, substr(entry, 2, 32) FROM entries WHERE idx >= ? AND idx < ? "
                f"AND substr(entry, 1, 33) IN ({marks}) ORDER BY idx",
                (start, end, *(b"\x01" + d for d in found)))
        else:
            # Many digests: one pass over the v1 entries, each looked up in the
            # dict (an entry cut short yields fewer than 32 bytes: no match).
            rows = self._db.execute(
                "SELECT idx, substr(entry, 2, 32) FROM entries WHERE idx >= ? AND idx < ? "
                "AND substr(entry, 1, 1) = x'01' ORDER BY idx", (start, end))
        for idx, digest in rows:
            hits = found.get(digest)
            if hits is not None:
                hits.append(idx)

    @property
    def index_path(self) -> Path:
        return index_path(self.path)

    def _digest_index(self, *, writable: bool) -> DigestIndex | None:
        """The index file, opened on first use; None when there is none to read (yet)."""
        if self._index is not None and (self._index.writable or not writable):
            return self._index
        if not writable and not self.index_path.exists():
            return None
        if self._index is not None:
            self._index.close()
            self._index = None
        self._index = DigestIndex(self.index_path, writable=writable)
        return self._index

    def _trusted_index_size(self, state: tuple[int, bytes] | None = None) -> int:
        """How many leaves of this log the digest index covers, 0 if it has none or belongs to another log.

        ``state``: the index's (boundary, root) as the caller already read it, else read here.
        """
        if state is None:
            index = self._digest_index(writable=False)
            if index is None:
                return 0
            state = index.state()
        covered, root = state
        if covered == 0 or state == self._index_trusted:
            return covered
        if covered > self._size or self.tree_hash(covered) != root:
            if state != self._index_rejected:
                log.warning("digest index %s covers %d leaves with root %s, which is not this log (%d leaves): "
                            "not used; the next indexing rebuilds it", self.index_path, covered, root.hex(), self._size)
                self._index_rejected = state
            return 0
        self._index_trusted = state
        return covered

    @property
    def indexed(self) -> int:
        """Leaves the digest index covers (lookups scan the entries past it)."""
        return self._trusted_index_size()

    def index_pending(self, limit: int | None = None) -> int:
        """Index up to ``limit`` (default: all) leaves past the digest index; return how many.

        Creates the index file if there is none and rebuilds one that does
        not belong to this log. Needs no write access to the log itself: the
        daemon runs it on a read-only store of its own, beside the writer.
        """
        index = self._digest_index(writable=True)
        start = self._trusted_index_size()
        if start == 0 and index.state()[0] != 0:
            index.reset()
            self._index_trusted = (0, b"")
        end = self._size if limit is None else min(self._size, start + max(0, limit))
        if end <= start:
            return 0
        root = self.tree_hash(end)
        index.add(self.path, start, end, root)
        self._index_trusted = (end, root)
        return end - start

    # -- appending ----------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def append_entries(self, entries: Sequence[bytes]) -> int:
        """Append entries (leaf hash SHA-256(0x00 || entry)); return the index of the first."""
        return self.append_runs(EntryRun.group(entries))

    def append_runs(self, runs: Sequence[EntryRun]) -> int:
        """Append the entries of ``runs``, in order, in one transaction; return the index of the first."""
        runs = EntryRun.joined(runs)
        leaf = merkle.leaf_hash
        leaves: list[bytes] = []
        for run in runs:
            data, width = run.data, run.width
            leaves += [leaf(data[i : i + width]) for i in range(0, len(data), width)] if width else [leaf(b"")] * run.count
        return self._append(leaves, runs)

    def append_leaf_hashes(self, hashes: Sequence[bytes]) -> int:
        """Append precomputed leaf hashes (no entries kept); return the index of the first."""
        for i, h in enumerate(hashes):
            if not isinstance(h, bytes) or len(h) != merkle.HASH_SIZE:
                raise StoreError(f"leaf hash {i} of the batch is not {merkle.HASH_SIZE} bytes")
        return self._append(hashes, None)

    def _append(self, leaves: Sequence[bytes], runs: Sequence[EntryRun] | None) -> int:
        start = self._size
        if not leaves:
            return start
        try:
            with self._transaction():
                # Another writer on the same file would make our size stale;
                # appending on top of it would corrupt the tiles.
                if self._read_size() != start:
                    raise StoreError(f"log store {self.path} was appended to by another writer")
                if runs is not None:
                    self._insert_entries(start, runs)
                self._db.executemany("INSERT OR REPLACE INTO tiles (id, hashes) VALUES (?, ?)",
                                     self._tile_rows(start, leaves))
        except sqlite3.Error as exc:
            raise StoreError(f"append to log store {self.path} failed, nothing was appended: {exc}") from None
        self._size = start + len(leaves)
        self._head = None
        return start

    def _insert_entries(self, start: int, runs: Sequence[EntryRun]) -> None:
        """Insert the entries of ``runs`` at indices ``start...``, inside the caller's transaction.

        A run of many entries is one statement that slices its blob inside
        SQLite: a row-by-row executemany costs twice the CPU and takes Python's
        GIL back once a row, which stalls the threads beside it. A short run
        is not worth a statement of its own.
        """
        index = start
        for run in runs:
            count = run.count
            if count < _MIN_SLICED_RUN or not run.width:  # (substr of an empty blob is NULL)
                self._db.executemany("INSERT INTO entries (idx, entry) VALUES (?, ?)", zip(range(index, index + count), run))
            else:
                self._db.execute(
                    """
                    WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?1)
                    INSERT INTO entries (idx, entry) SELECT ?2 + i, substr(?3, i * ?4 + 1, ?4) FROM n
                    """, (count, index, run.data, run.width))
            index += count

    def _tile_rows(self, start: int, nodes: Sequence[bytes]) -> list[tuple[int, bytes]]:
        """The tile rows that change when ``nodes`` are appended at leaf index ``start``.

        At each tile level, the new nodes extend the partial tile (if any);
        every tile they complete contributes one new node to the level above.
        """
        rows: list[tuple[int, bytes]] = []
        level = 0
        while nodes:
            tile_index, offset = divmod(start, TILE_WIDTH)
            head = self._tile(level, tile_index)[: offset * 32] if offset else b""
            buf = head + b"".join(nodes)
            for i in range(0, len(buf), TILE_BYTES):
                rows.append((_tile_id(level, tile_index + i // TILE_BYTES), buf[i : i + TILE_BYTES]))
            nodes = _full_tile_roots(buf)
            start = tile_index
            level += 1
        return rows

    def verify(self) -> int:
        """Recompute the whole store from its leaves; raise ``StoreError`` at the first inconsistency.

        Opening checks only the shape, and a daemon start checks the root
        against the last signed checkpoint; this finds what neither can: an
        entry whose stored leaf hash no longer matches it, or a stored node
        that is not the hash of its children, or a digest index that misses
        or misplaces an entry. O(n) time, constant memory.
        Returns the number of leaves checked.

        Safe beside a daemon appending to the store: it checks the tree of
        the size the store had when opened (or last refreshed), whose entries
        and complete tiles never change (an append only extends the last tile
        of each level), and reads them in short statements (``_VERIFY_PAGE``).
        """
        size = self._size
        rows = self._paged("SELECT idx, entry FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                           0, size, _VERIFY_PAGE)
        leaves = self._level_hashes(0)
        position = 0
        for index, entry in rows:
            while position <= index:
                leaf = next(leaves)
                position += 1
            if merkle.leaf_hash(entry) != leaf:
                raise StoreError(f"log store {self.path} is corrupt: entry {index} does not match its stored leaf hash")
        level = 0
        while size >> (TILE_HEIGHT * (level + 1)):
            children, parents = self._level_hashes(level), self._level_hashes(level + 1)
            for node in range(size >> (TILE_HEIGHT * (level + 1))):
                group = b"".join(next(children) for _ in range(TILE_WIDTH))
                if _full_tile_roots(group) != [next(parents)]:
                    raise StoreError(
                        f"log store {self.path} is corrupt: the stored hash of leaves "
                        f"[{node << (TILE_HEIGHT * (level + 1))}, {(node + 1) << (TILE_HEIGHT * (level + 1))}) "
                        f"at tree level {TILE_HEIGHT * (level + 1)} is not the hash of its children")
            level += 1
        self._verify_index()
        return size

    def _verify_index(self) -> None:
        """The digest index must hold exactly the v1 entries below its boundary, each under its digest."""
        index = self._digest_index(writable=False)
        if index is None:
            return
        # One reading of the boundary: a running daemon moves it on meanwhile,
        # and the rows below any boundary it had never change.
        state = index.state()
        if state[0] > self._size:
            self.refresh()  # it indexed past the size this check started at
        covered = self._trusted_index_size(state)
        if not covered:
            return
        for epoch in range(((covered - 1) >> EPOCH_BITS) + 1):
            first, end = epoch << EPOCH_BITS, min(covered, (epoch + 1) << EPOCH_BITS)
            rows = self._db.execute("SELECT idx, entry FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx", (first, end))
            want = [(i, digest_prefix(e[1:9])) for i, e in rows if len(e) >= 33 and e[0] == 1]
            got = [row for row in index.rows(epoch) if row[0] < end]
            if got != want:
                wrong = next((w, g) for w, g in itertools.zip_longest(want, got) if w != g)
                raise StoreError(
                    f"digest index {self.index_path} is damaged: it should index {wrong[0]} and has {wrong[1]} "
                    "(entry, digest prefix) there. It is derived from the log: move it aside and it is rebuilt")

    def _level_hashes(self, level: int) -> Iterator[bytes]:
        """Every hash of a tile level of the tree of this size, in order, streamed (a page of tiles a statement).

        A missing tile, or a short one before the last, is a corrupt store. The
        last tile may hold more hashes than this size has: a writer beside us
        extends it.
        """
        tiles = -(-(self._size >> (TILE_HEIGHT * level)) // TILE_WIDTH)
        rows = self._paged("SELECT id, hashes FROM tiles WHERE id >= ? AND id < ? ORDER BY id",
                           _tile_id(level, 0), _tile_id(level, tiles), _VERIFY_PAGE // TILE_WIDTH)
        expected = 0
        for tid, data in rows:
            if tid != _tile_id(level, expected) or (expected < tiles - 1 and len(data) != TILE_BYTES):
                break
            expected += 1
            for i in range(0, len(data), merkle.HASH_SIZE):
                yield data[i : i + merkle.HASH_SIZE]
        if expected < tiles:
            raise StoreError(f"log store {self.path} is corrupt: tile {expected} of level {level} is missing or "
                             f"short (a tree of {self._size} leaves has {tiles} tiles there, each but the last "
                             f"{TILE_WIDTH} hashes)")

    def _paged(self, sql: str, start: int, end: int, page: int) -> Iterator[tuple]:
        """The rows of ``sql`` (keys in [?1, ?2)) for keys in [start, end), one statement of ``page`` keys at a time.

        Each page is read to the end before it is handed out, so no statement
        (and no read transaction) stays open while the caller works.
        """
        for first in range(start, end, page):
            yield from self._db.execute(sql, (first, min(end, first + page))).fetchall()

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
        self._db.close()

    def __enter__(self) -> LogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WalCheckpointer:
    """Copies a store's write-ahead log back into the database, from a connection of its own.

    Left to SQLite, the commit that takes the WAL past ``wal_autocheckpoint``
    pages does the copy (and its fsync) itself, and every acknowledgement
    waiting on that commit pays for it. A PASSIVE checkpoint takes no write
    lock: commits go on while it copies. When one ends between two commits
    the whole WAL is copied, and the next commit starts it over; called often
    enough (a few commits' worth of frames a pass), that happens several times
    a second under load and the writer's own checkpoint never runs.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, isolation_level=None,
                                       check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open log store {self.path} to checkpoint it: {exc}") from None

    def checkpoint(self) -> tuple[int, int]:
        """(frames in the WAL, frames copied into the database)."""
        try:
            _busy, frames, copied = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"checkpointing log store {self.path} failed: {exc}") from None
        return frames, copied

    def close(self) -> None:
        self._db.close()
