"""Acknowledgement latency at a fixed rate, for A/B comparisons of daemon changes.

    .venv/bin/python -m bench.ack_latency RATE LABEL [MAX_ENTRIES]

Brings up the dev stack and one daemon (as bench.load does), runs 10 s of
batched HTTP at full speed (8 clients, 1000 digests a request), then 30 s of
open-loop load at RATE digests/s (requests of 1000 leave on a fixed
schedule on bare keep-alive connections, as bench.load's measurement 4;
latency counts from the scheduled time), and prints one line for
each with the daemon's CPU. The daemon runs the code of the current
directory (``python -m notary.cli``), so an A/B alternates runs from two
checkouts, for example one made with ``git worktree add``. Figures from it
are in docs/PERFORMANCE.md ("Daemon under load").
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

import notary
from bench import load
from notary.devstack import DevStack

CLOSED_SECONDS = 10.0
OPEN_SECONDS = 30.0
CLIENTS = 8


async def measure(daemon: load.Daemon, rate: float, label: str) -> None:
    token = daemon.stack.token
    producer = load.Ingest(daemon.url, token, CLIENTS)
    try:
        run = await load.on_daemon(daemon, producer.closed_loop(load.BATCH, CLIENTS, CLOSED_SECONDS))
    finally:
        await producer.close()
    load.report(f"{label} HTTP batched, {CLIENTS} clients", run)
    raw = load.RawHttp(daemon.url, token)
    run = await load.on_daemon(daemon, raw.open_loop(load.BATCH, rate / load.BATCH, OPEN_SECONDS))
    load.report(f"{label} open loop at {rate:,.0f} digests/s", run)


def main() -> None:
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    rate, label = float(sys.argv[1]), sys.argv[2]
    if len(sys.argv) == 4:
        load.MAX_ENTRIES = int(sys.argv[3])
    print(f"notary from {Path(notary.__file__).parent}; {load.machine()}", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="notary-ack-"))
    try:
        with DevStack(scratch / "stack") as stack, load.running(stack, "small") as daemon:
            asyncio.run(measure(daemon, rate, label))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
