"""The daemon under load: ingest rates, acknowledgement and anchoring latency, memory.

Run: ``.venv/bin/python -m bench.load [--quick]``. It brings up the dev stack
(SoftHSM2 token, dev TSA, SeaweedFS; ``notary.devstack``), runs the daemon as
a subprocess (``notary run -c``) and measures, all on 127.0.0.1:

1. HTTP, 1000 digests a request, several concurrent clients: digests/s
   acknowledged durably (a 200 answer holding one index per digest);
2. the unix socket, pipelined lines from a few connections: digests/s;
3. single-digest HTTP requests from many concurrent clients: requests/s
   (on bare keep-alive connections: aiohttp's client would cost as much CPU
   as the server it measures);
4. acknowledgement latency at half the best rate of (1), open loop (requests
   leave on a fixed schedule; latency counts from the scheduled time, so a
   slow daemon cannot hold back the load that measures it), on bare
   keep-alive connections like (3); then the same load from aiohttp's client,
   for comparison;
5. acknowledgement-to-anchored latency, same load: for sampled requests, the
   time from the answer until ``GET /v1/proof?index=N`` answers 200;
6. the daemon's resident memory on a log of 10M entries, built beforehand
   with ``LogStore.append_entries`` on a data directory the daemon has never
   seen (its first seal covers the whole log), under load and proofs.

Baselines in the same run: ``LogStore.append_entries`` in this process (the
ceiling for durable appends), and a trivial aiohttp endpoint that answers
without parsing or storing (the ceiling for HTTP on this machine, with this
client). The load generator shares the machine's cores with the daemon, so
each figure comes with the CPU the server spent and the time it waited for a
CPU (schedstat). ``--profile FILE`` runs the daemon under cProfile instead.
Every loop is bounded in count and in time; every process started here is
stopped and every scratch directory removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import random
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aiohttp
import psutil

from notary.devstack import PRODUCER, DevStack, free_port, stop_process, wait_answering
from notary.entry import encode_entries
from notary.store import LogStore

BATCH = 1000  # digests in one batched request (the issue's figure)
MAX_AGE = 1.0  # seconds: batch.max_age of the daemon under test
MAX_ENTRIES = 100_000  # batch.max_entries: the configuration's default
STORE_BATCHES = (BATCH, 10_000)  # entries a commit in the store baselines: one request, a group commit of ten
START_TIMEOUT = 120.0  # seconds for the daemon to answer /healthz (a 10M log seals first)
POLL = 0.025  # seconds between proof polls while waiting for an anchored seal
MAX_OUTSTANDING = 512  # open loop: requests in flight before the generator counts one as missed
ANCHOR_TIMEOUT = 30.0  # seconds a sampled entry may take to be anchored before it counts as missed
MB = 1 << 20
T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    """How long and how much each measurement runs."""

    seconds: float  # each closed-loop measurement
    open_seconds: float  # each open-loop measurement
    batch_clients: tuple[int, ...]
    single_clients: tuple[int, ...]
    unix_connections: int
    big_log: int  # entries in the log of measurement 6
    proofs: int  # inclusion proofs asked on the big log
    digest_lookups: int  # proofs asked by digest on the big log
    store_entries: int  # entries per baseline append measurement


FULL = Plan(seconds=10, open_seconds=30, batch_clients=(4, 8, 16, 32), single_clients=(32, 128),
            unix_connections=4, big_log=10_000_000, proofs=2000, digest_lookups=100, store_entries=300_000)
QUICK = Plan(seconds=2, open_seconds=4, batch_clients=(8,), single_clients=(64,),
             unix_connections=4, big_log=200_000, proofs=100, digest_lookups=10, store_entries=50_000)


# -- load ----------------------------------------------------------------------


def hex_digests(n: int) -> list[str]:
    """``n`` random SHA-256-sized digests as hex (random, so every entry is new to the log)."""
    text = os.urandom(32 * n).hex()
    return [text[i : i + 64] for i in range(0, 64 * n, 64)]


def entries_body(n: int) -> bytes:
    return ('{"digests":["' + '","'.join(hex_digests(n)) + '"]}').encode()


@dataclass
class Run:
    """What one measurement saw."""

    requests: int = 0  # answered 200
    digests: int = 0  # acknowledged
    seconds: float = 0.0
    refused: dict[int, int] = field(default_factory=dict)  # status -> count, for answers other than 200
    missed: int = 0  # open loop: requests not sent because MAX_OUTSTANDING were in flight
    latencies: list[float] = field(default_factory=list)  # seconds
    daemon_cpu: float = 0.0  # daemon CPU seconds / wall seconds (1.0 = one core)
    client_cpu: float = 0.0  # the load generator's, likewise
    daemon_cpu_seconds: float = 0.0
    daemon_waited: float = 0.0  # seconds the daemon's threads were runnable but waited for a CPU, per second
    commits: int = 0  # the daemon's store commits (group commit: one fsync each)

    @property
    def digest_rate(self) -> float:
        return self.digests / self.seconds if self.seconds else 0.0

    @property
    def request_rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def cpu_us(self, per: int) -> float:
        """Microseconds of daemon CPU per digest (or request): robust to the other load on the machine."""
        return self.daemon_cpu_seconds / per * 1e6 if per else float("nan")

    def refusals(self) -> str:
        return ", ".join(f"{n}x{status}" for status, n in sorted(self.refused.items())) or "none"


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def on_schedule(payloads: Sequence[T], rate: float, run: Run,
                      one: Callable[[float, T], Awaitable[None]]) -> None:
    """``one(scheduled, payload)`` for each payload, started at ``rate`` a second whatever the answers.

    An open loop: a request due while MAX_OUTSTANDING are in flight counts as
    missed; ``run.seconds`` is the span. What any request raised (a wrong
    answer) is raised here, after the others have ended or timed out.
    """
    loop = asyncio.get_running_loop()
    # The generator's own full collections walked its start-up objects
    # (aiohttp, boto3 for the dev stack) for about 55 ms every 20 s: every
    # request due meanwhile left late and counted that wait as the daemon's
    # latency. The daemon does the same after its start (gc.freeze).
    gc.collect()
    gc.freeze()
    start = loop.time() + 0.05
    tasks: list[asyncio.Task] = []
    in_flight: set[asyncio.Task] = set()
    for number, payload in enumerate(payloads):
        scheduled = start + number / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= MAX_OUTSTANDING:
            run.missed += 1
            continue
        task = asyncio.create_task(one(scheduled, payload))
        tasks.append(task)
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(in_flight, timeout=60)
    run.seconds = loop.time() - start
    for task in tasks:
        if not task.done():
            task.cancel()
        elif not task.cancelled() and task.exception() is not None:
            raise task.exception()


class Ingest:
    """An HTTP producer: one aiohttp session with a connection pool of ``connections``."""

    def __init__(self, url: str, token: str, connections: int):
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections),
                                             timeout=aiohttp.ClientTimeout(total=60))

    async def close(self) -> None:
        await self.session.close()

    async def post(self, n: int, run: Run, body: bytes | None = None) -> int | None:
        """Submit ``n`` digests (``body``, else fresh ones); the index of the last when acknowledged, else None."""
        body = entries_body(n) if body is None else body
        async with self.session.post(f"{self.url}/v1/entries", data=body, headers=self.headers) as resp:
            body = await resp.read()
            if resp.status != 200:
                run.refused[resp.status] = run.refused.get(resp.status, 0) + 1
                return None
        entries = json.loads(body)["entries"]
        if len(entries) != n:
            raise AssertionError(f"{n} digests submitted, {len(entries)} indices answered")
        run.requests += 1
        run.digests += n
        return entries[-1]["index"]

    async def closed_loop(self, batch: int, clients: int, seconds: float) -> Run:
        """``clients`` producers each submit ``batch`` digests, wait for the answer, repeat."""
        run = Run()
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + seconds
        max_requests = int(seconds * 100_000)  # far above anything reachable: the deadline ends it

        async def producer() -> None:
            sent = 0
            while loop.time() < deadline and sent < max_requests // clients:
                t0 = loop.time()
                await self.post(batch, run)
                run.latencies.append(loop.time() - t0)
                sent += 1

        await asyncio.gather(*(producer() for _ in range(clients)))
        run.seconds = loop.time() - start
        return run

    async def open_loop(self, batch: int, rate: float, seconds: float,
                        acked: Callable[[int, float], None] | None = None) -> Run:
        """Requests of ``batch`` digests leave at ``rate`` a second whatever the answers; latency from the schedule."""
        run = Run()
        loop = asyncio.get_running_loop()
        # A producer has its digests before it submits them: every body is
        # made before the clock starts (about 70 KB a request of 1000), so
        # latency counts from the moment a request is due to leave, and the
        # generator's own work does not delay the answers it reads.
        bodies = [entries_body(batch) for _ in range(int(rate * seconds))]

        async def one(scheduled: float, body: bytes) -> None:
            last = await self.post(batch, run, body)
            now = loop.time()
            if last is not None:
                run.latencies.append(now - scheduled)
                if acked is not None:
                    acked(last, now)

        await on_schedule(bodies, rate, run, one)
        return run

    async def anchored_within(self, index: int, acked_at: float) -> float | None:
        """Seconds from ``acked_at`` until an anchored seal covers ``index`` (its proof answers 200)."""
        loop = asyncio.get_running_loop()
        while loop.time() < acked_at + ANCHOR_TIMEOUT:
            async with self.session.get(f"{self.url}/v1/proof", params={"index": str(index)}) as resp:
                await resp.read()
                if resp.status == 200:
                    return loop.time() - acked_at
                if resp.status != 425:
                    raise AssertionError(f"proof of acknowledged entry {index}: HTTP {resp.status}")
            await asyncio.sleep(POLL)
        return None


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(status, body) of one HTTP/1.1 answer with a Content-Length."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=60)
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    if length is None:
        raise AssertionError(f"answer without Content-Length: {head[:200]!r}")
    return int(head[9:12]), await reader.readexactly(int(length[1]))


class RawHttp:
    """Producers on bare keep-alive HTTP/1.1 connections: single digests (closed loop), batches (open loop).

    aiohttp's client costs about as much CPU a request as the daemon does (the
    echo baseline showed it), so on two shared cores it would measure itself;
    this one writes a prepared request and reads the status line, headers and
    Content-Length body, no more.
    """

    def __init__(self, url: str, token: str):
        self.host, _, port = url.removeprefix("http://").rstrip("/").partition(":")
        self.port = int(port)
        self.head = (f"POST /v1/entries HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                     f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: ").encode()

    def request(self, body: bytes) -> bytes:
        return self.head + str(len(body)).encode() + b"\r\n\r\n" + body

    async def closed_loop(self, clients: int, seconds: float) -> Run:
        run = Run()
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + seconds
        max_requests = int(seconds * 100_000) // clients  # far above reach: the deadline ends it

        async def producer() -> None:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            try:
                for _ in range(max_requests):
                    if loop.time() >= deadline:
                        break
                    body = b'{"digests":["' + os.urandom(32).hex().encode() + b'"]}'
                    t0 = loop.time()
                    writer.write(self.request(body))
                    status, answer = await read_answer(reader)
                    if status != 200:
                        run.refused[status] = run.refused.get(status, 0) + 1
                        continue
                    if not answer.replace(b" ", b"").startswith(b'{"entries":[{"index":'):
                        raise AssertionError(f"unexpected answer: {answer[:200]!r}")
                    run.latencies.append(loop.time() - t0)
                    run.requests += 1
                    run.digests += 1
            finally:
                writer.close()

        await asyncio.gather(*(producer() for _ in range(clients)))
        run.seconds = loop.time() - start
        return run

    async def open_loop(self, batch: int, rate: float, seconds: float,
                        acked: Callable[[int, float], None] | None = None) -> Run:
        """Requests of ``batch`` digests leave at ``rate`` a second whatever the answers; latency from the schedule.

        Each request goes out on an idle keep-alive connection (a new one when
        none is idle, up to MAX_OUTSTANDING); the latency ends when the whole
        answer has arrived, and the answer is then checked: JSON with one
        index for each digest, in order.
        """
        run = Run()
        loop = asyncio.get_running_loop()
        # Whole requests, made before the clock starts (each body only inside
        # its request: at 175 requests/s for 30 s, a second copy was 350 MB).
        requests = [self.request(entries_body(batch)) for _ in range(int(rate * seconds))]
        idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        opened: list[asyncio.StreamWriter] = []

        async def one(scheduled: float, request: bytes) -> None:
            if idle:
                reader, writer = idle.pop()
            else:
                reader, writer = await asyncio.open_connection(self.host, self.port)
                writer.transport.set_write_buffer_limits(high=1 << 20)
                opened.append(writer)
            writer.write(request)
            status, answer = await read_answer(reader)
            now = loop.time()
            idle.append((reader, writer))
            if status != 200:
                run.refused[status] = run.refused.get(status, 0) + 1
                return
            entries = json.loads(answer)["entries"]
            if len(entries) != batch or entries[-1]["index"] - entries[0]["index"] != batch - 1:
                raise AssertionError(f"{batch} digests submitted, answer {answer[:200]!r}")
            run.latencies.append(now - scheduled)
            run.requests += 1
            run.digests += batch
            if acked is not None:
                acked(entries[-1]["index"], now)

        try:
            await on_schedule(requests, rate, run, one)
        finally:
            for writer in opened:
                writer.close()
        return run


async def unix_pipelined(path: Path, connections: int, seconds: float, chunk: int = BATCH,
                         window: int = 4) -> Run:
    """Each connection keeps ``window`` blocks of ``chunk`` digest lines in flight; counts index lines back."""
    run = Run()
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + seconds
    max_chunks = int(seconds * 1000)  # per connection; the deadline ends it first

    async def connection() -> None:
        reader, writer = await asyncio.open_unix_connection(str(path))
        credit = asyncio.Semaphore(window)
        sent = 0  # lines
        sending = True

        async def send() -> None:
            nonlocal sent, sending
            for _ in range(max_chunks):
                if loop.time() >= deadline:
                    break
                await credit.acquire()
                writer.write(("\n".join(hex_digests(chunk)) + "\n").encode())
                await writer.drain()
                sent += chunk
            sending = False

        async def receive() -> None:
            answered = 0
            while sending or answered < sent:
                data = await asyncio.wait_for(reader.read(1 << 16), timeout=30)
                if not data:
                    raise AssertionError("the daemon closed the unix socket")
                if b":" in data:  # "error: ..." or "retry: ..." instead of an index
                    raise AssertionError(f"unix socket refused a line: {data[:200]!r}")
                before = answered // chunk
                answered += data.count(b"\n")
                for _ in range(answered // chunk - before):
                    credit.release()
            run.digests += answered

        try:
            await asyncio.gather(send(), receive())
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    run.seconds = loop.time() - start
    run.requests = run.digests // chunk
    return run


# -- the daemon ------------------------------------------------------------------


class Daemon:
    """``notary run -c`` as a subprocess on its own data directory of a dev stack, its memory sampled."""

    def __init__(self, stack: DevStack, name: str, profile: Path | None = None):
        self.stack = stack
        self.data_dir = stack.data_dir / name
        self.socket = stack.data_dir / f"{name}.sock"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.config_path = stack.write_config(name, http=("127.0.0.1", port), max_entries=MAX_ENTRIES,
                                              max_age=MAX_AGE, limits={"max_request_digests": 10_000})
        self.log_path = stack.data_dir / f"{name}.log"
        self.profile = profile
        self.process: subprocess.Popen | None = None
        self.ps: psutil.Process | None = None
        self.peak_rss = 0
        self._sampling = threading.Event()

    def start(self) -> Daemon:
        profiler = [] if self.profile is None else ["-m", "cProfile", "-o", str(self.profile)]
        self.process = self.stack.start_daemon(self.config_path, self.log_path, python_args=profiler)
        self.ps = psutil.Process(self.process.pid)
        wait_answering(self.url, self.process, self.log_path, START_TIMEOUT, healthy=True)
        self._sampling.set()
        threading.Thread(target=self._sample, daemon=True).start()
        return self

    def _sample(self) -> None:
        while self._sampling.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak_rss = max(self.peak_rss, self.rss())
            time.sleep(0.1)

    def rss(self) -> int:
        """Resident memory of the daemon and its processes (the store writer, multiprocessing's tracker)."""
        return sum(p.memory_info().rss for p in family(self.ps))

    async def metrics(self) -> dict[str, float]:
        async with aiohttp.ClientSession() as s, s.get(f"{self.url}/metrics") as resp:
            text = await resp.text()
        return {name: float(value) for name, _, value in
                (line.partition(" ") for line in text.splitlines() if line and not line.startswith("#"))}

    def stop(self) -> None:
        self._sampling.clear()
        if self.process is not None:
            stop_process(self.process, 60)


@contextlib.contextmanager
def running(stack: DevStack, name: str, profile: Path | None = None) -> Iterator[Daemon]:
    daemon = Daemon(stack, name, profile)
    try:
        yield daemon.start()
    finally:
        daemon.stop()


def family(process: psutil.Process) -> list[psutil.Process]:
    """``process`` and its descendants: the daemon's figures include its store writer process."""
    try:
        return [process, *process.children(recursive=True)]
    except psutil.Error:
        return [process]


def cpu_seconds(process: psutil.Process, descendants: bool = True) -> float:
    """CPU seconds of ``process`` and (unless told not to) its living descendants."""
    total = 0.0
    for p in family(process) if descendants else [process]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def run_queue_seconds(process: psutil.Process) -> float:
    """Seconds the threads of ``process`` and its descendants waited on a run queue (Linux schedstat)."""
    total = 0
    for p in family(process):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p.pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


async def on_daemon(daemon: Daemon, work) -> Run:
    """``measured``, and the store commits the daemon made meanwhile."""
    before = (await daemon.metrics())["notary_commits_total"]
    run = await measured(daemon.ps, work)
    run.commits = int((await daemon.metrics())["notary_commits_total"] - before)
    return run


async def measured(server: psutil.Process, work) -> Run:
    """Run ``work`` (a coroutine giving a Run) and note the CPU the server and this process spent on it."""
    me = psutil.Process()
    # The load generator is the daemon's ancestor (it started the dev stack): its own CPU only.
    d0, c0, w0, t0 = cpu_seconds(server), cpu_seconds(me, False), run_queue_seconds(server), time.perf_counter()
    run = await work
    wall = time.perf_counter() - t0
    run.daemon_waited = (run_queue_seconds(server) - w0) / wall
    run.daemon_cpu_seconds = cpu_seconds(server) - d0
    run.daemon_cpu = run.daemon_cpu_seconds / wall
    run.client_cpu = (cpu_seconds(me, False) - c0) / wall
    return run


# -- baselines ---------------------------------------------------------------------


def v1_entries(n: int, source: str = PRODUCER) -> list[bytes]:
    """``n`` v1 entries of random digests, encoded as ingest encodes them."""
    data = os.urandom(32 * n)
    return encode_entries([data[i : i + 32] for i in range(0, 32 * n, 32)], source)


def store_baseline(scratch: Path, total: int, batch: int) -> tuple[float, float]:
    """``LogStore.append_entries`` in this thread, ``batch`` entries a commit (fsync): entries/s, CPU us/entry."""
    path = scratch / f"baseline-{batch}.db"
    with LogStore(path, create=True) as store:
        store.append_entries(v1_entries(batch))  # the first commit creates the file's pages
        batches = [v1_entries(batch) for _ in range(max(1, total // batch))]
        t0, c0 = time.perf_counter(), time.thread_time()
        for entries in batches:
            store.append_entries(entries)
        seconds, cpu = time.perf_counter() - t0, time.thread_time() - c0
    for p in scratch.glob(f"baseline-{batch}.db*"):
        p.unlink()
    n = len(batches) * batch
    return n / seconds, cpu / n * 1e6


def store_baselines(scratch: Path, plan: Plan, results: Results) -> None:
    for batch in STORE_BATCHES:
        rate, cpu = store_baseline(scratch, plan.store_entries, batch)
        results.store.setdefault(batch, []).append((rate, cpu))
        print(f"  LogStore.append_entries, {batch}/commit: {rate:,.0f} entries/s, {cpu:.2f} us CPU an entry", flush=True)


def build_log(path: Path, n: int, chunk: int = 100_000) -> float:
    """Append ``n`` random v1 entries to a new store at ``path`` and index them; return the seconds it took.

    The digest index is built too, as a daemon that had appended the entries
    itself would have it (its writer process indexes behind the commits);
    the time that takes is printed, the figure for rebuilding a lost index.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with LogStore(path, create=True) as store:
        for done in range(0, n, chunk):
            store.append_entries(v1_entries(min(chunk, n - done)))
        t1 = time.perf_counter()
        while store.index_pending(1_000_000):
            pass
        print(f"  built a log of {n:,} entries in {t1 - t0:.0f} s, its digest index in {time.perf_counter() - t1:.0f} s",
              flush=True)
    return time.perf_counter() - t0


def echo_server(port: int) -> None:
    """The HTTP ceiling: reads the body and answers a canned ``{"entries": [...]}`` of the right length."""
    from aiohttp import web

    answers: dict[int, bytes] = {}

    async def entries(request: web.Request) -> web.Response:
        n = (await request.read()).count(b",") + 1
        if n not in answers:
            answers[n] = json.dumps({"entries": [{"index": i} for i in range(n)]}).encode()
        return web.Response(body=answers[n], content_type="application/json")

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/v1/entries", entries)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


@contextlib.contextmanager
def echo_process() -> Iterator[tuple[str, psutil.Process]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.load", "--echo-server", str(port)],
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the echo server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", psutil.Process(proc.pid)
    finally:
        stop_process(proc, 60)


async def echo_runs(url: str, server: psutil.Process, plan: Plan) -> tuple[Run, Run]:
    batched = Ingest(url, "echo", max(plan.batch_clients))
    try:
        return (await measured(server, batched.closed_loop(BATCH, max(plan.batch_clients), plan.seconds)),
                await measured(server, RawHttp(url, "echo").closed_loop(max(plan.single_clients), plan.seconds)))
    finally:
        await batched.close()


def echo_baselines(plan: Plan, results: Results) -> None:
    with echo_process() as (url, server):
        batched, single = asyncio.run(echo_runs(url, server, plan))
    results.echo_batched.append(batched)
    results.echo_single.append(single)
    report("echo, batched", batched)
    report("echo, single", single)


# -- the measurements --------------------------------------------------------------


@dataclass
class Results:
    store: dict[int, list[tuple[float, float]]] = field(default_factory=dict)  # batch -> (entries/s, CPU us/entry), start and end
    echo_batched: list[Run] = field(default_factory=list)  # at the start and the end
    echo_single: list[Run] = field(default_factory=list)
    batched: dict[int, Run] = field(default_factory=dict)  # clients -> run
    unix: Run | None = None
    single: dict[int, Run] = field(default_factory=dict)
    half: Run | None = None
    half_aiohttp: Run | None = None  # the same open loop from aiohttp's client
    half_rate: float = 0.0  # digests/s offered in the open loop
    anchored: Run | None = None  # latencies = ack -> anchored
    anchor_missed: int = 0
    small_rss: int = 0  # after measurements 1-5
    build_seconds: float = 0.0
    big_log: int = 0
    big_start_rss: int = 0
    big_load: Run | None = None
    big_proofs: Run | None = None
    big_final_rss: int = 0
    big_peak_rss: int = 0


async def ingest_measurements(daemon: Daemon, plan: Plan, results: Results) -> None:
    token = daemon.stack.token
    for clients in plan.batch_clients:
        producer = Ingest(daemon.url, token, clients)
        try:
            results.batched[clients] = await on_daemon(daemon, producer.closed_loop(BATCH, clients, plan.seconds))
        finally:
            await producer.close()
        report(f"HTTP batched, {clients} clients", results.batched[clients])

    results.unix = await on_daemon(daemon, unix_pipelined(daemon.socket,
                                                         plan.unix_connections, plan.seconds))
    report("unix socket", results.unix)

    for clients in plan.single_clients:
        results.single[clients] = await on_daemon(daemon, RawHttp(daemon.url, token).closed_loop(clients, plan.seconds))
        report(f"HTTP single digest, {clients} clients", results.single[clients])

    best = max(run.digest_rate for run in results.batched.values())
    results.half_rate = best / 2
    raw = RawHttp(daemon.url, token)
    results.half = await on_daemon(daemon, raw.open_loop(BATCH, results.half_rate / BATCH, plan.open_seconds))
    report(f"open loop at {results.half_rate:,.0f} digests/s", results.half)
    producer = Ingest(daemon.url, token, MAX_OUTSTANDING)
    try:
        results.half_aiohttp = await on_daemon(daemon, producer.open_loop(BATCH, results.half_rate / BATCH,
                                                                         plan.open_seconds))
        report(f"open loop at {results.half_rate:,.0f} digests/s, aiohttp client", results.half_aiohttp)

        # Ack -> anchored, under the same load: every 10th answer is followed until a proof is served.
        waits: list[asyncio.Task] = []
        sample = iter(range(1 << 30))

        def acked(index: int, at: float) -> None:
            if next(sample) % 10 == 0:
                waits.append(asyncio.create_task(producer.anchored_within(index, at)))

        results.anchored = await on_daemon(daemon, raw.open_loop(BATCH, results.half_rate / BATCH,
                                                                plan.open_seconds, acked))
        found = await asyncio.gather(*waits)
        results.anchored.latencies = [s for s in found if s is not None]
        results.anchor_missed = sum(s is None for s in found)
        report("ack -> anchored", results.anchored)
    finally:
        await producer.close()
    results.small_rss = daemon.rss()


async def big_log_measurements(daemon: Daemon, plan: Plan, results: Results) -> None:
    """Load, then proofs by index and by digest, on the big log; RSS is sampled throughout."""
    results.big_start_rss = daemon.rss()
    producer = Ingest(daemon.url, daemon.stack.token, 8)
    try:
        results.big_load = await on_daemon(daemon, producer.closed_loop(BATCH, 8, plan.seconds))
        report("big log, HTTP batched, 8 clients", results.big_load)
        proofs = Run()
        loop = asyncio.get_running_loop()
        size = results.big_log
        # The first seal covers the prebuilt log; its proofs need it anchored.
        if await producer.anchored_within(size - 1, loop.time()) is None:
            raise RuntimeError("the prebuilt log was not anchored in time")
        digests = random_prebuilt_digests(daemon.data_dir / "log.db", size, plan.digest_lookups)
        sem = asyncio.Semaphore(16)

        async def get(params: dict[str, str]) -> None:
            async with sem:
                t0 = loop.time()
                async with producer.session.get(f"{daemon.url}/v1/proof", params=params) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise AssertionError(f"proof {params}: HTTP {resp.status}")
                proofs.latencies.append(loop.time() - t0)
                proofs.requests += 1

        async def all_proofs() -> Run:
            t0 = loop.time()
            await asyncio.gather(*(get({"index": str(random.randrange(size))}) for _ in range(plan.proofs)),
                                 *(get({"digest": d}) for d in digests))
            proofs.seconds = loop.time() - t0
            return proofs

        results.big_proofs = await on_daemon(daemon, all_proofs())
        report(f"big log, {plan.proofs} proofs by index + {len(digests)} by digest", results.big_proofs)
    finally:
        await producer.close()
    results.big_final_rss = daemon.rss()
    results.big_peak_rss = daemon.peak_rss


def random_prebuilt_digests(path: Path, size: int, n: int) -> list[str]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return [db.execute("SELECT entry FROM entries WHERE idx = ?", (random.randrange(size),)).fetchone()[0][1:33].hex()
                for _ in range(n)]


def report(name: str, run: Run) -> None:
    lat = run.latencies
    print(f"  {name}: {run.digest_rate:,.0f} digests/s, {run.request_rate:,.0f} requests/s, "
          f"p50 {percentile(lat, 0.5) * 1e3:.1f} ms, p99 {percentile(lat, 0.99) * 1e3:.1f} ms, "
          f"refused {run.refusals()}, missed {run.missed}; CPU daemon {run.daemon_cpu:.2f}, "
          f"client {run.client_cpu:.2f} cores; daemon waited {run.daemon_waited:.2f} s/s for a CPU; "
          f"{run.cpu_us(run.digests):.2f} us daemon CPU a digest, "
          f"{run.cpu_us(run.requests):.0f} a request; {run.commits} commits", flush=True)


# -- the report ---------------------------------------------------------------------


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine())
    return (f"{os.cpu_count()} cores ({model}), {platform.python_implementation()} {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}, aiohttp {aiohttp.__version__}, "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")


def table(results: Results, plan: Plan, load_before: tuple, load_after: tuple) -> str:
    """The figures as a Markdown table; the CPU column is what the server process spent (robust to other load)."""
    ms = 1e3
    best_clients, best = max(results.batched.items(), key=lambda kv: kv[1].digest_rate)
    single_clients, single = max(results.single.items(), key=lambda kv: kv[1].request_rate)
    store_rate = max(rate for runs in results.store.values() for rate, _ in runs)
    store_cpu = min(cpu for runs in results.store.values() for _, cpu in runs)
    echo_b = max(results.echo_batched, key=lambda r: r.digest_rate)
    echo_s = max(results.echo_single, key=lambda r: r.request_rate)
    half, anch, u = results.half, results.anchored, results.unix
    p99_ack, p99_anchor = percentile(half.latencies, 0.99), percentile(anch.latencies, 0.99)
    commits = sum(run.commits for run in results.batched.values())
    committed = sum(run.digests for run in results.batched.values())

    def cpu(run: Run, per_request: bool = False) -> str:
        per = f"{run.cpu_us(run.requests):.0f} us/request" if per_request else f"{run.cpu_us(run.digests):.1f} us/digest"
        return (f"server {run.daemon_cpu:.2f} cores, {per}, waited {run.daemon_waited:.2f} s/s for a CPU; "
                f"client {run.client_cpu:.2f} cores")

    def lat(run: Run) -> str:
        return f"p50 {percentile(run.latencies, 0.5) * ms:.1f} ms, p99 {percentile(run.latencies, 0.99) * ms:.1f} ms"

    rows = [
        (f"baseline: `LogStore.append_entries` in this process, {b:,} entries a commit (start / end of the run)",
         " / ".join(f"{rate:,.0f}" for rate, _ in runs) + " entries/s",
         "this thread: " + " / ".join(f"{c:.1f}" for _, c in runs) + " us/entry", "", "")
        for b, runs in sorted(results.store.items())
    ]
    rows.append((f"baseline: aiohttp echo server, {max(plan.batch_clients)} clients x {BATCH} digests (start / end)",
                 " / ".join(f"{r.digest_rate:,.0f}" for r in results.echo_batched) + " digests/s", cpu(echo_b), "", ""))
    rows.append((f"baseline: aiohttp echo server, {max(plan.single_clients)} clients x 1 digest (start / end)",
                 " / ".join(f"{r.request_rate:,.0f}" for r in results.echo_single) + " requests/s",
                 cpu(echo_s, per_request=True), "", ""))
    for clients, run in sorted(results.batched.items()):
        star = clients == best_clients
        rows.append((f"1. HTTP, {BATCH} digests a request, {clients} clients" + (" (best)" * star),
                     f"{run.digest_rate:,.0f} digests/s ({lat(run)})", cpu(run),
                     ">= 100,000 digests/s" * star, met(run.digest_rate >= 100_000) if star else ""))
    rows.append((f"2. unix socket, {plan.unix_connections} connections, blocks of {BATCH} lines pipelined",
                 f"{u.digest_rate:,.0f} digests/s", cpu(u), "", ""))
    for clients, run in sorted(results.single.items()):
        star = clients == single_clients
        rows.append((f"3. HTTP, 1 digest a request, {clients} clients" + (" (best)" * star),
                     f"{run.request_rate:,.0f} requests/s ({lat(run)})", cpu(run, per_request=True),
                     ">= 5,000 requests/s" * star, met(run.request_rate >= 5000) if star else ""))
    rows.append((f"4. ack latency, open loop at {results.half_rate:,.0f} digests/s "
                 f"({results.half_rate / BATCH:.1f} requests/s of {BATCH}), {plan.open_seconds:g} s",
                 f"{lat(half)} ({len(half.latencies)} requests, refused {half.refusals()}, missed {half.missed})",
                 cpu(half), "p99 <= 20 ms", met(p99_ack <= 0.020)))
    other = results.half_aiohttp
    rows.append(("4'. the same, from aiohttp's client (for comparison)",
                 f"{lat(other)} ({len(other.latencies)} requests, refused {other.refusals()}, missed {other.missed})",
                 cpu(other), "", ""))
    rows.append((f"5. ack -> anchored (proof served), same load, max_age {MAX_AGE:g} s, max_entries {MAX_ENTRIES:,}",
                 f"p50 {percentile(anch.latencies, 0.5):.2f} s, p99 {p99_anchor:.2f} s "
                 f"({len(anch.latencies)} samples, {results.anchor_missed} not anchored in {ANCHOR_TIMEOUT:g} s)",
                 cpu(anch), f"p99 <= {MAX_AGE + 1:g} s", met(p99_anchor <= MAX_AGE + 1 and not results.anchor_missed)))
    rows.append((f"6. daemon RSS, log of {results.big_log:,} entries (built in {results.build_seconds:.0f} s): "
                 f"at start / after load and proofs / peak",
                 f"{results.big_start_rss / MB:.0f} / {results.big_final_rss / MB:.0f} / "
                 f"{results.big_peak_rss / MB:.0f} MB", "", "<= 200 MB", met(results.big_peak_rss <= 200 * MB)))
    rows.append(("6. on the big log: HTTP, 1000 digests a request, 8 clients",
                 f"{results.big_load.digest_rate:,.0f} digests/s ({lat(results.big_load)})", cpu(results.big_load),
                 "", ""))
    p = results.big_proofs
    rows.append((f"6. on the big log: {p.requests:,} proofs ({plan.digest_lookups} of them by digest), 16 concurrent",
                 f"{p.request_rate:,.0f} proofs/s ({lat(p)})", cpu(p, per_request=True), "", ""))
    rows.append(("daemon RSS after measurements 1-5 (small log)", f"{results.small_rss / MB:.0f} MB", "", "", ""))
    lines = ["| measurement | figure | CPU | target | met |", "| --- | --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += [
        "",
        f"Ratios to the best baselines: batched HTTP {best.digest_rate / store_rate:.2f}x the store's entries/s, "
        f"{best.digest_rate / echo_b.digest_rate:.2f}x the echo server's digests/s, and "
        f"{best.cpu_us(best.digests) / store_cpu:.1f}x the store's CPU an entry; "
        f"unix socket {u.digest_rate / store_rate:.2f}x the store's entries/s and "
        f"{u.cpu_us(u.digests) / store_cpu:.1f}x its CPU; "
        f"single-digest {single.request_rate / echo_s.request_rate:.2f}x the echo server's requests/s and "
        f"{single.cpu_us(single.requests) / echo_s.cpu_us(echo_s.requests):.1f}x its CPU a request.",
        f"Group commit during measurement 1: {commits:,} commits for {committed:,} acknowledged digests "
        f"({committed / max(commits, 1):,.0f} a commit); during measurement 3: "
        + ", ".join(f"{r.commits / r.seconds:,.0f} commits/s ({r.digests / max(r.commits, 1):.1f} requests a commit) "
                    f"with {c} clients" for c, r in sorted(results.single.items())) + ".",
        f"Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load_before)}; "
        f"after: {', '.join(f'{x:.2f}' for x in load_after)}.",
    ]
    return "\n".join(lines)


def met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs and a 200k-entry log: a smoke test")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="run the daemon under cProfile (its event-loop thread) for measurements 1-5 only, "
                        "and write the stats to FILE; the profiler slows the daemon, so the figures are not comparable")
    parser.add_argument("--echo-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server is not None:
        return echo_server(args.echo_server)
    plan = QUICK if args.quick else FULL
    print(f"machine: {machine()}", flush=True)
    load_before = os.getloadavg()
    results = Results(big_log=plan.big_log)
    scratch = Path(tempfile.mkdtemp(prefix="notary-load-"))
    try:
        print("baselines", flush=True)
        store_baselines(scratch, plan, results)
        echo_baselines(plan, results)

        # One stack (SoftHSM2 token, dev TSA, SeaweedFS) for both daemons, each
        # with its own data directory and S3 prefix.
        with DevStack(scratch / "stack") as stack:
            print("daemon on a new log", flush=True)
            with running(stack, "small", args.profile and args.profile.resolve()) as daemon:
                asyncio.run(ingest_measurements(daemon, plan, results))
            if args.profile is not None:
                print(f"profile of the daemon's event loop in {args.profile}")
                return

            print(f"daemon on a prebuilt log of {plan.big_log:,} entries", flush=True)
            # Built before the daemon's first start: its first seal covers the whole log.
            results.build_seconds = build_log(stack.data_dir / "big" / "log.db", plan.big_log)
            print(f"  built in {results.build_seconds:.0f} s", flush=True)
            with running(stack, "big") as daemon:
                asyncio.run(big_log_measurements(daemon, plan, results))
        print("baselines again (the machine is shared: its load moves)", flush=True)
        store_baselines(scratch, plan, results)
        echo_baselines(plan, results)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print()
    print(table(results, plan, load_before, os.getloadavg()))


if __name__ == "__main__":
    main()
