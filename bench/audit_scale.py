"""How fast ``notary audit`` reads a bucket of seals, one request at a time and several in flight.

    python -m bench.audit_scale [--seals 1000] [--requests 1,4,16] [--rounds 2]

A busy log seals about once a second (config/notary.example.toml, ``[batch]``):
86,400 seals a day, about 31.5 million a year, and an audit reads every
version of every seal, two S3 requests each (its retention and its bytes)
besides the listing. This script makes ``--seals`` real seals (the dev stack:
SoftHSM2 key, dev TSA, SeaweedFS with Object Lock; a daemon with
``max_entries`` 1, one digest a request, each request waiting for its seal),
stops the daemon, and then, alternating ``--rounds`` times:

- the baseline: bare boto3 in this process, the same two requests a version
  (``get_object_retention``, ``get_object``) one after another, nothing
  checked;
- ``audit_bucket`` through a ``SealReader`` keeping 1, 4, 16 ... requests in
  flight (``--requests``): listing, the two requests a version, and every
  check (token, signature, chain).

Then one more audit at the last ``--requests`` under ``tracemalloc``, for the
Python memory an audit holds a seal (not timed). Everything runs on
127.0.0.1, so each request costs little wall time and much CPU on this
machine's two cores; against AWS S3 a request waits tens of milliseconds,
which requests in flight overlap and one at a time cannot. Nothing here is
asserted by the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path

from anchors.s3 import SealReader, make_client
from anchors.tsa import load_roots
from hsm.keyring import Keyring
from notary.audit import audit_bucket
from notary.client.sync import HttpClient
from notary.devstack import BUCKET, DevStack, free_port, stop_process, wait_answering
from notary.trust import TrustedKeys

PREFIX = "audit-scale/"


def make_seals(stack: DevStack, count: int) -> float:
    """``count`` seals under PREFIX from a real daemon; return the seconds it took."""
    port = free_port()
    config = stack.write_config("audit-scale", http=("127.0.0.1", port), max_entries=1, max_age=0.01, prefix=PREFIX)
    log = stack.data_dir / "audit-scale.log"
    daemon = stack.start_daemon(config, log)
    start = time.perf_counter()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_answering(url, daemon, log)
        client = HttpClient(url, stack.token)
        for i in range(count):
            client.submit([os.urandom(32)], wait_sealed=True)
            if i % 200 == 199:
                print(f"  {i + 1} seals", flush=True)
    finally:
        stop_process(daemon, 60)
    return time.perf_counter() - start


def client(stack: DevStack, connections: int = 10):
    return make_client(stack.s3.endpoint_url, "us-east-1", access_key=stack.s3.access_key,
                       secret_key=stack.s3.secret_key, connections=max(10, connections))


def baseline(stack: DevStack) -> tuple[float, int]:
    """Seconds for the two requests a version, one after another, bare boto3; and the versions read."""
    s3 = client(stack)
    pages = s3.get_paginator("list_object_versions").paginate(Bucket=BUCKET, Prefix=f"{PREFIX}seals/")
    versions = [(v["Key"], v["VersionId"]) for page in pages for v in page.get("Versions", [])]
    start = time.perf_counter()
    for key, version in versions:
        s3.get_object_retention(Bucket=BUCKET, Key=key, VersionId=version)
        s3.get_object(Bucket=BUCKET, Key=key, VersionId=version)["Body"].read()
    return time.perf_counter() - start, len(versions)


def audit(stack: DevStack, trust: TrustedKeys, roots, requests: int) -> tuple[float, int, bool]:
    """Seconds for one ``audit_bucket``; the seals it read; whether it was clean."""
    reader = SealReader(client(stack, requests), BUCKET, PREFIX, concurrency=requests)
    try:
        start = time.perf_counter()
        report = asyncio.run(audit_bucket(reader, trust, roots))
        return time.perf_counter() - start, len(report.seals), report.ok
    finally:
        reader.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seals", type=int, default=1000)
    parser.add_argument("--requests", default="1,4,16", help="requests in flight, comma-separated")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    levels = [int(n) for n in args.requests.split(",")]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"load average {os.getloadavg()}")
    scratch = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    try:
        with DevStack(scratch / "stack") as stack:
            made = make_seals(stack, args.seals)
            print(f"made {args.seals} seals in {made:.1f} s ({args.seals / made:.1f} seals/s, each waited for)")
            trust = TrustedKeys.from_keyring(Keyring.load(stack.keyring_path))
            roots = load_roots(stack.data_dir / "tsa" / "root.pem")
            rows: dict[str, list[float]] = {}
            for round_ in range(args.rounds):
                seconds, versions = baseline(stack)
                rows.setdefault("baseline: bare boto3, 2 requests a version, one at a time", []).append(
                    versions / seconds)
                for n in levels:
                    seconds, seals, ok = audit(stack, trust, roots, n)
                    assert ok and seals == versions, (ok, seals, versions)
                    rows.setdefault(f"audit_bucket, {n} request(s) in flight", []).append(seals / seconds)
                print(f"  round {round_ + 1} done", flush=True)
            print("\n| what | seals a second, each round | seconds a million seals (best round) |")
            print("| --- | --- | --- |")
            for name, rates in rows.items():
                print(f"| {name} | {', '.join(f'{r:,.0f}' for r in rates)} | {1e6 / max(rates):,.0f} |")
            tracemalloc.start()
            audit(stack, trust, roots, levels[-1])
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            print(f"\naudit's peak Python memory: {peak / 2**20:.1f} MiB, {peak / args.seals / 1024:.1f} KiB a seal")
            print(f"load average after: {os.getloadavg()}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
