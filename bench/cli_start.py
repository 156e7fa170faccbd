"""How long the ``notary`` command takes to start: ``notary CMD --help`` against the bare interpreter.

    .venv/bin/python -m bench.cli_start [--repeat 7] [--tree DIR]

Runs each command with ``--help`` (its parser built, nothing sent anywhere)
in a new interpreter, ``--repeat`` times, alternating with ``python -c pass``
(the floor: the interpreter and site alone), and prints the median wall time
of each. ``--tree`` times another checkout's ``notary`` package (for a
before/after comparison, e.g. a ``git worktree`` of the previous commit)
with this venv. Figures: docs/PERFORMANCE.md, "Command-line start".
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.load import machine

COMMANDS = ("verify", "submit", "status", "verify-log")


def wall(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    tree = args.tree.resolve()
    launch = f"import sys; sys.path.insert(0, {str(tree)!r}); from notary.cli import main; sys.exit(main())"
    times: dict[str, list[float]] = {"python -c pass": []}
    for _ in range(args.repeat):
        times["python -c pass"].append(wall([sys.executable, "-c", "pass"], tree))
        for command in COMMANDS:
            times.setdefault(f"notary {command} --help", []).append(
                wall([sys.executable, "-c", launch, command, "--help"], tree))
    print(f"{tree}; {machine()}")
    for name, values in times.items():
        print(f"{name:28s} median {statistics.median(values) * 1e3:6.0f} ms (of {len(values)}: "
              f"{min(values) * 1e3:.0f}-{max(values) * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
