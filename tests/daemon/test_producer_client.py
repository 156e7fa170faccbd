"""The producer side against a real daemon: the asyncio client, fail-closed, and a fail-open spool
that loses nothing across a notary restart, a notary crash and a producer crash."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import sqlite3
import subprocess
import sys

import pytest

from notary.client import (AsyncHttpClient, HttpClient, NotAcknowledgedError, NotaryHandler, UnixClient,
                           line_digests, submit_unix_async)
from notary.tlogproof import verify_tlog_proof

ORIGIN = "dev.notary.localhost/log"

# A producer process: NotaryHandler in fail-open mode, N records, then exit cleanly or die by SIGKILL.
PRODUCER = """
import os, signal, sys
from notary.client import HttpClient, NotaryHandler
sink, url, token, tag, count, end = sys.argv[1:]
handler = NotaryHandler(sink, HttpClient(url, token, timeout=5), mode="fail_open")
logger = handler.attach("producer")
for i in range(int(count)):
    logger.info({"producer": tag, "n": i})
print(handler.spool_depth, flush=True)
if end == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
handler.drain(timeout=30)
handler.close()
"""


def run_producer(sink, d, tag: str, count: int, end: str) -> int:
    """Run a producer process; return the spool depth it printed after logging."""
    done = subprocess.run([sys.executable, "-c", PRODUCER, str(sink), d.url, d.stack.token, tag, str(count), end],
                          capture_output=True, text=True, timeout=120)
    expected = -signal.SIGKILL if end == "kill" else 0
    assert done.returncode == expected, done.stderr
    return int(done.stdout.split()[0])


def ledger(sink) -> list[tuple[int, int | None]]:
    with sqlite3.connect(str(sink) + ".notary") as db:
        return db.execute("SELECT line, entry_index FROM lines ORDER BY line").fetchall()


def assert_every_line_in_the_log_in_order(d, sink, count: int, source: str = "dev-producer") -> None:
    """Each sink line has an acknowledged index, indices grow with the line number, and each index's
    proof (against an anchored, signed seal) holds that line's digest from our token's source."""
    lines = list(line_digests(sink))
    acks = ledger(sink)
    assert len(lines) == len(acks) == count
    indices = [index for _, index in acks]
    assert None not in indices, f"lines still spooled: {[n for n, i in acks if i is None]}"
    assert indices == sorted(set(indices)), "the log holds the sink's lines out of order"
    d.wait_anchored(indices[-1] + 1)
    client, vkeys = d.client(), d.vkeys()
    for (number, digest), index in zip(lines, indices):
        record = verify_tlog_proof(client.proof(index=index), vkeys, origin=ORIGIN)
        assert (record.entry.digest, record.entry.source) == (digest, source), f"line {number}"
        # Anyone with only the line finds it by its digest too (the first entry holding it).
        assert verify_tlog_proof(client.proof(digest=digest), vkeys).index <= index


def test_async_client_submits_and_proves_over_http_and_unix(daemon_factory):
    d = daemon_factory("pc-async", max_age=0.3).start()
    ds = [hashlib.sha256(f"async-{i}".encode()).digest() for i in range(4)]

    async def scenario():
        async with AsyncHttpClient(d.url, d.stack.token, timeout=30) as client:
            sealed = await client.submit(ds[:2], wait_sealed=True)
            unix = await submit_unix_async(d.socket, ds[2:])
            assert unix == [sealed[1]["index"] + 1, sealed[1]["index"] + 2]
            d.wait_anchored(unix[-1] + 1)
            proof = await client.proof(digest=ds[3])
            status, health = await client.healthz()
            return sealed, proof, status, health, await client.metrics(), await client.checkpoint()

    sealed, proof, status, health, metrics, checkpoint = asyncio.run(scenario())
    vkeys = d.vkeys()
    for digest, answer in zip(ds, sealed):
        assert verify_tlog_proof(answer["proof"], vkeys, origin=ORIGIN).entry.digest == digest
    record = verify_tlog_proof(proof, vkeys)
    assert (record.entry.digest, record.entry.source) == (ds[3], "local-user")
    assert status == 200 and health["ok"] and "notary_log_entries" in metrics
    assert checkpoint.startswith(ORIGIN + "\n")


def test_async_client_reports_an_unreachable_notary(daemon_factory, tmp_path):
    from notary.client import ClientError
    d = daemon_factory("pc-async-down")  # configured, never started

    async def scenario():
        async with AsyncHttpClient(d.url, "t", timeout=5) as client:
            with pytest.raises(ClientError, match="cannot be reached"):
                await client.submit([bytes(32)])
        with pytest.raises(ClientError, match="cannot be used"):
            await submit_unix_async(tmp_path / "absent.sock", [bytes(32)])

    asyncio.run(scenario())


@pytest.mark.parametrize("transport", ["http", "unix"])
def test_fail_closed_raises_when_the_notary_is_stopped(daemon_factory, tmp_path, transport):
    d = daemon_factory(f"pc-closed-{transport}", max_age=0.3).start()
    sink = tmp_path / "audit.jsonl"
    # A long timeout: a stopped notary refuses the connection at once, a busy machine must not fail the test.
    via = HttpClient(d.url, d.stack.token, timeout=30) if transport == "http" else UnixClient(d.socket, timeout=30)
    handler = NotaryHandler(sink, via, mode="fail_closed")
    logger = handler.attach(f"test.fail_closed.{transport}")
    try:
        logger.info({"action": "approve", "n": 1})  # returns: acknowledged
        assert ledger(sink)[0][1] is not None
        assert d.stop() == 0
        with pytest.raises(NotAcknowledgedError, match=r"audit.jsonl:2 was not acknowledged"):
            logger.info({"action": "approve", "n": 2})
        with pytest.raises(NotAcknowledgedError):
            handler.audit({"action": "approve", "n": 3})
        d.start()
        receipt = handler.audit({"action": "approve", "n": 4})  # spooled lines 2 and 3 go first, in order
    finally:
        handler.close()
    with sqlite3.connect(str(sink) + ".notary") as db:
        refused = [n for (n,) in db.execute("SELECT line FROM lines WHERE refused_to_caller ORDER BY line")]
    assert refused == [2, 3] and receipt.line == 4
    # The unix socket's source is the peer uid's name, HTTP's the token's.
    assert_every_line_in_the_log_in_order(d, sink, 4, "dev-producer" if transport == "http" else "local-user")


def test_fail_open_loses_nothing_across_notary_and_producer_restarts(daemon_factory, tmp_path):
    d = daemon_factory("pc-open", max_age=0.3).start()
    sink = tmp_path / "audit.jsonl"
    # 1. A producer logs 10 records with the notary up, drains and exits.
    run_producer(sink, d, "first", 10, "drain")
    assert all(index is not None for _, index in ledger(sink))
    # 2. The notary stops; a producer logs 15 records (returning at once) and dies by SIGKILL.
    assert d.stop() == 0
    assert run_producer(sink, d, "second", 15, "kill") == 15
    assert [index for _, index in ledger(sink)].count(None) == 15  # on disk, waiting
    # 3. The notary is back; a new producer (this process) drains the dead one's spool and logs on;
    #    the notary is killed (-9) and restarted in the middle, with lines spooled meanwhile.
    d.start()
    handler = NotaryHandler(sink, HttpClient(d.url, d.stack.token, timeout=5), mode="fail_open")
    logger = handler.attach("test.fail_open.restarts")
    try:
        for i in range(5):
            logger.info({"producer": "third", "n": i})
        assert handler.drain(timeout=60), handler.metrics_text()
        d.kill()
        for i in range(5, 12):
            logger.info({"producer": "third", "n": i})
        assert handler.spool_depth > 0 and "notary_producer_spool_lines" in handler.metrics_text()
        d.start()
        assert handler.drain(timeout=60), handler.metrics_text()
    finally:
        handler.close()
    assert_every_line_in_the_log_in_order(d, sink, 10 + 15 + 12)
