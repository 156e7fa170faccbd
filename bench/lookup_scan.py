"""Digest lookups while the digest index lags: one scan for a whole request against one a digest.

    python -m bench.lookup_scan [--entries 300000] [--unindexed 200000] [--repeat 3]

Builds a log of ``--entries`` v1 entries (random digests) in a scratch
directory, indexes all but the last ``--unindexed`` of them (as after a burst,
or while a lost index is rebuilt), and times, in this process on a warm page
cache:

- the baseline: one ``find_by_digest`` call a digest, which is what
  ``POST /v1/lookup`` did until 2026-12-04 (each call scans the unindexed
  entries);
- ``find_by_digests`` for the whole request: the unindexed entries scanned
  once, with the digests in the SQL statement (up to 500) or looked up in a
  dict (more).

Then the same for single-digest lookups (``GET /v1/proof?digest=``) that
arrive together: one ``find_by_digest`` each on the lookup thread, as until
2026-12-04, against ``DigestFinder``, which gathers those that arrive while
one runs into the next ``find_by_digests``.

Last, batch requests (``POST /v1/lookup``, 1,000 digests each) that arrive
together: one ``find_by_digests`` each on the lookup thread, as until the
evening of 2026-12-04, against ``DigestFinder.find_all``, which gathers them
too.

Half of each request's digests are in the unindexed part, half are absent.
Best of ``--repeat`` runs a row; the baseline is measured only up to 100
digests (it grows linearly: the table gives its time a digest). Nothing here
is asserted by the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import sqlite3
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.timing import clock, time_each
from notary.entry import encode_run
from notary.sequencer import DigestFinder
from notary.store import LogStore


def best(fn, repeat: int) -> float:
    """Seconds of the fastest of ``repeat`` calls of ``fn()``."""
    return min(time_each(fn, [()] * repeat))


class LookupThread:
    """What ``LogWriter.lookup`` is: ``fn(store)`` on one thread of its own."""

    def __init__(self, store: LogStore):
        self.store = store
        self.thread = ThreadPoolExecutor(max_workers=1)

    async def lookup(self, fn):
        return await asyncio.get_running_loop().run_in_executor(self.thread, fn, self.store)


def asked_at_once(lookups: LookupThread, requests: list, gathered: bool) -> float:
    """Seconds until every request, asked at once, has its answer.

    A request is one digest (``GET /v1/proof?digest=``: ``find``) or a list of
    them (``POST /v1/lookup``: ``find_all``); ungathered, each is its own call
    on the lookup thread, as before ``DigestFinder``.
    """
    async def run() -> float:
        finder = DigestFinder(lookups)
        batch = isinstance(requests[0], list)
        if gathered:
            one = finder.find_all if batch else finder.find
        else:
            one = lambda r: lookups.lookup(lambda s: s.find_by_digests(r) if batch else s.find_by_digest(r))  # noqa: E731
        start = clock()
        answers = await asyncio.gather(*(one(r) for r in requests))
        elapsed = clock() - start
        if batch:
            assert all(sum(map(len, a)) == len(r) // 2 for a, r in zip(answers, requests)), "half of each is found"
        return elapsed
    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=300_000)
    parser.add_argument("--unindexed", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(1)
    scratch = Path(tempfile.mkdtemp(prefix="lookup-scan-"))
    try:
        digests = [rng.randbytes(32) for _ in range(args.entries)]
        with LogStore(scratch / "log.db", create=True) as store:
            for start in range(0, args.entries, 10_000):
                store.append_runs([encode_run(digests[start : start + 10_000], "bench")])
            store.index_pending(args.entries - args.unindexed)
            print(f"# {platform.python_implementation()} {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
                  f"{os.cpu_count()} CPUs; log of {store.size:,} entries, {store.size - store.indexed:,} not indexed")
            tail = digests[store.indexed :]
            print("| digests a request | one call a digest (before) | find_by_digests (one scan) | ratio |")
            print("| --- | --- | --- | --- |")
            before_each = 0.0  # seconds a digest, one call each, from the largest request measured so far
            for k in (1, 10, 100, 1_000, 10_000):
                request = rng.sample(tail, k // 2) + [rng.randbytes(32) for _ in range(k - k // 2)]
                answers = store.find_by_digests(request)
                assert sum(map(len, answers)) == k // 2, "every digest of the unindexed part is found"
                after = best(lambda: store.find_by_digests(request), args.repeat)
                if k <= 100:
                    before = best(lambda: [store.find_by_digest(d) for d in request], args.repeat)
                    before_each = before / k
                    row = f"{before * 1e3:,.1f} ms | {after * 1e3:,.1f} ms | {before / after:,.1f}x"
                else:
                    row = f"(about {k:,} x {before_each * 1e3:,.1f} ms) | {after * 1e3:,.1f} ms | "
                    row += f"about {k * before_each / after:,.0f}x"
                print(f"| {k:,} | {row} |")
            lookups = LookupThread(store)
            print("\n| single-digest lookups asked at once | one scan each (before) | DigestFinder | ratio |")
            print("| --- | --- | --- | --- |")
            for k in (10, 100):
                digests = rng.sample(tail, k // 2) + [rng.randbytes(32) for _ in range(k - k // 2)]
                before = min(asked_at_once(lookups, digests, False) for _ in range(args.repeat))
                after = min(asked_at_once(lookups, digests, True) for _ in range(args.repeat))
                print(f"| {k:,} | {before * 1e3:,.1f} ms | {after * 1e3:,.1f} ms | {before / after:,.1f}x |")
            print("\n| batch lookups of 1,000 digests asked at once | one scan each (before) | DigestFinder | ratio |")
            print("| --- | --- | --- | --- |")
            for k in (4, 16):
                requests = [rng.sample(tail, 500) + [rng.randbytes(32) for _ in range(500)] for _ in range(k)]
                before = min(asked_at_once(lookups, requests, False) for _ in range(args.repeat))
                after = min(asked_at_once(lookups, requests, True) for _ in range(args.repeat))
                print(f"| {k:,} | {before * 1e3:,.1f} ms | {after * 1e3:,.1f} ms | {before / after:,.1f}x |")
            lookups.thread.shutdown()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
