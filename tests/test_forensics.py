"""``forensics.analyse`` trusts only verified entries: a notary that lies in its lookups cannot make a file look clean.

``notary verify-log`` asks the notary which indices hold a line's digest
(``EntryIndex.lookup``) to choose the span of the log a file should account
for, and those answers come with no proof. Only ``EntryIndex.entries`` is
verified (a range proof against the signed checkpoint). These tests run
``analyse`` against an index whose ``entries`` are the truth and whose
``lookup`` lies in every way we could think of, and check what an auditor
relies on: a CLEAN verdict means the file is exactly the source's entries of
the reported span, in order, and every line reported notarized sits on an
entry that holds it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence

import pytest

from notary import forensics

SOURCE, OTHER = "app", "other"


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


class Log:
    """A log of (index, digest, source) records; ``size`` of them are under the verified checkpoint."""

    def __init__(self, records: list[tuple[bytes, str]], size: int):
        self.records = records
        self.size = size

    def source_entries(self, start: int, end: int) -> list[tuple[int, bytes]]:
        return [(i, d) for i, (d, s) in enumerate(self.records[:self.size]) if start <= i < end and s == SOURCE]

    def true_lookup(self, digests: Sequence[bytes]) -> dict[bytes, list[int]]:
        return {d: [i for i, (e, s) in enumerate(self.records) if e == d and s == SOURCE] for d in digests}


class Index:
    """``entries`` tells the truth (it is range-proven in real use); ``lookup`` answers whatever ``lie`` says."""

    covers = (0, None)  # a daemon's lookups: the whole log

    def __init__(self, log: Log, lie: Callable[[bytes, list[int]], list[int]]):
        self.log, self.lie, self.size = log, lie, log.size

    def lookup(self, digests: Sequence[bytes]) -> dict[bytes, list[int]]:
        truth = self.log.true_lookup(digests)
        return {d: self.lie(d, truth[d]) for d in digests}

    def entries(self, start: int, end: int) -> list[tuple[int, bytes]]:
        return self.log.source_entries(start, end)


def honest(_digest: bytes, hits: list[int]) -> list[int]:
    return hits


def liars(rng: random.Random, log: Log) -> dict[str, Callable[[bytes, list[int]], list[int]]]:
    n = len(log.records)
    return {
        "denies everything": lambda d, hits: [],
        "claims everything is past the checkpoint": lambda d, hits: [log.size + rng.randrange(100)],
        "answers random indices": lambda d, hits: sorted(rng.sample(range(n), rng.randrange(3))),
        "hides some answers": lambda d, hits: hits if rng.random() < 0.5 else [],
        "moves answers by one": lambda d, hits: [i + rng.choice((-1, 1)) for i in hits if 0 < i < n - 1],
        "points every digest at the first entry": lambda d, hits: [0],
        "mixes truth and lies": lambda d, hits: sorted(set(hits) | {rng.randrange(n)}) if rng.random() < 0.5 else hits,
    }


def tamper(rng: random.Random, lines: list[str]) -> tuple[str, list[str]]:
    lines = list(lines)
    kind = rng.choice(["none", "edit", "delete", "insert", "swap", "move", "duplicate", "truncate"])
    p = rng.randrange(len(lines))
    if kind == "edit":
        lines[p] += " (edited)"
    elif kind == "delete" and len(lines) > 1:
        del lines[p]
    elif kind == "insert":
        lines.insert(p, f"forged line {rng.random()}")
    elif kind == "swap" and p + 1 < len(lines):
        lines[p], lines[p + 1] = lines[p + 1], lines[p]
    elif kind == "move":
        lines.insert(rng.randrange(len(lines)), lines.pop(p))
    elif kind == "duplicate":
        lines.insert(p, lines[p])
    elif kind == "truncate" and len(lines) > 2:
        lines = lines[: rng.randrange(1, len(lines))]
    return kind, lines


def make_log(rng: random.Random) -> tuple[Log, list[str], int]:
    """A log mixing two sources, with repeated and empty lines; the file is the source's records from ``first`` on."""
    texts = [f"rec {i} {rng.choice(['login', 'logout', 'read'])}" for i in range(rng.randrange(5, 40))]
    for _ in range(rng.randrange(3)):
        texts[rng.randrange(len(texts))] = ""  # an empty line is a record too
    if rng.random() < 0.5:
        texts.append(texts[rng.randrange(len(texts))])  # a repeated record
    records: list[tuple[bytes, str]] = [(digest(f"before {i}"), SOURCE) for i in range(rng.randrange(3))]
    first = len(records)
    for text in texts:
        records.append((digest(text), SOURCE))
        if rng.random() < 0.3:
            records.append((digest(f"other {rng.random()}"), OTHER))
    records += [(digest(f"after {i}"), SOURCE) for i in range(rng.randrange(3))]
    size = len(records) - rng.randrange(3)  # the last few may be past the verified checkpoint
    return Log(records, size), texts, first


def check_sound(log: Log, digests: list[bytes], report: forensics.Report) -> None:
    """What a verdict promises, whatever the lookups said."""
    truth = dict(log.source_entries(0, log.size))
    for p, status in enumerate(report.status):
        if status in (forensics.NOTARIZED, forensics.REORDERED):
            assert truth.get(report.index[p]) == digests[p], f"line {p + 1} was reported at an entry that does not hold it"
    if not report.findings:  # CLEAN
        assert report.span is not None
        assert [d for _, d in log.source_entries(*report.span)] == digests, "CLEAN for a file that is not the span"
        assert report.span[1] <= log.size


def is_sealed_run(log: Log, digests: list[bytes]) -> bool:
    """Whether the file is the source's sealed entries from one of them on, in order, with a line notarized once."""
    mine = [d for _, d in log.source_entries(0, log.size)]
    counts = {d: sum(e == d for e, s in log.records if s == SOURCE) for d in digests}
    if not any(c == 1 for c in counts.values()):
        return False  # nothing sets the span: nothing to call clean
    return any(mine[k : k + len(digests)] == digests for k in range(len(mine) - len(digests) + 1))


def trials(seed: int, count: int):
    """``count`` random logs, each with its file changed one random way: (rng, log, kind, lines, digests)."""
    rng = random.Random(seed)
    for _ in range(count):
        log, texts, _ = make_log(rng)
        kind, lines = tamper(rng, texts)
        yield rng, log, kind, lines, [digest(line) for line in lines]


def test_a_lying_lookup_never_makes_a_file_clean_that_is_not_the_source_entries_of_its_span():
    verdicts: dict[tuple[str, str], set[str]] = {}
    for rng, log, kind, lines, digests in trials(20261204, 400):
        for name, lie in {"honest": honest, **liars(rng, log)}.items():
            report = forensics.analyse(digests, Index(log, lie))
            check_sound(log, digests, report)
            verdict = "tampered" if report.tampered else "pending" if report.pending else "clean"
            verdicts.setdefault((name, kind), set()).add(verdict)
    # The lies did change verdicts, so the check above had something to judge.
    assert verdicts[("denies everything", "none")] == {"tampered"}
    assert "pending" in verdicts[("claims everything is past the checkpoint", "edit")]
    assert "clean" in verdicts[("honest", "none")]


def test_an_honest_index_calls_a_file_clean_exactly_when_it_is_a_run_of_the_source_sealed_entries():
    """Whatever was done to the file: an edit, a deletion, an insertion, a swap, a move, a duplicated or a cut-off line."""
    seen: dict[tuple[str, bool], int] = {}
    for _, log, kind, lines, digests in trials(4, 1500):
        report = forensics.analyse(digests, Index(log, honest))
        check_sound(log, digests, report)
        expected = is_sealed_run(log, digests)
        assert (not report.findings) == expected, (kind, lines, [f.message for f in report.findings])
        seen[(kind, expected)] = seen.get((kind, expected), 0) + 1
    for kind in ("edit", "delete", "insert", "swap", "move", "duplicate"):  # each was caught at least once
        assert seen.get((kind, False), 0) > 10, (kind, seen)


@pytest.mark.parametrize("where", ["end", "start", "both"])
def test_a_file_that_begins_or_ends_with_repeated_records_is_clean(where):
    """A blank line or a repeated heartbeat never sets the span; at the file's edges it must still count as notarized."""
    texts = [f"rec {i}" for i in range(10)]
    heartbeat = "-- MARK --"
    body = ["", heartbeat, *texts[:5], heartbeat, "", *texts[5:], heartbeat, ""]
    file_lines = {"end": body[2:], "start": body[:-2], "both": body}[where]
    records: list[tuple[bytes, str]] = []
    for i, text in enumerate(body):
        records.append((digest(text), SOURCE))
        records.append((digest(f"other {i}"), OTHER))  # another source in between
    records += [(digest(heartbeat), SOURCE), (digest(""), SOURCE)]  # and the same records again later
    log = Log(records, len(records))
    digests = [digest(t) for t in file_lines]
    report = forensics.analyse(digests, Index(log, honest))
    assert not report.findings, [f.message for f in report.findings]
    assert [d for _, d in log.source_entries(*report.span)] == digests
    # One more repeated line at the end that is not the source's next record is still an insertion.
    report = forensics.analyse(digests + [digest("")], Index(log, honest))
    assert [f.kind for f in report.findings] == ["inserted"]


def test_a_claim_past_the_checkpoint_can_only_make_a_line_pending_never_notarized():
    """The one lie ``analyse`` cannot catch: 'sealed later'. It costs the verdict CLEAN, never earns it."""
    rng = random.Random(7)
    log, texts, _ = make_log(rng)
    log.size = len(log.records)
    lines = list(texts)
    lines.insert(len(lines) // 2, "forged line")
    forged = digest("forged line")
    digests = [digest(t) for t in lines]
    assert forensics.analyse(digests, Index(log, honest)).tampered

    def past_checkpoint_for_the_forgery(d: bytes, hits: list[int]) -> list[int]:
        return [log.size + 5] if d == forged else hits

    report = forensics.analyse(digests, Index(log, past_checkpoint_for_the_forgery))
    assert report.status[lines.index("forged line")] == forensics.PENDING
    assert report.pending and not report.tampered  # INCOMPLETE (exit 10), not CLEAN
    check_sound(log, digests, report)


class Bundle:
    """An honest log bundle of the entries [start, end): it knows nothing of the log outside them."""

    def __init__(self, log: Log, start: int, end: int):
        self.log, self.size, self.covers = log, log.size, (start, end)

    def lookup(self, digests: Sequence[bytes]) -> dict[bytes, list[int]]:
        start, end = self.covers
        return {d: [i for i in hits if start <= i < end] for d, hits in self.log.true_lookup(digests).items()}

    def entries(self, start: int, end: int) -> list[tuple[int, bytes]]:
        return self.log.source_entries(max(start, self.covers[0]), min(end, self.covers[1]))

    def source_entries(self) -> list[tuple[int, bytes]]:
        return self.log.source_entries(*self.covers)


def test_a_bundle_of_part_of_the_log_never_calls_an_untouched_file_tampered_and_still_finds_tampering():
    """Lines above or below what a bundle covers may be notarized outside it: not judged, never 'inserted'.

    Before 2026-12-05 such lines were reported inserted (TAMPERED, exit 9) whenever the bundle began after
    the file's first record or ended before its last, and a repeated line (a blank one) near the bundle's
    start could take the entry of its twin inside the bundle and show as moved. A record notarized twice,
    once outside the bundle, can still pair a line with the wrong entry: the untouched reading of the file
    (forensics._honest_overlap) must then win over the tampering the pairing suggests.
    """
    seen: dict[tuple[str, str], int] = {}
    for rng, log, kind, lines, digests in trials(1205, 2000):
        start = rng.randrange(log.size) if rng.random() < 0.7 else 0  # (some bundles start at the log's start
        end = rng.randrange(start + 1, log.size + 1) if rng.random() < 0.7 else log.size  # or end at its end)
        report = forensics.analyse(digests, Bundle(log, start, end))
        check_sound(log, digests, report)
        if kind in ("none", "truncate"):
            assert not report.tampered, (start, end, lines, [f.message for f in report.findings])
        in_place = [p for p, s in enumerate(report.status) if s == forensics.NOTARIZED]
        for p, status in enumerate(report.status):
            if status == forensics.UNCOVERED:  # only above or below the lines in place, never between two
                assert not in_place or p < in_place[0] or p > in_place[-1], (kind, p, report.status)
        verdict = "tampered" if report.tampered else "uncovered" if report.uncovered else "clean"
        seen[(kind, verdict)] = seen.get((kind, verdict), 0) + 1
    assert seen.get(("none", "uncovered"), 0) > 100 and seen.get(("none", "clean"), 0) > 10, seen
    for kind in ("edit", "delete", "insert", "swap", "move", "duplicate"):  # inside the bundle, still caught
        assert seen.get((kind, "tampered"), 0) > 10, (kind, seen)


def test_a_bundle_judges_lines_above_the_file_when_it_starts_at_the_log_and_never_below():
    """A bundle from index 0 rules out records before it; nothing rules out one notarized after its end."""
    texts = [f"rec {i}" for i in range(8)]
    log = Log([(digest(t), SOURCE) for t in texts], len(texts))
    forged = [digest("forged"), *map(digest, texts[:6])]  # a line added on top; the last two lines cut
    report = forensics.analyse(forged, Bundle(log, 0, 6))
    assert [(f.kind, f.lines) for f in report.findings] == [("inserted", (1,))]
    report = forensics.analyse(forged, Bundle(log, 1, 6))  # entry 0 is outside it: line 1 could be there
    assert [(f.kind, f.lines) for f in report.findings] == [("uncovered", (1,)), ("uncovered", (2,))]
    assert report.uncovered and not report.tampered
    report = forensics.analyse([*map(digest, texts[:6]), digest("forged")], Bundle(log, 0, 8))
    assert [(f.kind, f.lines) for f in report.findings] == [("uncovered", (7,))]  # past the end: could be later
    report = forensics.analyse([*map(digest, texts[:6]), digest("forged")], Index(log, honest))
    assert [(f.kind, f.lines) for f in report.findings] == [("inserted", (7,))]  # the whole log rules it out


def test_a_blank_line_above_a_bundle_does_not_take_its_twin_inside_the_bundle():
    """Before 2026-12-05 the top blank line took the first blank entry in the bundle (its twin's) and was 'moved'."""
    texts = ["a", "", "b", "c", "d", "", "e", "f"]
    log = Log([(digest(t), SOURCE) for t in texts], len(texts))
    digests = [digest(t) for t in texts]
    report = forensics.analyse(digests, Bundle(log, 2, 8))
    assert [(f.kind, f.lines) for f in report.findings] == [("uncovered", (1,)), ("uncovered", (2,))]
    assert report.index[5] == 5 and report.status[5] == forensics.NOTARIZED


@pytest.mark.parametrize("answer", [[[-5]], [[2.5]], [[True]], ["3"], [None], [[1], [2]], {"0": [1]}])
def test_a_daemon_lookup_answer_that_is_not_a_list_of_indices_is_refused(answer):
    """What a lookup says is never proven, but it must at least be indices before it steers the span."""
    from notary.cli_forensics import DaemonIndex
    from notary.client import ClientError

    class Client:
        def lookup(self, digests, source):
            return {"indices": answer}

    index = object.__new__(DaemonIndex)  # (its checkpoint is not what this is about)
    index.client, index.source = Client(), SOURCE
    with pytest.raises(ClientError, match="lookup: the notary"):
        index.lookup([digest("a")])


def test_a_daemon_lookup_answer_of_indices_is_taken():
    from notary.cli_forensics import DaemonIndex

    class Client:
        def lookup(self, digests, source):
            return {"indices": [[0, 7]] * len(digests)}

    index = object.__new__(DaemonIndex)
    index.client, index.source = Client(), SOURCE
    assert index.lookup([digest("a"), digest("b")]) == {digest("a"): [0, 7], digest("b"): [0, 7]}


@pytest.mark.parametrize("answer", [{}, {"checkpoint": None, "proof": []}, {"checkpoint": "x", "proof": "AAAA"},
                                    {"checkpoint": "x", "proof": [1]}])
def test_a_daemon_range_proof_answer_without_a_checkpoint_or_a_list_of_hashes_is_refused_in_a_sentence(answer):
    """Before: KeyError, AttributeError or TypeError, a traceback instead of exit 1 with a sentence."""
    from notary.cli_forensics import DaemonIndex, _fetch
    from notary.client import ClientError

    class Client:
        def range_proof(self, start, end, size=None):
            return answer

    with pytest.raises(ClientError, match="range proof: the notary's answer has no"):
        _fetch(Client(), 0, 1, None, None)
    with pytest.raises(ClientError, match="range proof: the notary's answer has no"):
        DaemonIndex(Client(), SOURCE, None)


def test_a_daemon_lookup_answer_without_indices_is_refused_in_a_sentence():
    from notary.cli_forensics import DaemonIndex
    from notary.client import ClientError

    class Client:
        def lookup(self, digests, source):
            return {"anchored_size": 3}

    index = object.__new__(DaemonIndex)
    index.client, index.source = Client(), SOURCE
    with pytest.raises(ClientError, match="lookup: the notary answered no list of results"):
        index.lookup([digest("a")])
