"""Measurements that need a fresh process: open time, the first answer after opening, memory.

Run by bench/merkle.py, one process per measurement, and printing one JSON
object:

    python -m bench.fresh first KIND PATH OP [ARG ...] [--cold]
    python -m bench.fresh rss PATH --queries N --seed S

``first`` opens the store (timed), then answers one ``tree_head``,
``inclusion INDEX SIZE`` or ``consistency OLD NEW`` (timed). With ``--cold``
the store's files are first evicted from the OS page cache
(posix_fadvise DONTNEED), as after a reboot. ``rss`` opens a store of ours and
answers N random proofs, half inclusion and half consistency, reporting the
resident set size (psutil) along the way.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import psutil

from bench import workload
from bench.timing import timed


def _evict(path: Path) -> None:
    """Drop ``path`` and its WAL from the OS page cache (clean pages only, no root needed)."""
    for name in (path, path.with_name(path.name + "-wal")):
        if name.exists():
            fd = os.open(name, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def first(kind: str, path: Path, op: str, args: list[int], cold: bool) -> dict[str, float]:
    from bench.subjects import OPENERS  # here, so that `rss` measures a process without pymerkle

    if cold:
        _evict(path)
    open_s, subject = timed(OPENERS[kind], path)
    first_s, _ = timed(getattr(subject, op), *args)
    subject.close()
    return {"open_s": open_s, "first_s": first_s}


def _peak_rss() -> int:
    """VmHWM, the high-water RSS of this process image. Not ru_maxrss: across fork and
    exec Linux carries the parent's peak into it, and the parent is the benchmark."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def rss(path: Path, queries: int, seed: int) -> dict[str, float]:
    from notary.store import LogStore

    proc = psutil.Process()
    before = proc.memory_info().rss
    log = LogStore(path)
    opened = proc.memory_info().rss
    size = log.size
    half = queries // 2
    for index, n in workload.inclusion_queries(size, half, seed):
        log.inclusion_proof(index, n)
    for old, new in workload.consistency_queries(size, queries - half, seed + 1):
        log.consistency_proof(old, new)
    after = proc.memory_info().rss
    log.close()
    return {
        "rss_before_open_bytes": before,
        "rss_after_open_bytes": opened,
        "rss_after_proofs_bytes": after,
        "peak_rss_bytes": max(_peak_rss(), after),  # VmHWM lags the live counter slightly
        "proofs": queries,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fresh")
    commands = parser.add_subparsers(dest="command", required=True)
    p_first = commands.add_parser("first")
    p_first.add_argument("kind", choices=["ours", "sqlite"])
    p_first.add_argument("path", type=Path)
    p_first.add_argument("op", choices=["tree_head", "inclusion", "consistency"])
    p_first.add_argument("args", type=int, nargs="*")
    p_first.add_argument("--cold", action="store_true")
    p_rss = commands.add_parser("rss")
    p_rss.add_argument("path", type=Path)
    p_rss.add_argument("--queries", type=int, required=True)
    p_rss.add_argument("--seed", type=int, required=True)
    a = parser.parse_args()
    if a.command == "first":
        result = first(a.kind, a.path, a.op, a.args, a.cold)
    else:
        result = rss(a.path, a.queries, a.seed)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
