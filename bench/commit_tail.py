"""Commit latency of the writer process alone, at a fixed rate: the store's part of the acknowledgement tail.

    .venv/bin/python -m bench.commit_tail RATE [SECONDS] [--entries 1000] [--label L]

Starts the store's writer process (``StoreProcess``: the writer, its WAL
checkpointer and digest indexer threads) on a scratch store and sends it
RATE commits a second of ``--entries`` v1 entries each, on a fixed schedule
(open loop: a commit due while the previous one is still running waits, and
its latency counts from when it was due). No HTTP, no sealing, no TSA or S3:
what is left of the tail here is the store's own. Prints the latency
percentiles, the bytes the machine wrote to its disks meanwhile
(/proc/diskstats) per entry, and the machine's load. Each run is about
SECONDS; on the shared two-core machine runs minutes apart differ (see
docs/PERFORMANCE.md, "The store's own tail"), so compare variants in
alternating runs. Nothing here is asserted by the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
from pathlib import Path

from bench.load import machine, percentile
from notary.entry import EntryRun, encode_run
from notary.store_process import StoreProcess


def disk_sectors_written() -> int:
    """Sectors written to whole disks (not partitions) since boot, from /proc/diskstats; 0 where unreadable."""
    total = 0
    try:
        with open("/proc/diskstats") as stats:
            for line in stats:
                fields = line.split()
                name = fields[2]
                if os.path.exists(f"/sys/block/{name}") and not name.startswith(("loop", "ram", "zram")):
                    total += int(fields[9])
    except OSError:
        return 0
    return total


async def commit_on_schedule(writer: StoreProcess, runs: list[EntryRun], rate: float, seconds: float) -> list[float]:
    """Latencies in seconds of commits due ``rate`` a second, one at a time, as the daemon sends them."""
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2
    number = 0
    while (due := start + number / rate) < start + seconds:
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await writer.append_async([runs[number % len(runs)]])
        latencies.append(loop.time() - due)
        number += 1
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rate", type=float, help="commits a second")
    parser.add_argument("seconds", type=float, nargs="?", default=30.0)
    parser.add_argument("--entries", type=int, default=1000, help="entries a commit")
    parser.add_argument("--label", default="commit tail")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="notary-commit-tail-"))
    writer = StoreProcess(scratch / "log.db")
    try:
        runs = [encode_run([os.urandom(32) for _ in range(args.entries)], "bench") for _ in range(64)]
        sectors = disk_sectors_written()
        latencies = asyncio.run(commit_on_schedule(writer, runs, args.rate, args.seconds))
        number = len(latencies)
        written = (disk_sectors_written() - sectors) * 512
        writer.refresh_status()
        entries = number * args.entries
        ms = [x * 1e3 for x in latencies]
        print(f"{args.label}: {number:,} commits of {args.entries:,} entries at {args.rate:g}/s: "
              f"p50 {percentile(ms, 0.5):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms, "
              f"p99.9 {percentile(ms, 0.999):.1f} ms, max {max(ms):.1f} ms; over 30 ms: {sum(x > 30 for x in ms)}; "
              f"disks written {written / entries:,.0f} bytes an entry; digest index covers {writer.status.indexed:,} "
              f"of {entries:,}; load {os.getloadavg()[0]:.2f}; {machine()}", flush=True)
    finally:
        writer.close()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
