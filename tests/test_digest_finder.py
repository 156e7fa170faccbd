"""Single-digest lookups gathered into one scan (notary/sequencer.py, ``DigestFinder``)."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from notary.entry import Entry
from notary.errors import StoreError
from notary.sequencer import DigestFinder
from notary.store import LogStore


def digest(i: int) -> bytes:
    return hashlib.sha256(f"d-{i}".encode()).digest()


class SlowLookups:
    """A LogWriter's ``lookup`` on a real store, slow enough for requests to gather meanwhile; counts scans."""

    def __init__(self, store: LogStore, fail: bool = False):
        self.store = store
        self.fail = fail
        self.requests: list[int] = []  # digests in each find_by_digests call

    async def lookup(self, fn):
        await asyncio.sleep(0.05)
        if self.fail:
            raise StoreError("log store is unreadable (injected)")
        real = self.store.find_by_digests
        self.store.find_by_digests = lambda digests: (self.requests.append(len(digests)), real(digests))[1]
        try:
            return fn(self.store)
        finally:
            del self.store.find_by_digests


@pytest.fixture
def store(tmp_path):
    with LogStore(tmp_path / "log.db", create=True) as store:  # no digest index: every lookup scans
        store.append_entries([Entry(digest(i % 300), "src").encode() for i in range(1000)])
        yield store


def test_lookups_that_arrive_together_share_one_scan_and_each_gets_its_answer(store):
    writer = SlowLookups(store)
    finder = DigestFinder(writer)
    wanted = [digest(i) for i in range(0, 400, 7)] * 2  # each twice; those from 300 up are absent

    async def run():
        first = asyncio.ensure_future(finder.find(digest(5)))
        await asyncio.sleep(0.01)  # the first lookup is running: the others gather behind it
        rest = await asyncio.gather(*(finder.find(d) for d in wanted))
        return await first, rest

    first, rest = asyncio.run(run())
    assert first == [5, 305, 605, 905]
    assert rest == [[i, i + 300, i + 600] + ([i + 900] if i < 100 else []) if i < 300 else [] for i in range(0, 400, 7)] * 2
    assert writer.requests == [1, len(set(wanted))]  # two scans, not 1 + 116


def test_a_gone_client_and_a_failed_scan_leave_the_other_lookups_answered(store):
    writer = SlowLookups(store, fail=True)
    finder = DigestFinder(writer)

    async def run():
        gone = asyncio.ensure_future(finder.find(digest(1)))
        waiting = asyncio.ensure_future(finder.find(digest(2)))
        await asyncio.sleep(0)
        gone.cancel()
        with pytest.raises(StoreError, match="injected"):
            await waiting
        writer.fail = False
        return await finder.find(digest(2))

    assert asyncio.run(run()) == [2, 302, 602, 902]


def test_batch_lookups_share_the_scan_with_each_other_and_with_single_ones(store):
    """``POST /v1/lookup`` requests (many digests each) that arrive while a lookup runs join the next scan too."""
    writer = SlowLookups(store)
    finder = DigestFinder(writer)

    def truth(i: int) -> list[int]:
        return [j for j in range(1000) if j % 300 == i] if i < 300 else []

    batches = [[digest(i) for i in range(start, start + 40)] for start in (0, 20, 280)]  # overlapping, some absent
    batches.append([digest(7), digest(7), digest(999)])  # a digest twice in one request: answered twice

    async def run():
        first = asyncio.ensure_future(finder.find_all([digest(3)]))
        await asyncio.sleep(0.01)  # the first lookup is running: the others gather behind it
        gone = asyncio.ensure_future(finder.find_all([digest(4)]))
        together = asyncio.gather(finder.find(digest(5)), *(finder.find_all(b) for b in batches))
        await asyncio.sleep(0)
        gone.cancel()
        return await first, await together

    first, (single, *answers) = asyncio.run(run())
    assert first == [truth(3)] and single == truth(5)
    assert answers[:3] == [[truth(i) for i in range(start, start + 40)] for start in (0, 20, 280)]
    assert answers[3] == [truth(7), truth(7), []]
    wanted = {digest(5)} | {d for b in batches for d in b}
    assert writer.requests == [1, len(wanted)]  # two scans, each digest once in the second
