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
- **matching**: lines are matched to the span's entries by digest, each entry
  to at most one line. A line whose digest is once in the file and once among
  the entries is an anchor; the anchors in increasing order bound the others:
  a line with a repeated digest (a blank line, a repeated message) takes the
  first free entry holding it between the anchors around it (above the first
  anchor, bottom up: the last free one before it), and only when there is
  none, the first free one anywhere.
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
- **uncovered**: an index that knows only part of the log (a log bundle:
  ``EntryIndex.covers``) cannot rule out that a line above the file's first
  line in place is notarized before its range, or that a line below the last
  one is notarized after it. Such a line, which a whole-log index would call
  inserted, is not judged: it makes the verdict incomplete, not tampered.
  Such an index also cannot tell a line's entry from a twin's (the same
  record notarized again outside it): its single hits set the span only as
  far as they stand in increasing order, and a verdict of tampering gives way
  to a reading of the file as untouched when one exists (``_honest_overlap``).

Pure: all I/O is behind ``EntryIndex``.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Protocol

NOTARIZED, REORDERED, ALTERED, INSERTED, PENDING = "notarized", "reordered", "altered", "inserted", "pending"
UNCOVERED = "uncovered"
DELETED, SWAPPED, MOVED = "deleted", "swapped", "moved"
TAMPERING = frozenset({ALTERED, INSERTED, DELETED, SWAPPED, MOVED})

SAMPLE = 1024  # lines looked up at each end of the file to find the span
MAX_ROUNDS = 8  # span widenings; each needs a line notarized outside the previous span
EDGE_WINDOW = 65_536  # indices fetched past each edge of the span at least, for the lines that repeat a record (_edges)


class EntryIndex(Protocol):
    """A verified view of one source's entries under one signed checkpoint."""

    size: int  # the checkpoint's tree size: nothing at or beyond it is covered
    # Where ``lookup`` knows every entry of the source: (0, None) for the whole log, entries not yet
    # sealed included (a daemon); (start, end) for a part of it (a log bundle's range).
    covers: tuple[int, int | None]

    def lookup(self, digests: Sequence[bytes]) -> dict[bytes, list[int]]:
        """For each digest, the indices (any, in log order) of the source's entries holding it."""

    def entries(self, start: int, end: int) -> list[tuple[int, bytes]]:
        """(index, digest) of the source's entries in [start, end), in index order, verified."""

    # Only an index of part of the log (``covers`` not (0, None)) is asked for this:
    def source_entries(self) -> list[tuple[int, bytes]]:
        """(index, digest) of every entry of the source it holds, in index order."""


@dataclass(frozen=True)
class Finding:
    kind: str  # altered, inserted, deleted, swapped, moved, pending, uncovered
    lines: tuple[int, ...]  # line numbers from 1
    indices: tuple[int, ...]  # log indices
    message: str

    def to_json(self) -> dict:
        return {"kind": self.kind, "lines": list(self.lines), "indices": list(self.indices), "message": self.message}


@dataclass
class Report:
    status: list[str]  # per line: notarized, reordered, altered, inserted, pending, uncovered
    index: list[int | None]  # per line: the entry it matches, or (altered) the entry it replaced
    span: tuple[int, int] | None
    findings: list[Finding] = field(default_factory=list)

    @property
    def tampered(self) -> bool:
        return any(f.kind in TAMPERING for f in self.findings)

    @property
    def pending(self) -> bool:
        return any(f.kind == PENDING for f in self.findings)

    @property
    def uncovered(self) -> bool:
        return any(f.kind == UNCOVERED for f in self.findings)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys((NOTARIZED, REORDERED, ALTERED, INSERTED, PENDING, UNCOVERED), 0)
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

    partial = index.covers != (0, None)
    top_open = index.covers[0] > 0

    def single(d: bytes) -> int | None:
        """The sealed index of the only entry holding ``d``, if the lookups found exactly one."""
        hits = known.get(d)
        return hits[0] if hits and len(hits) == 1 and 0 <= hits[0] < index.size else None

    def widen(span: tuple[int, int] | None, positions: Iterable[int]) -> tuple[int, int] | None:
        if partial:
            # Part of the log (a bundle): a digest found there once may be notarized again outside it, so a
            # line's one hit can be its twin's entry. Only the longest run of such hits in increasing order
            # sets the span.
            hits = [single(d) for d in digests]
            run = _in_place(hits)
            return (hits[run[0]], hits[run[-1]] + 1) if run else None
        for p in positions:
            i = single(digests[p])
            if i is not None:
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
            matched, unassigned = _assign(digests, entries, top_open)
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
            matched, unassigned = _assign(digests, before + entries + after, top_open)
    report = _classify(digests, matched, unassigned, span, known, index.size, index.covers)
    if partial and report.tampered:
        return _honest_overlap(digests, index) or report
    return report


def _z(seq: Sequence[object]) -> list[int]:
    """Z-array: z[k] is the length of the longest common prefix of ``seq`` and ``seq[k:]`` (z[0] = len)."""
    n = len(seq)
    z = [0] * n
    if n:
        z[0] = n
    left = right = 0
    for k in range(1, n):
        if k < right:
            z[k] = min(right - k, z[k - left])
        while k + z[k] < n and seq[z[k]] == seq[k + z[k]]:
            z[k] += 1
        if k + z[k] > right:
            left, right = k, k + z[k]
    return z


def _honest_overlap(digests: Sequence[bytes], index: EntryIndex) -> Report | None:
    """With part of the log, the reading in which the file is untouched, if there is one.

    A bundle cannot tell a line's own entry from a twin's (the same record
    notarized again, outside its range), so matching can pair a line with
    its twin and call the lines between tampered. The file is then still
    untouched if one run of its lines is exactly a run of the source's
    entries in the bundle that leaves out only what the bundle cannot show:
    the run starts the file, or (when the bundle starts after index 0) the
    run starts the bundle; and the run ends the file, or the bundle. The
    lines outside the run are not judged; a run reaching both ends of the
    file is CLEAN. The longest such run is taken; with none, the tampering
    stands. (Only a file that is a run of the source's entries comes out
    clean, so this never clears a tampered line the bundle holds.)
    """
    records = index.source_entries()
    e, f = [d for _, d in records], list(digests)
    best: tuple[int, int, int] | None = None  # (length, first line, first record)
    if e and f:
        z = _z([*f, None, *e])  # at record j: how many of the file's first lines it starts
        for j in range(len(e)):
            m = z[len(f) + 1 + j]
            if m and (m == len(f) or j + m == len(e)) and (best is None or m > best[0]):
                best = (m, 0, j)
        if index.covers[0] > 0:
            z = _z([*e, None, *f])  # at line k: how many of the bundle's first records it starts
            for k in range(len(f)):
                m = z[len(e) + 1 + k]
                if m and (m == len(e) or k + m == len(f)) and (best is None or m > best[0]):
                    best = (m, k, 0)
    if best is None:
        return None
    m, k, j = best
    run = records[j : j + m]
    span = (run[0][0], run[-1][0] + 1)
    if [d for _, d in index.entries(*span)] != f[k : k + m]:  # (the verified view: it refuses hidden entries)
        return None
    status = [UNCOVERED] * len(f)
    where: list[int | None] = [None] * len(f)
    findings = []
    for p in range(len(f)):
        if k <= p < k + m:
            status[p], where[p] = NOTARIZED, run[p - k][0]
            continue
        findings.append(_uncovered(p, p < k, index.covers, f"lines {k + 1} to {k + m} are the source's entries "
                                                          f"[{span[0]}, {span[1]}) in order, and this one is not"))
    return Report(status=status, index=where, span=span, findings=findings)


def _uncovered(p: int, above: bool, covers: tuple[int, int | None], why: str) -> Finding:
    """Line p, outside what an index of part of the log (``covers``) shows: not judged, and why."""
    where = f"before index {covers[0]}" if above else f"at index {covers[1]} or later"
    return Finding(UNCOVERED, (p + 1,), (),
                   f"line {p + 1} is not judged: {why}, and it may be notarized {where} (check it against the "
                   f"notary with --url, or with a bundle that {'starts earlier' if above else 'reaches further'})")


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


def _assign(digests: Sequence[bytes], entries: Iterable[tuple[int, bytes]],
            top_open: bool = False) -> tuple[list[int | None], list[int]]:
    """Match lines to entries by digest (the module docstring); return (entry per line, entries left over).

    ``top_open``: the entries before ``entries`` are not all known (a bundle that starts after index 0), so the
    lines above the first anchor are matched bottom up: the ones left out are the top ones.
    """
    first: dict[bytes, int] = {}  # digest -> its entry (the first, when there are several)
    more: dict[bytes, list[int]] = {}  # digest of several entries -> all of them, in log order
    for i, d in entries:
        if d in first:
            more.setdefault(d, [first[d]]).append(i)
        else:
            first[d] = i
    in_file = Counter(digests)
    n = len(digests)
    matched: list[int | None] = [None] * n
    used: set[bytes] = set()  # digests of one entry whose entry a line other than an anchor took
    for p, d in enumerate(digests):
        if in_file[d] == 1 and d in first and d not in more:
            matched[p] = first[d]
    bounds = _in_place(matched)  # the anchors in increasing order
    # For a digest of several entries, "next free entry" links (path halving): taking one is O(1) amortized.
    free: dict[bytes, list[int]] = {d: list(range(len(hits) + 1)) for d, hits in more.items()}

    def first_free(d: bytes, k: int) -> int:
        link = free[d]
        while link[k] != k:
            link[k] = link[link[k]]
            k = link[k]
        return k

    def take_after(p: int, low: int, high: int | None) -> bool:
        """Give line p the first free entry of its digest in (low, high); False if there is none."""
        d = digests[p]
        hits = more.get(d)
        if hits is None:
            i = first[d]
            if d in used or i <= low or high is not None and i >= high:
                return False
            used.add(d)
        else:
            k = first_free(d, bisect.bisect_right(hits, low))
            if k == len(hits) or high is not None and hits[k] >= high:
                return False
            free[d][k] = k + 1
            i = hits[k]
        matched[p] = i
        return True

    rest = [p for p in range(n) if matched[p] is None and digests[p] in first]
    later = []
    # With the top open, above the first anchor the lines nearest it take the entries nearest it: the index
    # leaves out the top lines, not the ones next to the anchor. Nothing but these lines takes an entry below
    # the first anchor, so each digest's entries there are taken from the last one back.
    head = 0 if not top_open else bisect.bisect_left(rest, bounds[0]) if bounds else len(rest)
    below: dict[bytes, int] = {}  # digest of several entries -> its last entry not yet taken below the anchor

    def take_before(p: int, high: int | None) -> bool:
        """Give line p the last entry of its digest below ``high`` not taken yet; False if there is none."""
        d = digests[p]
        hits = more.get(d)
        if hits is None:
            i = first[d]
            if d in used or high is not None and i >= high:
                return False
            used.add(d)
        else:
            k = below.get(d, (len(hits) if high is None else bisect.bisect_left(hits, high)) - 1)
            if k < 0:
                return False
            free[d][k], below[d] = k + 1, k - 1
            i = hits[k]
        matched[p] = i
        return True

    high = matched[bounds[0]] if bounds else None
    for p in reversed(rest[:head]):
        if not take_before(p, high):
            later.append(p)
    b = 0  # bounds[b] is the first anchor after p
    for p in rest[head:]:
        while b < len(bounds) and bounds[b] < p:
            b += 1
        low = matched[bounds[b - 1]] if b else -1
        if not take_after(p, low, matched[bounds[b]] if b < len(bounds) else None):
            later.append(p)
    for p in later:  # no free entry between its anchors: the first free one anywhere (a moved line)
        take_after(p, -1, None)
    left = [i for d, i in first.items() if d not in more and in_file.get(d) != 1 and d not in used]
    left += [hits[k] for d, hits in more.items() for k in range(len(hits)) if first_free(d, k) == k]
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
              span: tuple[int, int] | None, known: dict[bytes, list[int]], size: int,
              covers: tuple[int, int | None]) -> Report:
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
        # Above the first line in place, a line may be notarized before what the index covers; below the
        # last, after it (or after the checkpoint). Only an index of the whole log can rule that out.
        open_side = ("before" if slot == 0 and covers[0] > 0 else
                     "after" if slot == len(keep_pos) and covers[1] is not None else None)
        for p in lines[len(entries) :]:
            if open_side is not None:
                status[p] = UNCOVERED
                add(p, _uncovered(p, open_side == "before", covers,
                                  f"it is not among the source's entries in [{covers[0]}, {covers[1]})"))
                continue
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
