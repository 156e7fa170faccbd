"""Log-file forensics: ``notary verify-log`` on a large log file against a local daemon.

Run: ``.venv/bin/python -m bench.verify_log [--lines 1000000] [--repeat 3]``.

A dev stack (SoftHSM2, dev TSA, SeaweedFS) and a daemon (``notary run -c``,
a subprocess) are started in a throwaway directory; a log file of ``--lines``
lines is written and submitted over HTTP in request order, then, once it is
sealed and anchored, timed:

- baseline: SHA-256 of every line of the file in a plain loop (what any
  forensic check must at least do), in this process;
- ``notary verify-log FILE --source dev-producer --url URL`` as a subprocess
  (the whole command: interpreter start, hashing, lookups, fetching and
  verifying every entry of the span against the anchored checkpoint with a
  range proof, matching, report), on the untouched file and on a copy with one
  line edited, one deleted and two swapped;
- ``notary export`` of the file's span and ``verify-log --bundle`` on it.

Every process started here is stopped; the directory is removed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.timing import clock, timed
from notary.client import ClientError, HttpClient, line_digests
from notary.devstack import DevStack, free_port, stop_process, wait_answering

SUBMIT_BATCH = 10_000


def write_log(path: Path, n: int) -> None:
    with open(path, "w") as f:
        for i in range(n):
            f.write(f"2026-11-21T{i // 3_600_000 % 24:02d}:{i // 60_000 % 60:02d}:{i // 1000 % 60:02d}."
                    f"{i % 1000:03d}Z web-{i % 7} app[4242]: request id={i:08x} user=u{i % 5000} "
                    f"path=/api/v1/items/{i % 977} status={200 if i % 13 else 404} ms={i % 250}\n")


def hash_lines(path: Path) -> None:
    sha = hashlib.sha256
    with open(path, "rb") as f:
        for line in f:
            sha(line.rstrip(b"\n")).digest()


def run(cmd: list[str], expect: int) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != expect:
        raise SystemExit(f"{' '.join(cmd[2:4])} exited {proc.returncode}, expected {expect}:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def wait_anchored(client: HttpClient, size: int, timeout: float = 600) -> None:
    # Not through /metrics: its gauges print with %g, which rounds a tree size above 10**6.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.range_proof(size - 1, size)
            return
        except ClientError:
            time.sleep(0.5)
    raise SystemExit(f"tree size {size} not anchored in {timeout}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="nt-bench-vl-"))
    proc = None
    try:
        with DevStack(base / "stack") as stack:
            port = free_port()
            config = stack.write_config("bench", http=("127.0.0.1", port), max_entries=100_000, max_age=1.0,
                                        limits={"max_pending_entries": 1_000_000})
            url = f"http://127.0.0.1:{port}"
            proc = stack.start_daemon(config, base / "daemon.log")
            wait_answering(url, proc, base / "daemon.log")
            info = base / "dev.json"
            info.write_text(json.dumps(stack.dev_info(url)))

            path = base / "app.log"
            write_log(path, args.lines)
            size_mb = path.stat().st_size / 1e6
            client = HttpClient(url, stack.token, timeout=120)
            start = clock()
            digests = [d for _, d in line_digests(path)]
            last = 0
            for i in range(0, len(digests), SUBMIT_BATCH):
                last = client.submit(digests[i : i + SUBMIT_BATCH])[-1]["index"]
            submit_s = clock() - start
            wait_anchored(client, last + 1)
            anchored_s = clock() - start

            lines = path.read_bytes().split(b"\n")[:-1]
            tampered = base / "tampered.log"
            lines[args.lines // 3] = lines[args.lines // 3].replace(b"status=", b"status=2")
            del lines[args.lines // 2]
            k = 2 * args.lines // 3
            lines[k], lines[k + 1] = lines[k + 1], lines[k]
            tampered.write_bytes(b"\n".join(lines) + b"\n")
            del lines

            notary = [sys.executable, "-m", "notary.cli"]
            verify = notary + ["verify-log", "--source", "dev-producer", "--dev-json", str(info)]
            baseline, clean = [], []
            for _ in range(args.repeat):
                baseline.append(timed(hash_lines, path)[0])
                clean.append(timed(run, verify + [str(path)], 0)[0])
            dirty, tampered_out = timed(run, verify + [str(tampered)], 9)
            first_index = int(client.lookup([digests[0]])["indices"][0][0])
            bundle = base / "app.bundle"
            export_s, _ = timed(run, notary + ["export", "--from", str(first_index), "--to", str(last + 1),
                                               "--url", url, "-o", str(bundle)], 0)
            bundle_s, _ = timed(run, verify + ["--bundle", str(bundle), str(path)], 0)
            bundle_mb = bundle.stat().st_size / 1e6
            stop_process(proc, 60)

        n = args.lines
        med = statistics.median
        print(f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"log file: {n} lines, {size_mb:.0f} MB; submitted in {submit_s:.1f}s, anchored after {anchored_s:.1f}s")
        print(f"baseline, SHA-256 of every line (median of {args.repeat}): {med(baseline):.2f}s, "
              f"{n / med(baseline):,.0f} lines/s")
        print(f"verify-log --url, untouched (median of {args.repeat}; all: "
              f"{', '.join(f'{s:.1f}' for s in clean)}): {med(clean):.2f}s, {n / med(clean):,.0f} lines/s")
        print(f"verify-log --url, tampered (3 findings): {dirty:.2f}s, {n / dirty:,.0f} lines/s")
        print("\n".join("    " + line for line in tampered_out.splitlines()[2:5]))
        print(f"export of the span: {export_s:.2f}s ({bundle_mb:.0f} MB); "
              f"verify-log --bundle: {bundle_s:.2f}s, {n / bundle_s:,.0f} lines/s")
        return 0
    finally:
        if proc is not None:
            stop_process(proc, 60)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
