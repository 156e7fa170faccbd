"""What the benchmarks feed the logs: v1 entries in batches, and random proof queries.

Everything is derived from a seed, so every implementation under comparison
sees exactly the same entries and the same queries.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

BATCH = 10_000  # entries per durable append (one transaction, one fsync)

# Submitter names as the ingest servers authenticate them (DESIGN.md, "Entry").
SOURCES = (b"billing-api", b"auth-gateway", b"orders-worker", b"audit-export")


def entry_v1(digest: bytes, source: bytes) -> bytes:
    """0x01 || digest (32 bytes) || len(source) (1 byte) || source (DESIGN.md, "Formats")."""
    return b"\x01" + digest + bytes([len(source)]) + source


def entry_batches(count: int, seed: int, batch: int = BATCH) -> Iterator[list[bytes]]:
    """``count`` v1 entries with random digests, in batches of ``batch``."""
    rng = random.Random(seed)
    for start in range(0, count, batch):
        n = min(batch, count - start)
        digests = rng.randbytes(32 * n)
        yield [entry_v1(digests[32 * i : 32 * i + 32], SOURCES[(start + i) % len(SOURCES)]) for i in range(n)]


def inclusion_queries(size: int, count: int, seed: int) -> list[tuple[int, int]]:
    """(0-based leaf index, tree size) pairs: a uniformly random leaf of the whole tree."""
    rng = random.Random(seed)
    return [(rng.randrange(size), size) for _ in range(count)]


def consistency_queries(size: int, count: int, seed: int) -> list[tuple[int, int]]:
    """(old size, new size) pairs: a uniformly random earlier size up to the whole tree."""
    rng = random.Random(seed)
    return [(rng.randrange(1, size), size) for _ in range(count)]


def tree_head_queries(size: int, count: int, seed: int) -> list[tuple[int]]:
    """(tree size,) of uniformly random earlier trees, as an auditor checking old checkpoints asks."""
    rng = random.Random(seed)
    return [(rng.randrange(1, size + 1),) for _ in range(count)]
