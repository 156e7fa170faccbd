"""The logs under comparison, behind one small interface.

Sizes and indices are 0-based as in RFC 9162; the pymerkle adapters translate
to pymerkle's 1-based leaf indices. ``ours`` is notary.store.LogStore; the
baselines are pymerkle's SqliteTree (rollback journal, SQLite's default
synchronous=FULL, so its appends are durable too) and InmemoryTree.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import pymerkle

from notary.store import LogStore


class Ours:
    name = "ours"

    def __init__(self, path: Path, create: bool = False) -> None:
        self.path = path
        self.log = LogStore(path, create=create)
        self.append_leaf_hashes = self.log.append_leaf_hashes

    def append(self, entries: Sequence[bytes]) -> int:
        """Append, then index: the daemon builds the digest index behind its commits, so its cost counts here."""
        first = self.log.append_entries(entries)
        self.log.index_pending()
        return first

    def tree_head(self, size: int | None = None) -> bytes:
        return self.log.tree_hash(size)

    def inclusion(self, index: int, size: int) -> list[bytes]:
        return self.log.inclusion_proof(index, size)

    def consistency(self, old: int, new: int) -> list[bytes]:
        return self.log.consistency_proof(old, new)

    def files(self) -> list[Path]:
        """The log and its digest index, each with its WAL, after checkpointing the WALs into the files."""
        paths = [self.path, self.log.index_path]
        for path in paths:
            if path.exists():
                with sqlite3.connect(path) as db:
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return [f for path in paths for f in (path, path.with_name(path.name + "-wal"))]

    def close(self) -> None:
        self.log.close()


class _Pymerkle:
    tree: pymerkle.BaseMerkleTree

    def append(self, entries: Sequence[bytes]) -> None:
        self.tree.append_entries(entries)  # its bulk API: one transaction per call

    def tree_head(self, size: int | None = None) -> bytes:
        return self.tree.get_root(size)

    def inclusion(self, index: int, size: int) -> object:
        return self.tree.prove_inclusion(index + 1, size)

    def consistency(self, old: int, new: int) -> object:
        return self.tree.prove_consistency(old, new)


class PymerkleSqlite(_Pymerkle):
    name = "pymerkle SqliteTree"

    def __init__(self, path: Path, create: bool = False) -> None:
        self.path = path
        self.tree = pymerkle.SqliteTree(str(path))

    def files(self) -> list[Path]:
        return [self.path]

    def close(self) -> None:
        self.tree.close()


class PymerkleInmemory(_Pymerkle):
    name = "pymerkle InmemoryTree"

    def __init__(self, path: Path | None = None, create: bool = False) -> None:
        self.tree = pymerkle.InmemoryTree()

    def close(self) -> None:
        self.tree = None  # type: ignore[assignment]  # drop the whole tree now, it can be gigabytes


OPENERS: dict[str, Callable[..., Ours | PymerkleSqlite | PymerkleInmemory]] = {
    "ours": Ours,
    "sqlite": PymerkleSqlite,
    "inmemory": PymerkleInmemory,
}
