"""Anchors throughput: timestamps/s against the dev TSA, seal publications/s against SeaweedFS.

Run: ``.venv/bin/python -m bench.anchors_bench [--n N]``. Each figure comes with
its baseline, measured in the same run on the same machine:

- timestamps: raw ``openssl ts -reply`` calls per second (one process per
  call, as the dev TSA does, without HTTP or verification) against our client
  (request, HTTP, verified with rfc3161-client) talking to ``notary dev-tsa``
  started as a subprocess;
- seals: a bare boto3 ``put_object`` with the same lock headers and checksum
  against ``SealPublisher.publish`` (conditional PUT, version check, lock
  read-back: three requests).

Everything runs on 127.0.0.1; every process started here is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import hashlib
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from anchors.devs3 import SeaweedS3
from anchors.s3 import SealPublisher, make_client
from anchors.tsa import TimestampClient, TsaEndpoint, build_request, load_roots, new_nonce

RETENTION = datetime.timedelta(days=1)


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def openssl_reply_baseline(data_dir: Path, n: int) -> float:
    query = build_request(hashlib.sha256(b"baseline").digest(), new_nonce())
    query_file = data_dir / "bench-query.der"
    query_file.write_bytes(query)
    start = time.perf_counter()
    for _ in range(n):
        subprocess.run(
            ["openssl", "ts", "-reply", "-config", str(data_dir / "tsa.cnf"), "-queryfile", str(query_file)],
            check=True, capture_output=True,
        )
    return rate(n, time.perf_counter() - start)


async def client_rate(url: str, roots, n: int, concurrency: int) -> float:
    async with TimestampClient([TsaEndpoint(url, roots)]) as client:
        await client.timestamp(b"warm-up")
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with sem:
                await client.timestamp(f"checkpoint {i}\n".encode())

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return rate(n, time.perf_counter() - start)


def bench_timestamps(n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-tsa-") as tmp:
        data_dir = Path(tmp)
        proc = subprocess.Popen(
            [sys.executable, "-m", "notary.cli", "dev-tsa", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            url = proc.stdout.readline().split()[4]
            roots = load_roots(data_dir / "root.pem")
            return {
                "openssl ts -reply, sequential": openssl_reply_baseline(data_dir, n),
                "TimestampClient -> dev TSA, 1 at a time": asyncio.run(client_rate(url, roots, n, 1)),
                "TimestampClient -> dev TSA, 8 concurrent": asyncio.run(client_rate(url, roots, n, 8)),
            }
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def bench_seals(n: int) -> dict[str, float]:
    with SeaweedS3() as server:
        server.create_bucket("bench")
        client = make_client(server.endpoint_url, "us-east-1",
                             access_key=server.access_key, secret_key=server.secret_key)
        until = (datetime.datetime.now(datetime.timezone.utc) + RETENTION).replace(microsecond=0)
        start = time.perf_counter()
        for i in range(n):
            body = f'{{"baseline": {i}}}'.encode()
            client.put_object(Bucket="bench", Key=f"baseline/{i}.json", Body=body,
                              ChecksumSHA256=base64.b64encode(hashlib.sha256(body).digest()).decode(),
                              ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until)
        baseline = rate(n, time.perf_counter() - start)

        async def publish(prefix: str, concurrency: int) -> float:
            publisher = await SealPublisher.open(client, "bench", prefix=prefix, retention=RETENTION)
            sem = asyncio.Semaphore(concurrency)

            async def one(size: int) -> None:
                async with sem:
                    await publisher.publish(size, f'{{"tree_size": {size}}}'.encode())

            t0 = time.perf_counter()
            await asyncio.gather(*(one(size) for size in range(1, n + 1)))
            return rate(n, time.perf_counter() - t0)

        return {
            "boto3 put_object with lock + checksum, sequential": baseline,
            "SealPublisher.publish, 1 at a time": asyncio.run(publish("seq/", 1)),
            "SealPublisher.publish, 8 concurrent": asyncio.run(publish("par/", 8)),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="operations per measurement (default 200)")
    args = parser.parse_args()
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, {platform.python_implementation()} "
          f"{platform.python_version()}, {subprocess.run(['openssl', 'version'], capture_output=True, text=True).stdout.strip()}")
    for title, results in (("timestamps", bench_timestamps(args.n)), ("seal publications", bench_seals(args.n))):
        baseline = next(iter(results.values()))
        print(f"\n{title} per second (n={args.n}):")
        for name, value in results.items():
            print(f"  {name:55s} {value:8.1f}/s  ({value / baseline:.2f}x baseline)")


if __name__ == "__main__":
    main()
