"""After a submission whose outcome it does not know, the producer handler looks
in the log before it submits again, so that each line is in the log once.

In process (tests/inprocess.py), with the real HttpClient: a line in the log
twice would make ``notary verify-log`` report the second copy's neighbours as
deleted or moved, evidence of tampering where there was none.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3

import pytest

from notary.client import ClientError, NotAcknowledgedError, NotaryHandler, UnixClient
from notary.client.sync import HttpClient
from tests.inprocess import SOURCE, TOKEN, auth, digest_hex, running


def ledger(sink) -> list[tuple[int, bytes, int | None]]:
    with sqlite3.connect(str(sink) + ".notary") as db:
        return db.execute("SELECT line, digest, entry_index FROM lines ORDER BY line").fetchall()


def indices_in_log(client: HttpClient, digests: list[bytes]) -> list[list[int]]:
    return client.lookup(digests, source=SOURCE)["indices"]


class AnswerLost(HttpClient):
    """Each submission reaches the notary and is appended; the answer is lost on its way back."""

    def submit_indices(self, digests):
        super().submit_indices(digests)
        raise ClientError("the connection to the notary was reset before it answered (injected)")


class UnixAnswerLost(UnixClient):
    """AnswerLost through the unix socket."""

    def submit_indices(self, digests):
        super().submit_indices(digests)
        raise ClientError("the notary closed the socket before it answered (injected)")


class CannotLook(AnswerLost):
    """As AnswerLost, and the log cannot be searched either: nothing is submitted twice, nothing acknowledged."""

    def committed_prefix(self, digests, after):
        raise ClientError("the notary cannot be reached (injected)")


def test_a_batch_whose_answer_was_lost_is_found_not_submitted_again(tmp_path):
    sink = tmp_path / "audit.jsonl"

    async def main_():
        async with running(tmp_path) as (notary, client):
            url = str(client.make_url("")).rstrip("/")
            plain = HttpClient(url, token=TOKEN, timeout=5)
            # Every answer is lost: the first attempt appends the line and fails; the retry looks first, finds
            # it, and submits nothing.
            h = NotaryHandler(sink, AnswerLost(url, token=TOKEN, timeout=5), mode="fail_open")
            audit = h.attach("test.reconcile.lost")
            await asyncio.to_thread(audit.info, {"n": 1})
            assert await asyncio.to_thread(h.drain, 10)
            assert h.submit_failures_total == 1 and notary.sequencer.size == 1
            h.transport = plain  # the answers come back: the next line is submitted, once
            await asyncio.to_thread(audit.info, {"n": 2})
            assert await asyncio.to_thread(h.drain, 10)
            assert h.reconciled_total == 1 and h.acknowledged_total == 2
            h.close()

            rows = ledger(sink)
            found = await asyncio.to_thread(indices_in_log, plain, [d for _, d, _ in rows])
            assert found == [[i] for _, _, i in rows] == [[0], [1]]  # each line once, at its ledger index
            assert notary.sequencer.size == 2

    asyncio.run(main_())


def test_a_spool_left_by_an_earlier_process_is_matched_by_its_committed_prefix(tmp_path):
    sink = tmp_path / "audit.jsonl"
    # An earlier process wrote four lines and never got an answer (the notary was down for it) ...
    down = NotaryHandler(sink, UnixClient(tmp_path / "no-notary.sock", timeout=1), mode="fail_open")
    audit = down.attach("test.reconcile.spool")
    for n in range(4):
        audit.info({"n": n})
    down.close()
    spooled = [d for _, d, i in ledger(sink)]
    assert len(spooled) == 4

    async def main_():
        async with running(tmp_path) as (notary, client):
            url = str(client.make_url("")).rstrip("/")
            plain = HttpClient(url, token=TOKEN, timeout=5)
            # ... but its last submission, of the first two lines, had reached the notary, after an entry
            # of the same source holding the third line's digest (a run must be the lines in order).
            await asyncio.to_thread(plain.submit, [spooled[2]])
            await asyncio.to_thread(plain.submit, spooled[:2])
            again = NotaryHandler(sink, plain, mode="fail_open")
            assert await asyncio.to_thread(again.drain, 10)
            assert again.reconciled_total == 2 and again.acknowledged_total == 4
            again.close()

            rows = ledger(sink)
            assert [i for _, _, i in rows] == [1, 2, 3, 4]
            found = await asyncio.to_thread(indices_in_log, plain, spooled)
            assert found == [[1], [2], [0, 3], [4]]  # the first two once; the third submitted, not matched at 0

    asyncio.run(main_())


def test_when_the_log_cannot_be_searched_nothing_is_submitted_again(tmp_path):
    sink = tmp_path / "audit.jsonl"

    async def main_():
        async with running(tmp_path) as (notary, client):
            url = str(client.make_url("")).rstrip("/")
            h = NotaryHandler(sink, CannotLook(url, token=TOKEN, timeout=5), mode="fail_closed")
            audit = h.attach("test.reconcile.blind")
            h._unsure = False  # as after a drained spool: the first submission goes straight out
            with pytest.raises(NotAcknowledgedError, match="reset before it answered"):
                await asyncio.to_thread(audit.info, {"n": 1})
            await asyncio.to_thread(h.drain, 1.5)  # retries: each one looks first, and cannot
            assert h.submit_failures_total >= 2 and h.acknowledged_total == 0
            assert notary.sequencer.size == 1  # appended once, never again
            h.close()

    asyncio.run(main_())


def test_source_names_the_tokens_source_and_refuses_other_callers(tmp_path):
    async def main_():
        async with running(tmp_path) as (_, client):
            r = await client.get("/v1/source", headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status == 200 and await r.json() == {"source": SOURCE}
            for headers in ({}, {"Authorization": "Bearer not-a-token"}):
                r = await client.get("/v1/source", headers=headers)
                assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer"

    asyncio.run(main_())


def test_through_the_unix_socket_a_batch_whose_answer_was_lost_is_found_not_submitted_again(tmp_path):
    """Before, ``UnixClient`` could not look, and the handler sent the line again: in the log twice."""
    sink = tmp_path / "audit.jsonl"

    async def main_():
        async with running(tmp_path, unix_uid=os.getuid()) as (notary, client):
            h = NotaryHandler(sink, UnixAnswerLost(tmp_path / "s.sock", timeout=5), mode="fail_open")
            audit = h.attach("test.reconcile.unix")
            await asyncio.to_thread(audit.info, {"n": 1})
            await asyncio.to_thread(audit.info, {"n": 2})
            assert await asyncio.to_thread(h.drain, 10)
            assert h.submit_failures_total >= 1 and h.reconciled_total == 2 and h.acknowledged_total == 2
            h.close()

            rows = ledger(sink)
            found = await asyncio.to_thread(UnixClient(tmp_path / "s.sock", timeout=5).lookup, [d for _, d, _ in rows])
            assert found == [[i] for _, _, i in rows]  # each line once, at its ledger index
            assert notary.sequencer.size == 2

    asyncio.run(main_())


def test_a_lookup_waits_for_a_submission_still_being_committed(tmp_path):
    """A producer gave up on a submission the notary was still committing, and looks before sending it again.

    The writer process is stopped (SIGSTOP) with the submission in it. Before,
    the lookup answered from what was committed (nothing), and the producer
    sent the line a second time; now it waits for the submission's outcome.
    """
    async def main_():
        async with running(tmp_path, unix_uid=os.getuid()) as (notary, client):
            r = await client.post("/v1/entries", json={"digests": [digest_hex(0)]}, headers=auth())
            assert r.status == 200
            unix = UnixClient(tmp_path / "s.sock", timeout=60)
            pid = notary.writer._process._process.pid
            os.kill(pid, signal.SIGSTOP)
            try:
                given_up = asyncio.ensure_future(
                    client.post("/v1/entries", json={"digests": [digest_hex(1)]}, headers=auth()))
                by_unix = asyncio.ensure_future(asyncio.to_thread(unix.submit_indices, [bytes.fromhex(digest_hex(2))]))
                # Both accepted: the first in the stopped writer's commit, the second queued behind it.
                while notary.sequencer.pending_entries < 2:
                    await asyncio.sleep(0.01)
                given_up.cancel()  # the producer stops waiting; the notary commits it all the same
                over_http = asyncio.ensure_future(client.post(
                    f"/v1/lookup?source={SOURCE}", json={"digests": [digest_hex(1)]}, headers=auth()))
                over_unix = asyncio.ensure_future(asyncio.to_thread(unix.lookup, [bytes.fromhex(digest_hex(2))]))
                # Long enough for a lookup that does not wait to answer from the store as it is.
                await asyncio.wait([over_http, over_unix], timeout=1.0)
            finally:
                os.kill(pid, signal.SIGCONT)
            r = await asyncio.wait_for(over_http, 30)
            assert (await r.json())["indices"] == [[1]]
            assert await asyncio.wait_for(over_unix, 30) == [[2]]
            assert await asyncio.wait_for(by_unix, 30) == [2]
            assert notary.sequencer.size == 3

    asyncio.run(main_())
