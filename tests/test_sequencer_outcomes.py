"""What a submission is told when the store's writer process dies during a commit (``Sequencer.run``).

A stand-in writer (one error path; the real process's death is tested in
tests/test_store_process.py): the commit in flight may have reached the disk
before the writer died, so its submissions must not be told "nothing was
appended, retry" (a retry could append them twice); those still queued were
never sent, and may be retried.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from notary.entry import encode_run
from notary.sequencer import CommitUnknown, RetryLater, Sequencer
from notary.store_process import WriterGone


class DyingWriter:
    store = SimpleNamespace(size=0)

    def __init__(self):
        self.in_commit = asyncio.Event()
        self.release = asyncio.Event()

    async def append(self, runs):
        self.in_commit.set()
        await self.release.wait()
        raise WriterGone("the log store's writer process exited (status -9)")


def test_the_commit_in_flight_is_of_unknown_outcome_and_the_queued_ones_may_retry():
    async def main():
        writer = DyingWriter()
        sequencer = Sequencer(writer, max_pending=1000)
        runner = asyncio.ensure_future(sequencer.run())
        in_flight = asyncio.ensure_future(sequencer.submit(encode_run([b"\x01" * 32], "app")))
        await writer.in_commit.wait()
        queued = asyncio.ensure_future(sequencer.submit(encode_run([b"\x02" * 32], "app")))
        await asyncio.sleep(0)
        writer.release.set()
        with pytest.raises(WriterGone):
            await runner
        with pytest.raises(CommitUnknown, match="whether these entries were appended is not known"):
            await in_flight  # before: CommitFailed, "nothing was appended, retry later"
        with pytest.raises(RetryLater, match="nothing was appended"):
            await queued
        assert not isinstance(in_flight.exception(), RetryLater)

    asyncio.run(main())
