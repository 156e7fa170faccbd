"""Log-file forensics: which lines of a log file the log holds, and what a tamperer did.

Given the digests of a file's lines (``client.line_digests``: one line is one
record) and a verified view of one source's entries (``EntryIndex``: a daemon
or a log bundle, see notary/cli_forensics.py), ``analyse`` decides:

- **span**: the entries the file should account for are those of the source
  with indices in ``[first, last]``, where first and last are the smallest and
  largest index of a line of the file whose digest is in the log exactly once
  (for that source). Lines at the top and bottom of the file are looked up
  first; every line that then matches no entry in the span is looked up too,
  and widens the span if it is notarized outside it. A digest notarized several
  times (an empty line, a repeated message) never sets the span by itself;
  such lines at the top or bottom of the file extend it over the source's
  entries just past its edges while those hold exactly them, in order.
- **matching**: lines are matched to the span's entries by digest, in file
  order, each entry to at most one line (equal lines take equal entries in log
  order).
- **order**: the longest run of matched lines whose indices increase is taken
  as in place; the other matched lines were moved. A moved line that took the
  place of another moved line, or of its neighbour, is reported as a swap.
- **gaps**: between two lines in place, the lines that match nothing are paired
  in order with the span's entries that match no line and lie between the two
  lines' indices: a pair is an altered line ("was entry I"), a line left over
  was inserted, an entry left over was deleted. Before the first and after the
  last notarized line there is no entry to compare with (the span ends there),
  so an altered first or last line shows as inserted.
- **pending**: a line whose digest is only at indices beyond the verified
  checkpoint is notarized but not sealed yet; it is neither trusted nor
  counted as tampering.

Pure: all I/O is behind ``EntryIndex``.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Protocol

NOTARIZED, REORDERED, ALTERED, INSERTED, PENDING = "notarized", "reordered", "altered", "inserted", "pending"
DELETED, SWAPPED, MOVED = "deleted", "swapped", "moved"
TAMPERING = frozenset({ALTERED, INSERTED, DELETED, SWAPPED, MOVED})

SAMPLE = 1024  # lines looked up at each end of the file to find the span
MAX_ROUNDS = 8  # span widenings; each needs a line notarized outside the previous span
EDGE_WINDOW = 65_536  # indices fetched past each edge of the span at least, for the lines that repeat a record (_edges)


class EntryIndex(Protocol):
    """A verified view of one source's entries under one signed checkpoint."""

    size: int  # the checkpoint's tree size: nothing at or beyond it is covered

    def lookup(self, digests: Sequence[bytes]) -> dict[bytes, list[int]]:
        """For each digest, the indices (any, in log order) of the source's entries holding it."""

    def entries(self, start: int, end: int) -> list[tuple[int, bytes]]:
        """(index, digest) of the source's entries in [start, end), in index order, verified."""


@dataclass(frozen=True)
class Finding:
    kind: str  # altered, inserted, deleted, swapped, moved, pending
    lines: tuple[int, ...]  # line numbers from 1
    indices: tuple[int, ...]  # log indices
    message: str

    def to_json(self) -> dict:
        return {"kind": self.kind, "lines": list(self.lines), "indices": list(self.indices), "message": self.message}


@dataclass
class Report:
    status: list[str]  # per line: notarized, reordered, altered, inserted, pending
    index: list[int | None]  # per line: the entry it matches, or (altered) the entry it replaced
    span: tuple[int, int] | None
    findings: list[Finding] = field(default_factory=list)

    @property
    def tampered(self) -> bool:
        return any(f.kind in TAMPERING for f in self.findings)

    @property
    def pending(self) -> bool:
        return any(f.kind == PENDING for f in self.findings)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys((NOTARIZED, REORDERED, ALTERED, INSERTED, PENDING), 0)
        for s in self.status:
            counts[s] += 1
        counts[DELETED] = sum(f.kind == DELETED for f in self.findings)
        return counts


def analyse(digests: Sequence[bytes], index: EntryIndex) -> Report:
    """Match the lines (their digests, in file order) against the log; see the module docstring."""
    n = len(digests)
    known: dict[bytes, list[int]] = {}

    def look(positions: Iterable[int]) -> None:
        want = list({digests[p] for p in positions if digests[p] not in known})
        if want:
            known.update(index.lookup(want))

    def widen(span: tuple[int, int] | None, positions: Iterable[int]) -> tuple[int, int] | None:
        for p in positions:
            hits = known.get(digests[p])
            if hits and len(hits) == 1 and 0 <= hits[0] < index.size:
                i = hits[0]
                span = (i, i + 1) if span is None else (min(span[0], i), max(span[1], i + 1))
        return span

    ends = list(dict.fromkeys(chain(range(min(n, SAMPLE)), range(max(0, n - SAMPLE), n))))
    look(ends)
    span = widen(None, ends)
    matched: list[int | None] = [None] * n
    unassigned: list[int] = []
    entries: list[tuple[int, bytes]] = []
    assigned: tuple[int, int] | None = None  # the span ``matched`` is of
    for _ in range(MAX_ROUNDS):
        if span is not None:
            entries = index.entries(*span)
            matched, unassigned = _assign(digests, entries)
            assigned = span
        unmatched = [p for p in range(n) if matched[p] is None]
        look(unmatched)
        wider = widen(span, unmatched)
        if wider == span:
            break
        span = wider
    span = assigned  # (a widening past the last round is neither matched nor reported)
    if span is not None:
        before, after = _edges(digests, matched, span, known, look, index)
        if before or after:
            span = (before[0][0] if before else span[0], after[-1][0] + 1 if after else span[1])
            matched, unassigned = _assign(digests, before + entries + after)
    return _classify(digests, matched, unassigned, span, known, index.size)


def _edges(digests: Sequence[bytes], matched: Sequence[int | None], span: tuple[int, int],
           known: dict[bytes, list[int]], look: Callable[[Sequence[int]], None],
           index: EntryIndex) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
    """The source's entries just before and just after the span that the file's first and last lines repeat.

    A digest notarized several times never sets the span, so a file that
    begins or ends with such lines (a blank line, a repeated heartbeat) would
    show them as inserted although each is the source's very next entry past
    the span's edge. Walking out from each edge, the lines before the span's
    first line and after its last one take the source's entries there for as
    long as those hold exactly their digests, in order. The lookups only say
    how far to fetch (up to the span's own length or EDGE_WINDOW indices a
    side, whichever is more); the verified entries decide. Lines are looked
    up as the walk reaches them, SAMPLE at a time.
    """
    start, end = span
    n = len(digests)
    first = next((p for p, i in enumerate(matched) if i == start), None)  # the lines at the span's edges
    last = next((p for p, i in enumerate(matched) if i == end - 1), None)
    window = max(EDGE_WINDOW, end - start)
    order: dict[bytes, list[int]] = {}  # sorted hits: a liar's answer may be unordered

    def reach(positions: list[int], edge: int, forward: bool) -> int:
        """How far from ``edge`` the hits of the lines at ``positions`` reach, each past the one before."""
        bound = min(index.size, edge + window) if forward else max(0, edge - window)
        at_edge = edge
        for k, p in enumerate(positions):
            d = digests[p]
            if d not in known:
                look(positions[k : k + SAMPLE])
            if d not in order:
                order[d] = sorted(known.get(d) or ())
            at = order[d]
            j = bisect.bisect_left(at, at_edge) - (0 if forward else 1)
            if forward and (j == len(at) or at[j] >= bound) or not forward and (j < 0 or at[j] < bound):
                break
            at_edge = at[j] + 1 if forward else at[j]
        return at_edge

    after: list[tuple[int, bytes]] = []
    tail = list(range(last + 1, n)) if last is not None else []
    if tail and (far := reach(tail, end, True)) > end:
        for (i, d), p in zip(index.entries(end, far), tail):
            if d != digests[p]:
                break
            after.append((i, d))
    before: list[tuple[int, bytes]] = []
    head = list(reversed(range(first))) if first is not None else []  # nearest the edge first
    if head and (far := reach(head, start, False)) < start:
        for (i, d), p in zip(reversed(index.entries(far, start)), head):
            if d != digests[p]:
                break
            before.append((i, d))
        before.reverse()
    return before, after


def _assign(digests: Sequence[bytes], entries: Iterable[tuple[int, bytes]]) -> tuple[list[int | None], list[int]]:
    """Match lines to entries by digest in file order; return (entry per line, entries left over)."""
    first: dict[bytes, int] = {}
    later: dict[bytes, list[int]] = {}  # repeated digests, reversed so that pop() is the earliest
    for i, d in entries:
        if d in first:
            later.setdefault(d, []).append(i)
        else:
            first[d] = i
    for rest in later.values():
        rest.reverse()
    matched: list[int | None] = []
    for d in digests:
        i = first.pop(d, None)
        if i is not None:
            rest = later.get(d)
            if rest:
                first[d] = rest.pop()
        matched.append(i)
    left = list(first.values())
    for rest in later.values():
        left += rest
    left.sort()
    return matched, left


def _in_place(matched: Sequence[int | None]) -> list[int]:
    """Positions of a longest run of matched lines with increasing indices (patience sorting)."""
    positions = [p for p, i in enumerate(matched) if i is not None]
    values = [matched[p] for p in positions]
    if all(a < b for a, b in zip(values, values[1:])):
        return positions
    tails: list[int] = []  # tails[k]: smallest last value of an increasing run of length k+1
    tail_at: list[int] = []  # the position (in values) of that last value
    back = [-1] * len(values)
    for k, v in enumerate(values):
        j = bisect.bisect_left(tails, v)
        back[k] = tail_at[j - 1] if j else -1
        if j == len(tails):
            tails.append(v)
            tail_at.append(k)
        else:
            tails[j] = v
            tail_at[j] = k
    run, k = [], tail_at[-1] if tail_at else -1
    while k >= 0:
        run.append(positions[k])
        k = back[k]
    run.reverse()
    return run


def _classify(digests: Sequence[bytes], matched: list[int | None], unassigned: list[int],
              span: tuple[int, int] | None, known: dict[bytes, list[int]], size: int) -> Report:
    n = len(digests)
    status = [NOTARIZED if i is not None else INSERTED for i in matched]
    index: list[int | None] = list(matched)
    report = Report(status=status, index=index, span=span)
    found: list[tuple[float, Finding]] = []  # (where in the file, finding): sorted at the end

    def add(where: float, finding: Finding) -> None:
        found.append((where, finding))

    keep_pos = _in_place(matched)
    keep_idx = [matched[p] for p in keep_pos]
    kept = set(keep_pos)

    def line_name(slot: int) -> str:
        """Where a gap between lines in place sits, for people."""
        before = f"line {keep_pos[slot - 1] + 1}" if slot > 0 else "the start of the file"
        after = f"line {keep_pos[slot] + 1}" if slot < len(keep_pos) else "the end of the file"
        return f"between {before} and {after}"

    # Moved lines: matched, but not in the increasing run.
    moved = [p for p, i in enumerate(matched) if i is not None and p not in kept]
    slots = {p: (bisect.bisect_left(keep_pos, p), bisect.bisect_left(keep_idx, matched[p])) for p in moved}
    by_slots: dict[tuple[int, int], list[int]] = {}
    for p, st in slots.items():
        by_slots.setdefault(st, []).append(p)
    done: set[int] = set()
    for p in moved:
        if p in done:
            continue
        s, t = slots[p]
        partner = next((q for q in by_slots.get((t, s), ()) if q != p and q not in done), None) if s != t else None
        if partner is None and t == s + 1 and s < len(keep_pos) and keep_pos[s] == p + 1:
            partner = p + 1  # moved one step down past its neighbour
        elif partner is None and t == s - 1 and s > 0 and keep_pos[s - 1] == p - 1:
            partner = p - 1  # moved one step up past its neighbour
        status[p] = REORDERED
        if partner is not None:
            a, b = sorted((p, partner))
            status[partner] = REORDERED
            done.update((a, b))
            add(a, Finding(SWAPPED, (a + 1, b + 1), (matched[a], matched[b]),
                                    f"lines {a + 1} and {b + 1} are swapped: line {a + 1} holds entry {matched[a]} "
                                    f"and line {b + 1} entry {matched[b]}, notarized the other way round"))
            continue
        done.add(p)
        add(p, Finding(MOVED, (p + 1,), (matched[p],),
                                f"line {p + 1} was moved: it holds entry {matched[p]}, which was notarized "
                                f"{line_name(t)}"))

    # Lines that match nothing in the span, and entries of the span that match no line, by gap.
    gap_lines: dict[int, list[int]] = {}
    for p in range(n):
        if matched[p] is not None:
            continue
        hits = known.get(digests[p]) or []
        if hits and all(i >= size for i in hits):
            status[p] = PENDING
            index[p] = hits[0]
            add(p, Finding(PENDING, (p + 1,), (hits[0],),
                                    f"line {p + 1} is notarized at index {hits[0]} but not sealed yet: the verified "
                                    f"checkpoint covers {size} entries; verify again after the next seal"))
            continue
        gap_lines.setdefault(bisect.bisect_left(keep_pos, p), []).append(p)
    gap_entries: dict[int, list[int]] = {}
    for i in unassigned:
        gap_entries.setdefault(bisect.bisect_left(keep_idx, i), []).append(i)
    for slot in sorted(gap_lines.keys() | gap_entries.keys()):
        lines, entries = gap_lines.get(slot, []), gap_entries.get(slot, [])
        for p, i in zip(lines, entries):
            status[p] = ALTERED
            index[p] = i
            add(p, Finding(ALTERED, (p + 1,), (i,),
                                    f"line {p + 1} was altered (was entry {i}): its digest is not in the log"
                                    f"{_elsewhere(known.get(digests[p]))}"))
        for p in lines[len(entries) :]:
            add(p, Finding(INSERTED, (p + 1,), (),
                                    f"line {p + 1} was inserted: it is not in the log{_elsewhere(known.get(digests[p]))}, "
                                    f"and no entry is missing {line_name(slot)}"))
        for i in entries[len(lines) :]:
            add(keep_pos[slot - 1] + 0.5 if slot else -0.5, Finding(DELETED, (), (i,),
                                    f"entry {i} was deleted: it was notarized {line_name(slot)} "
                                    f"and matches no line of the file"))
    found.sort(key=lambda wf: wf[0])
    report.findings = [f for _, f in found]
    return report


def _elsewhere(hits: list[int] | None) -> str:
    if not hits:
        return ""
    shown = ", ".join(map(str, hits[:3])) + (", ..." if len(hits) > 3 else "")
    return f" in this place (its content is notarized at entry {shown}, which another line or the span's edge accounts for)"
