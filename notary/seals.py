"""Seal records: every checkpoint the daemon signed, and how far it is anchored.

A seal is written here, durably, right after its checkpoint is signed and
before anything is sent out; the anchor outbox then adds the RFC 3161 token
and the S3 receipt. The S3 object is the JSON of ``seal_json``
(docs/FORMATS.md, "Seal object"), byte for byte the same on every retry, so a
retried publish is idempotent.

The file is separate from the log (``seals.db`` beside ``log.db``), SQLite in
WAL mode with synchronous=FULL, and owned by one thread.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from notary.errors import StoreError

SEAL_FORMAT = "notary-seal/v1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seals (
    tree_size INTEGER PRIMARY KEY,
    root_hash BLOB NOT NULL,
    checkpoint BLOB NOT NULL,          -- the signed note, exactly as signed
    previous_tree_size INTEGER NOT NULL,
    consistency_proof BLOB NOT NULL,   -- concatenated 32-byte hashes
    sealed_at TEXT NOT NULL,
    timestamp_token BLOB,              -- DER TimeStampToken once timestamped
    receipt TEXT,                      -- JSON: bucket, key, version_id, retain_until
    anchored_at TEXT
);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def iso(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Seal:
    tree_size: int
    root_hash: bytes
    checkpoint: bytes
    previous_tree_size: int
    consistency_proof: tuple[bytes, ...]
    sealed_at: str
    timestamp_token: bytes | None = None
    receipt: dict | None = None
    anchored_at: str | None = None

    @property
    def anchored(self) -> bool:
        return self.receipt is not None

    def seal_json(self, origin: str) -> bytes:
        """The S3 object: canonical JSON (sorted keys, no spaces), so a retry writes identical bytes."""
        if self.timestamp_token is None:
            raise ValueError(f"seal {self.tree_size} has no timestamp yet")
        b64 = lambda raw: base64.b64encode(raw).decode("ascii")  # noqa: E731
        doc = {
            "format": SEAL_FORMAT,
            "origin": origin,
            "tree_size": self.tree_size,
            "root_hash": b64(self.root_hash),
            "checkpoint": self.checkpoint.decode("utf-8"),
            "timestamp_token": b64(self.timestamp_token),
            "previous_tree_size": self.previous_tree_size,
            "consistency_proof": [b64(h) for h in self.consistency_proof],
            "sealed_at": self.sealed_at,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _row_to_seal(row: tuple) -> Seal:
    size, root, cp, prev, proof, sealed_at, token, receipt, anchored_at = row
    return Seal(
        tree_size=size, root_hash=root, checkpoint=cp, previous_tree_size=prev,
        consistency_proof=tuple(proof[i : i + 32] for i in range(0, len(proof), 32)),
        sealed_at=sealed_at, timestamp_token=token,
        receipt=None if receipt is None else json.loads(receipt), anchored_at=anchored_at,
    )


_COLUMNS = "tree_size, root_hash, checkpoint, previous_tree_size, consistency_proof, sealed_at, timestamp_token, receipt, anchored_at"


class SealDB:
    """The seal records, on their own thread; every method is a coroutine."""

    def __init__(self, path: Path):
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seals")
        self._db: sqlite3.Connection = self._executor.submit(self._open).result()

    def _open(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"seal database {self.path} is unreadable: {exc}") from None
        return db

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def add(self, seal: Seal) -> None:
        def add() -> None:
            self._db.execute(
                f"INSERT INTO seals ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, NULL)",
                (seal.tree_size, seal.root_hash, seal.checkpoint, seal.previous_tree_size,
                 b"".join(seal.consistency_proof), seal.sealed_at),
            )
        await self._run(add)

    async def set_checkpoint(self, seal: Seal, checkpoint: bytes) -> Seal:
        """Replace the signed checkpoint of a seal not timestamped yet (signed again after a key rotation)."""
        def update() -> None:
            changed = self._db.execute(
                "UPDATE seals SET checkpoint = ? WHERE tree_size = ? AND timestamp_token IS NULL",
                (checkpoint, seal.tree_size)).rowcount
            if changed != 1:
                raise StoreError(f"seal {seal.tree_size} is already timestamped; its checkpoint stays as it is")
        await self._run(update)
        return replace(seal, checkpoint=checkpoint)

    async def set_token(self, seal: Seal, token: bytes) -> Seal:
        await self._run(lambda: self._db.execute(
            "UPDATE seals SET timestamp_token = ? WHERE tree_size = ? AND timestamp_token IS NULL", (token, seal.tree_size)))
        return replace(seal, timestamp_token=token)

    async def set_receipt(self, seal: Seal, receipt: dict) -> Seal:
        anchored_at = iso(utc_now())
        await self._run(lambda: self._db.execute(
            "UPDATE seals SET receipt = ?, anchored_at = ? WHERE tree_size = ?",
            (json.dumps(receipt, sort_keys=True), anchored_at, seal.tree_size)))
        return replace(seal, receipt=receipt, anchored_at=anchored_at)

    async def get(self, tree_size: int) -> Seal | None:
        row = await self._run(lambda: self._db.execute(
            f"SELECT {_COLUMNS} FROM seals WHERE tree_size = ?", (tree_size,)).fetchone())
        return None if row is None else _row_to_seal(row)

    async def latest(self, *, anchored: bool = False) -> Seal | None:
        where = "WHERE receipt IS NOT NULL" if anchored else ""
        row = await self._run(lambda: self._db.execute(
            f"SELECT {_COLUMNS} FROM seals {where} ORDER BY tree_size DESC LIMIT 1").fetchone())
        return None if row is None else _row_to_seal(row)

    async def covering(self, index: int, *, anchored: bool = True) -> Seal | None:
        """The first seal whose tree includes leaf ``index``."""
        where = "AND receipt IS NOT NULL" if anchored else ""
        row = await self._run(lambda: self._db.execute(
            f"SELECT {_COLUMNS} FROM seals WHERE tree_size > ? {where} ORDER BY tree_size LIMIT 1", (index,)).fetchone())
        return None if row is None else _row_to_seal(row)

    async def unanchored(self) -> list[Seal]:
        rows = await self._run(lambda: self._db.execute(
            f"SELECT {_COLUMNS} FROM seals WHERE receipt IS NULL ORDER BY tree_size").fetchall())
        return [_row_to_seal(r) for r in rows]

    async def get_state(self, key: str) -> bytes | None:
        row = await self._run(lambda: self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone())
        return None if row is None else row[0]

    async def set_state(self, key: str, value: bytes) -> None:
        await self._run(lambda: self._db.execute(
            "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value)))

    def close(self) -> None:
        self._executor.submit(self._db.close).result()
        self._executor.shutdown()
