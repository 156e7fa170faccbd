"""A store writer that stops answering (a stalled disk): the daemon acknowledges nothing, and says so.

The writer process is stopped with SIGSTOP, which is what a commit stuck in
the kernel looks like from the daemon: a live process that does not answer.
"""

from __future__ import annotations

import asyncio
import os
import signal

from notary import store_process
from tests.inprocess import auth, digest_hex, running

LIVENESS = 30  # seconds: an answer that takes this long is a hang, not a slow machine


def test_health_and_metrics_answer_and_name_a_stalled_writer_while_commits_wait(tmp_path, monkeypatch):
    monkeypatch.setattr(store_process, "ANSWER_OVERDUE", 0.0, raising=False)  # any request in flight counts as stalled

    async def main():
        async with running(tmp_path) as (notary, client):
            r = await client.post("/v1/entries", json={"digests": [digest_hex(1)]}, headers=auth())
            assert r.status == 200 and (await r.json())["entries"] == [{"index": 0}]
            assert (await client.get("/healthz")).status == 200
            pid = notary.writer._process._process.pid
            os.kill(pid, signal.SIGSTOP)
            try:
                waiting = asyncio.ensure_future(
                    client.post("/v1/entries", json={"digests": [digest_hex(2)]}, headers=auth()))
                while notary.sequencer.pending_entries == 0 or notary.sequencer._pending:  # sent to the writer
                    await asyncio.sleep(0.01)
                r = await asyncio.wait_for(client.get("/healthz"), LIVENESS)  # before: waited for the writer
                body = await r.json()
                assert r.status == 503, body
                assert any("the log store's writer process has not answered" in p for p in body["problems"]), body
                r = await asyncio.wait_for(client.get("/metrics"), LIVENESS)
                assert r.status == 200
                text = await r.text()
                assert "notary_store_writer_wait_seconds" in text and "notary_pending_entries 1" in text
                assert not waiting.done()  # nothing acknowledged that is not durable
            finally:
                os.kill(pid, signal.SIGCONT)
            r = await asyncio.wait_for(waiting, LIVENESS)
            assert r.status == 200 and (await r.json())["entries"] == [{"index": 1}]
            monkeypatch.setattr(store_process, "ANSWER_OVERDUE", 10.0)
            r = await client.get("/healthz")
            assert r.status == 200, await r.text()

    asyncio.run(main())


def test_a_request_cancelled_while_the_writer_stalls_neither_blocks_the_loop_nor_shifts_the_answers(tmp_path):
    """Cancelling a commit in flight (a shutdown, a timeout) used to read its answer on the spot, blocking the
    event loop until the stalled writer answered; the answer must still be taken off the pipe before the next
    request's, or every later request would read its predecessor's answer."""
    import threading
    import time

    from notary.entry import encode_run

    writer = store_process.StoreProcess(tmp_path / "log.db")
    pid = writer._process.pid

    async def main():
        os.kill(pid, signal.SIGSTOP)
        resume = threading.Timer(LIVENESS / 3, os.kill, (pid, signal.SIGCONT))  # a blocked loop is freed at last
        resume.start()
        try:
            commit = asyncio.ensure_future(writer.append_async([encode_run([bytes(32)], "a")]))
            while writer.waited() == 0.0:  # sent
                await asyncio.sleep(0.01)
            started = time.monotonic()
            commit.cancel()
            await asyncio.gather(commit, return_exceptions=True)
            assert time.monotonic() - started < LIVENESS / 6, "cancelling waited for the stalled writer"
            assert commit.cancelled()
            assert writer.waited() > 0.0  # the writer is still busy with it, and health still says so
            await asyncio.wait_for(writer.refresh_status_async(), LIVENESS)  # does not queue behind it either
        finally:
            resume.cancel()
            os.kill(pid, signal.SIGCONT)
        # The cancelled commit happened (its fate was the writer's to decide); the next request gets its own answer.
        first = await asyncio.wait_for(writer.append_async([encode_run([bytes(32)] * 2, "a")]), LIVENESS)
        assert first == 1 and writer.waited() == 0.0
        assert await asyncio.wait_for(writer.append_async([encode_run([bytes(32)], "a")]), LIVENESS) == 3

    try:
        asyncio.run(main())
    finally:
        writer.close()
