"""Signatures per second through ``hsm.signer.HSMSigner``, next to raw
python-pkcs11 in the same run, for ECDSA P-256 and Ed25519 on a throwaway
SoftHSM2 token.

Raw python-pkcs11 is the baseline: a loop of ``PrivateKey.sign`` calls run
directly on the PKCS#11 thread (ECDSA: on a precomputed SHA-256 digest, no
DER encoding). The signer rows add what a caller pays: hashing, DER encoding,
and one hand-off to the PKCS#11 thread per signature.

    .venv/bin/python -m bench.hsm_sign [--count 5000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

from hsm.algorithms import ECDSA_P256, ED25519, Algorithm
from hsm.devtoken import init_dev_token
from hsm.pin import PinSource
from hsm.signer import HSMSigner
from hsm.token import SOFTHSM2_MODULE, Token, TokenConfig

WORKERS = 8


def rate(count: int, seconds: float) -> float:
    return count / seconds


def raw_pkcs11(token: Token, signer: HSMSigner, count: int) -> float:
    messages = [signer.algorithm.to_sign(b"raw %d\n" % i) for i in range(count)]
    private, mechanism = signer._private_key, signer.algorithm.mechanism

    def loop(session: object) -> float:
        start = time.perf_counter()
        for data in messages:
            private.sign(data, mechanism=mechanism)
        return time.perf_counter() - start

    return rate(count, token.call(loop))


def signer_one_thread(signer: HSMSigner, count: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        signer.sign_blocking(b"blocking %d\n" % i)
    return rate(count, time.perf_counter() - start)


def signer_tasks(signer: HSMSigner, count: int, tasks: int) -> float:
    async def worker(n: int) -> None:
        for i in range(count // tasks):
            await signer.sign(b"task %d %d\n" % (n, i))

    async def run() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(tasks)))
        return time.perf_counter() - start

    return rate(count // tasks * tasks, asyncio.run(run()))


def signer_threads(signer: HSMSigner, count: int) -> float:
    def worker(n: int) -> None:
        for i in range(count // WORKERS):
            signer.sign_blocking(b"thread %d %d\n" % (n, i))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(WORKERS)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return rate(count // WORKERS * WORKERS, time.perf_counter() - start)


def bench(token: Token, algorithm: Algorithm, count: int, repeat: int) -> list[tuple[str, float]]:
    signer = HSMSigner(token, token.generate(algorithm, f"bench-{algorithm.name}"))
    raw_pkcs11(token, signer, min(count, 500))  # warm-up
    rows = [
        ("raw python-pkcs11 (baseline)", lambda: raw_pkcs11(token, signer, count)),
        ("HSMSigner.sign_blocking, 1 thread", lambda: signer_one_thread(signer, count)),
        ("HSMSigner.sign, 1 asyncio task", lambda: signer_tasks(signer, count, 1)),
        (f"HSMSigner.sign, {WORKERS} asyncio tasks", lambda: signer_tasks(signer, count, WORKERS)),
        (f"HSMSigner.sign_blocking, {WORKERS} threads", lambda: signer_threads(signer, count)),
    ]
    # Rounds interleave the rows, so that a burst of load from elsewhere on
    # the machine does not land on one row only; each row reports its median.
    results: dict[str, list[float]] = {name: [] for name, _ in rows}
    for _ in range(repeat):
        for name, measure in rows:
            results[name].append(measure())
    return [(name, statistics.median(values)) for name, values in results.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000, help="signatures per measurement (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=5, help="measurements per row, median reported (default: %(default)s)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="hsm-bench-") as tmp:
        base = Path(tmp)
        conf = base / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {base / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
        os.environ["SOFTHSM2_CONF"] = str(conf)  # before the module is first loaded
        init_dev_token(conf, "bench", base / "user.pin")
        config = TokenConfig(SOFTHSM2_MODULE, "bench", PinSource("file", str(base / "user.pin")))
        print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
              f"median of {args.repeat} runs of {args.count} signatures per row, SoftHSM2 {SOFTHSM2_MODULE}")
        with Token.open(config, rw=True) as token:
            for algorithm in (ECDSA_P256, ED25519):
                rows = bench(token, algorithm, args.count, args.repeat)
                baseline = rows[0][1]
                print(f"\n{algorithm.name}")
                print("| path | signatures/s | vs raw |\n| --- | ---: | ---: |")
                for name, value in rows:
                    print(f"| {name} | {value:,.0f} | {value / baseline:.2f} |")


if __name__ == "__main__":
    main()
