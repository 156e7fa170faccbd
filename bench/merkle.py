"""Merkle log benchmarks: notary.store against pymerkle and the hashlib floor, in one run.

    python -m bench.merkle [--sizes 1000000,10000000] [--out DIR] [--scratch DIR] [--keep]

For every size it builds, with the same v1 entries in durable batches of
10k: a store of ours from entries, one from precomputed leaf hashes, a
pymerkle SqliteTree and a pymerkle InmemoryTree; it checks that all four
have the same root, then measures tree heads, inclusion and consistency
proofs (warm, in this process; and the first one after opening, in a fresh
process, see bench/fresh.py), open time, resident memory and bytes on disk.
The baselines are measured in the same run, so ratios compare like with like
on whatever else the machine is doing. It prints progress, a Markdown table
and the acceptance targets of issue 2, and writes everything as JSON to
``OUT/merkle-<UTC time>.json``. Nothing here is asserted by the test suite.

A baseline measurement projected (linearly, from the previous size) to take
more than ``BASELINE_BUDGET_S`` is skipped at that size, and the table says so.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from bench import workload
from bench.subjects import Ours, PymerkleInmemory, PymerkleSqlite
from bench.timing import clock, summarize, time_each, timed
from notary import merkle

DEFAULT_SIZES = (1_000_000, 10_000_000)
SEED = 9162
QUERIES = 10_000  # warm queries of each kind against ours, and proofs in the memory probe
BASELINE_QUERIES = 1_000  # the first 1k of the same queries against pymerkle
WARMUP = 1_000  # queries of each kind answered (untimed) before the warm ones
FRESH_RUNS = 5  # fresh processes per first-after-open measurement of ours
FRESH_RUNS_BASELINE = 3  # the same for pymerkle SqliteTree, whose first answer rehashes the whole tree
BASELINE_BUDGET_S = 20 * 60
OUT_DEFAULT = Path(__file__).parent / "out"

Results = dict[str, Any]
_t0 = clock()


def progress(message: str) -> None:
    print(f"[{clock() - _t0:7.1f} s] {message}", flush=True)


# -- machine ----------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "pymerkle": metadata.version("pymerkle"),
        "kernel": platform.release(),
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([Path(sys.executable).name, "-m", "bench.merkle", *sys.argv[1:]]),
    }


# -- measurements -----------------------------------------------------------


class Budget:
    """Projects a baseline measurement's time at a size from its time at the previous size."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, float]] = {}

    def skip_reason(self, what: str, size: int) -> str | None:
        if what not in self._seen:
            return None
        prev_size, prev_s = self._seen[what]
        projected = prev_s * size / prev_size
        if projected <= BASELINE_BUDGET_S:
            return None
        return f"not measured at {size:,}: projected {_time(projected)} from {_time(prev_s)} at {prev_size:,}"

    def record(self, what: str, size: int, seconds: float) -> None:
        self._seen[what] = (size, seconds)


def build(append: Callable[[list[bytes]], object], size: int, label: str, prepare: Callable[[list[bytes]], list[bytes]] | None = None) -> float:
    """Seconds spent inside ``append``, fed the benchmark's entries in batches (``prepare``d untimed)."""
    total = 0.0
    done = 0
    step = max(size // 10, workload.BATCH)
    for batch in workload.entry_batches(size, SEED):
        if prepare is not None:
            batch = prepare(batch)
        seconds, _ = timed(append, batch)
        total += seconds
        done += len(batch)
        if done % step < len(batch) or done == size:
            progress(f"  {label}: {done:,} leaves, {done / total:,.0f} leaves/s")
    return total


def leaf_hashes(entries: list[bytes]) -> list[bytes]:
    return [merkle.leaf_hash(e) for e in entries]


def hashlib_floor(size: int) -> float:
    """Seconds for 2 SHA-256 calls per leaf (leaf hash and one node hash) over the same entries."""
    sha256 = hashlib.sha256
    total = 0.0
    for batch in workload.entry_batches(size, SEED):
        start = clock()
        for e in batch:
            h = sha256(b"\x00" + e).digest()
            sha256(b"\x01" + h + h).digest()
        total += clock() - start
    return total


def append_figures(seconds: float, size: int, first_root_s: float = 0.0) -> dict[str, float]:
    return {"append_s": seconds, "first_root_s": first_root_s, "leaves_per_s": size / (seconds + first_root_s)}


def warm(subject: Any, size: int, queries: int) -> dict[str, dict[str, float]]:
    """Warm-up, then time each of ``queries`` random queries of every kind (same seeds for every subject)."""
    kinds: list[tuple[str, Callable[[int, int, int], Sequence[tuple[int, ...]]], Callable[..., object]]] = [
        ("tree_head_random", workload.tree_head_queries, subject.tree_head),
        ("inclusion", workload.inclusion_queries, subject.inclusion),
        ("consistency", workload.consistency_queries, subject.consistency),
    ]
    for _, make, op in kinds:
        time_each(op, make(size, WARMUP, SEED + 1))
    out = {"tree_head": summarize(time_each(subject.tree_head, [()] * queries))}
    for kind, make, op in kinds:
        out[kind] = summarize(time_each(op, make(size, queries, SEED + 2)))
    return out


def fresh_first(kind: str, path: Path, size: int, runs: int, cold: bool = False) -> dict[str, dict[str, dict[str, float]]]:
    """Open time and first answer of each kind, each in its own fresh process."""
    calls = {
        "tree_head": [()] * runs,
        "inclusion": workload.inclusion_queries(size, runs, SEED + 3),
        "consistency": workload.consistency_queries(size, runs, SEED + 4),
    }
    out = {}
    for op, arglist in calls.items():
        samples = [_fresh("first", kind, str(path), op, *map(str, args), *(["--cold"] if cold else [])) for args in arglist]
        out[op] = {"open": summarize([s["open_s"] for s in samples]), "first": summarize([s["first_s"] for s in samples])}
    return out


def _fresh(*args: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-m", "bench.fresh", *args], check=True, capture_output=True, text=True,
                          cwd=Path(__file__).parent.parent)
    return json.loads(done.stdout)


def bytes_per_leaf(files: list[Path], size: int) -> float:
    return sum(f.stat().st_size for f in files if f.exists()) / size


def measure(size: int, scratch: Path, budget: Budget) -> Results:
    r: Results = {"size": size, "skipped": {}}
    progress(f"== {size:,} leaves ==")

    r["hashlib"] = append_figures(hashlib_floor(size), size)
    progress(f"  hashlib floor: {r['hashlib']['leaves_per_s']:,.0f} leaves/s")

    ours = Ours(scratch / f"ours-entries-{size}.db", create=True)
    r["ours_entries"] = append_figures(build(ours.append, size, "ours, from entries"), size)
    ours_lh = Ours(scratch / f"ours-leafhashes-{size}.db", create=True)
    r["ours_leaf_hashes"] = append_figures(build(ours_lh.append_leaf_hashes, size, "ours, from leaf hashes", leaf_hashes), size)
    roots = {"ours, from entries": ours.tree_head(), "ours, from leaf hashes": ours_lh.tree_head()}

    baselines: dict[str, Any] = {}
    for key, cls in (("sqlite", PymerkleSqlite), ("inmemory", PymerkleInmemory)):
        what = f"{cls.name} append and first tree head"
        reason = budget.skip_reason(what, size)
        if reason:
            r["skipped"][what] = reason
            progress(f"  {what}: {reason}")
            continue
        subject = cls(scratch / f"pymerkle-{size}.db", create=True)
        append_s = build(subject.append, size, cls.name)
        root_s, roots[cls.name] = timed(subject.tree_head)
        r[key] = append_figures(append_s, size, root_s)
        budget.record(what, size, append_s + root_s)
        progress(f"  {cls.name}: first tree head {root_s:.2f} s")
        baselines[key] = subject

    if len(set(roots.values())) != 1:
        raise SystemExit(f"the logs disagree on the root at size {size}: " + ", ".join(f"{k} {v.hex()}" for k, v in roots.items()))
    progress(f"  all {len(roots)} logs agree on the root {roots['ours, from entries'].hex()}")

    r["disk"] = {"ours_entries": bytes_per_leaf(ours.files(), size), "ours_leaf_hashes": bytes_per_leaf(ours_lh.files(), size)}
    ours_lh.close()
    ours.close()

    r["warm"] = {}
    progress("  warm queries, ours")
    ours = Ours(ours.path)
    r["warm"]["ours"] = warm(ours, size, QUERIES)
    ours.close()
    if "inmemory" in baselines:
        progress(f"  warm queries, {PymerkleInmemory.name}")
        r["warm"]["inmemory"] = warm(baselines["inmemory"], size, BASELINE_QUERIES)
        baselines.pop("inmemory").close()
    if "sqlite" in baselines:
        sqlite_tree = baselines.pop("sqlite")
        r["disk"]["sqlite"] = bytes_per_leaf(sqlite_tree.files(), size)
        sqlite_tree.close()
        what = f"{PymerkleSqlite.name} warm queries"
        reason = budget.skip_reason(what, size)
        if reason:
            r["skipped"][what] = reason
            progress(f"  {what}: {reason}")
        else:
            progress(f"  warm queries, {PymerkleSqlite.name}")
            start = clock()
            sqlite_tree = PymerkleSqlite(sqlite_tree.path)
            r["warm"]["sqlite"] = warm(sqlite_tree, size, BASELINE_QUERIES)
            sqlite_tree.close()
            budget.record(what, size, clock() - start)

    progress("  fresh processes: open and first answer")
    r["fresh"] = {"ours": fresh_first("ours", ours.path, size, FRESH_RUNS),
                  "ours_cold": fresh_first("ours", ours.path, size, FRESH_RUNS, cold=True)}
    if "sqlite" in r:
        what = f"{PymerkleSqlite.name} fresh processes"
        reason = budget.skip_reason(what, size)
        if reason:
            r["skipped"][what] = reason
        else:
            start = clock()
            r["fresh"]["sqlite"] = fresh_first("sqlite", scratch / f"pymerkle-{size}.db", size, FRESH_RUNS_BASELINE)
            budget.record(what, size, clock() - start)
    progress(f"  fresh process: memory while answering {QUERIES:,} proofs")
    r["rss"] = _fresh("rss", str(ours.path), "--queries", str(QUERIES), "--seed", str(SEED + 5))
    return r


# -- report -----------------------------------------------------------------

SUBJECTS = (("ours", None), ("sqlite", "pymerkle SqliteTree"), ("inmemory", "pymerkle InmemoryTree"), ("hashlib", "hashlib floor"))


def _rate(v: float) -> str:
    return f"{v / 1000:,.0f}k leaves/s"


def _time(v: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if v >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v * 1e9:.3g} ns"


def _rows(r: Results) -> list[tuple[str, dict[str, tuple[float, str]], str]]:
    """(measurement, {subject: (value, text)}, 'higher' or 'lower' is better) for one size."""

    def get(*path: str) -> Any:
        node: Any = r
        for p in path:
            if not isinstance(node, dict) or p not in node:
                return None
            node = node[p]
        return node

    def rate(key: str) -> tuple[float, str] | None:
        v = get(key, "leaves_per_s")
        return None if v is None else (v, _rate(v))

    def latency(*path: str) -> tuple[float, str] | None:
        s = get(*path)
        return None if s is None else (s["median_s"], f"{_time(s['median_s'])} / {_time(s['p99_s'])}")

    def single(*path: str) -> tuple[float, str] | None:
        s = get(*path)
        return None if s is None else (s["median_s"], _time(s["median_s"]))

    rows: list[tuple[str, dict[str, Any], str]] = [
        ("durable append from entries, batches of 10k (baselines: append + first tree head)",
         {"ours": rate("ours_entries"), "sqlite": rate("sqlite"), "inmemory": rate("inmemory"), "hashlib": rate("hashlib")}, "higher"),
        ("durable append from leaf hashes, batches of 10k (same baselines)",
         {"ours": rate("ours_leaf_hashes"), "sqlite": rate("sqlite"), "inmemory": rate("inmemory"), "hashlib": rate("hashlib")}, "higher"),
    ]
    for kind, label in (("tree_head", "tree head, warm, median / p99"),
                        ("tree_head_random", "tree head at a random earlier size, warm, median / p99"),
                        ("inclusion", "inclusion proof, warm, median / p99"),
                        ("consistency", "consistency proof, warm, median / p99")):
        rows.append((label, {k: latency("warm", k, kind) for k in ("ours", "sqlite", "inmemory")}, "lower"))
    for fresh, when in (("ours", "fresh process"), ("ours_cold", "fresh process, page cache dropped")):
        baseline = {"sqlite": single("fresh", "sqlite", "tree_head", "open")} if fresh == "ours" else {}
        rows.append((f"open the store, {when}, median", {"ours": single("fresh", fresh, "tree_head", "open"), **baseline}, "lower"))
        for op, what in (("tree_head", "tree head"), ("inclusion", "inclusion proof"), ("consistency", "consistency proof")):
            baseline = {"sqlite": single("fresh", "sqlite", op, "first")} if fresh == "ours" else {}
            rows.append((f"first {what} after opening, {when}, median",
                         {"ours": single("fresh", fresh, op, "first"), **baseline}, "lower"))
    rss = get("rss")
    if rss:
        rows.append((f"resident memory (RSS), fresh process after {rss['proofs']:,} proofs / peak",
                     {"ours": (rss["peak_rss_bytes"], f"{rss['rss_after_proofs_bytes'] / 1e6:.0f} / {rss['peak_rss_bytes'] / 1e6:.0f} MB")}, "lower"))
    disk = get("disk") or {}
    if "ours_entries" in disk:
        rows.append(("bytes on disk per leaf, entries included (db + WAL after checkpoint)",
                     {"ours": (disk["ours_entries"], f"{disk['ours_entries']:.1f} B"),
                      **({"sqlite": (disk["sqlite"], f"{disk['sqlite']:.1f} B")} if "sqlite" in disk else {})}, "lower"))
        rows.append(("bytes on disk per leaf, leaf hashes only",
                     {"ours": (disk["ours_leaf_hashes"], f"{disk['ours_leaf_hashes']:.1f} B")}, "lower"))
    return [(label, {k: v for k, v in cells.items() if v is not None}, better) for label, cells, better in rows]


def _ratio(ours: float, base: float, better: str) -> str:
    """How many times better ours is (>1: ours is better, whatever the unit)."""
    x = ours / base if better == "higher" else base / ours
    return f"{x:,.0f}×" if x >= 100 else f"{x:.3g}×"


def table(results: list[Results]) -> str:
    head = ["leaves", "measurement", "ours"]
    for _, name in SUBJECTS[1:]:
        head += [name, "ours vs it"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        for label, cells, better in _rows(r):
            if "ours" not in cells:
                continue
            row = [f"{r['size']:,}", label, cells["ours"][1]]
            for key, _ in SUBJECTS[1:]:
                if key in cells:
                    row += [cells[key][1], _ratio(cells["ours"][0], cells[key][0], better)]
                else:
                    row += ["", ""]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def targets(results: list[Results]) -> list[dict[str, Any]]:
    """Issue 2's acceptance targets, evaluated at the largest size measured."""
    r = max(results, key=lambda x: x["size"])
    n = f"{r['size']:,}"
    out: list[dict[str, Any]] = []

    def check(name: str, met: bool | None, measured: str) -> None:
        out.append({"target": name, "met": met, "measured": measured})

    lh = r["ours_leaf_hashes"]["leaves_per_s"]
    check("durable append >= 250k leaves/s from leaf hashes", lh >= 250_000, _rate(lh))
    if "sqlite" in r:
        base = r["sqlite"]["leaves_per_s"]
        check("durable append from leaf hashes >= 2x pymerkle SqliteTree (append + first tree head)",
              lh >= 2 * base, f"{lh / base:.2f}x ({_rate(lh)} vs {_rate(base)})")
    for kind in ("inclusion", "consistency"):
        ours = r["warm"]["ours"][kind]["median_s"]
        check(f"warm {kind} proof at {n} <= 200 µs median", ours <= 200e-6, _time(ours))
        if "sqlite" in r["warm"]:
            base = r["warm"]["sqlite"][kind]["median_s"]
            check(f"warm {kind} proof at {n} >= 20x faster than pymerkle SqliteTree", base / ours >= 20,
                  f"{base / ours:.1f}x ({_time(ours)} vs {_time(base)})")
        else:
            skipped = r["skipped"]
            check(f"warm {kind} proof at {n} >= 20x faster than pymerkle SqliteTree", None,
                  skipped.get(f"{PymerkleSqlite.name} warm queries")
                  or skipped.get(f"{PymerkleSqlite.name} append and first tree head", "not measured"))
    for kind in ("inclusion", "consistency"):
        first = r["fresh"]["ours"][kind]["first"]
        cold = r["fresh"]["ours_cold"][kind]["first"]["median_s"]
        check(f"first {kind} proof after opening the {n} store <= 5 ms", first["median_s"] <= 5e-3,
              f"median of {first['n']} fresh processes {_time(first['median_s'])}, worst {_time(first['max_s'])}; "
              f"page cache dropped: median {_time(cold)}")
    opened = r["fresh"]["ours"]["tree_head"]["open"]
    check(f"opening the {n} store <= 1 s", opened["median_s"] <= 1, f"median {_time(opened['median_s'])}, worst {_time(opened['max_s'])}")
    peak = r["rss"]["peak_rss_bytes"]
    growth = ", ".join(f"{x['size']:,}: {x['rss']['peak_rss_bytes'] / 1e6:.0f} MB" for x in results)
    check(f"resident memory <= 100 MB at {n}, not growing with the log", peak <= 100e6, f"peak RSS {growth}")
    disk = r["disk"]["ours_entries"]
    check("<= 120 bytes on disk per leaf, entries included", disk <= 120, f"{disk:.1f} B per leaf")
    return out


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "NOT MET", None: "not measured"}[met]


# -- main -------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.merkle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                        help="comma-separated tree sizes (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=OUT_DEFAULT, help="directory for the JSON results (default: bench/out)")
    parser.add_argument("--scratch", type=Path, default=None, help="parent directory for the stores (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the stores instead of deleting them at the end")
    args = parser.parse_args()
    sizes = sorted(int(s.replace("_", "")) for s in args.sizes.split(","))
    if any(s < workload.BATCH for s in sizes):
        parser.error(f"every size must be at least one batch ({workload.BATCH})")

    info = machine()
    progress(f"{info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB, Python {info['python']}, SQLite {info['sqlite']}")
    scratch = Path(tempfile.mkdtemp(prefix="merkle-bench-", dir=args.scratch))
    progress(f"stores in {scratch}")
    results: list[Results] = []
    budget = Budget()
    try:
        for size in sizes:
            results.append(measure(size, scratch, budget))
    finally:
        if args.keep:
            progress(f"kept the stores in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    verdicts = targets(results)
    print()
    print(table(results))
    print()
    for v in verdicts:
        print(f"- {v['target']}: **{_verdict(v['met'])}** ({v['measured']})")
    for r in results:
        for what, reason in r["skipped"].items():
            print(f"- {what}: {reason}")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"merkle-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps({"machine": info, "results": results, "targets": verdicts}, indent=2) + "\n")
    progress(f"results in {out}")


if __name__ == "__main__":
    main()
