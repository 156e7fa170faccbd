"""What building the digest index costs an entry, by how many entries each of its transactions adds.

    .venv/bin/python -m bench.index_cost [--entries 262144]

Builds a scratch store of v1 entries, then indexes it from scratch several
times: with ``DigestIndex.add`` (the shipped code, epochs of 2**EPOCH_BITS
leaves) in transactions of 4,096 to 32,768 entries, and, for comparison,
into the same table keyed by smaller epochs that each transaction fills
whole (what an index built only from complete chunks would cost; lookups
would then probe every chunk). Prints the indexing thread's CPU and the
bytes it wrote (write(2) calls, WAL and checkpoints included) an entry.
Single thread, in-process; nothing else runs. Figures: docs/PERFORMANCE.md,
"The digest index in larger transactions".
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from bench.load import machine
from notary.digest_index import EPOCH_BITS, DigestIndex
from notary.entry import encode_run
from notary.store import LogStore


def written_bytes() -> int:
    """Bytes this process has passed to write(2) so far (/proc/self/io wchar)."""
    with open("/proc/self/io") as io:
        for line in io:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


def measure(label: str, entries: int, index_once) -> None:
    cpu, wrote, wall = time.thread_time(), written_bytes(), time.perf_counter()
    index_once()
    cpu, wrote, wall = time.thread_time() - cpu, written_bytes() - wrote, time.perf_counter() - wall
    print(f"{label:58s} CPU {cpu / entries * 1e6:5.2f} us, wall {wall / entries * 1e6:5.2f} us, "
          f"wrote {wrote / entries:6.1f} bytes an entry", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1 << 18)
    args = parser.parse_args()
    n = args.entries
    scratch = Path(tempfile.mkdtemp(prefix="notary-index-cost-"))
    try:
        log = scratch / "log.db"
        with LogStore(log, create=True) as store:
            for start in range(0, n, 8192):
                store.append_runs([encode_run([os.urandom(32) for _ in range(min(8192, n - start))], "bench")])
            root = store.tree_hash()
        print(f"{n:,} v1 entries; {machine()}")
        for batch in (4096, 8192, 16384, 32768):
            index = DigestIndex(scratch / f"shipped-{batch}.db", writable=True)

            def shipped(index=index, batch=batch) -> None:
                for start in range(0, n, batch):  # (the root is only recorded: any bytes do here)
                    index.add(log, start, min(n, start + batch), root)
            measure(f"shipped ({1 << EPOCH_BITS}-leaf epochs), transactions of {batch:,}", n, shipped)
            index.close()
        for bits in (12, 14, 16):
            db = sqlite3.connect(scratch / f"chunks-{bits}.db", isolation_level=None)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("CREATE TABLE digests (epoch INTEGER NOT NULL, prefix BLOB NOT NULL, idx INTEGER NOT NULL, "
                       "PRIMARY KEY (epoch, prefix, idx)) WITHOUT ROWID")
            db.execute("ATTACH DATABASE ? AS log", (f"file:{log}?mode=ro",))

            def whole(db=db, bits=bits) -> None:
                for start in range(0, n, 1 << bits):
                    db.execute("BEGIN IMMEDIATE")
                    db.execute(f"INSERT INTO digests SELECT idx >> {bits}, substr(entry, 2, 8), idx FROM log.entries "
                               "WHERE idx >= ? AND idx < ? AND length(entry) >= 33 AND substr(entry, 1, 1) = x'01' "
                               "ORDER BY 1, 2, 3", (start, start + (1 << bits)))
                    db.execute("COMMIT")
            measure(f"{1 << bits}-leaf epochs, each filled by one transaction", n, whole)
            db.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
