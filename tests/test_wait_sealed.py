"""``POST /v1/entries?wait=sealed`` is bounded: in time (``limits.wait_sealed_timeout``) and in
how many wait at once (``limits.max_sealed_waiters``); in process (tests/inprocess.py)."""

from __future__ import annotations

import asyncio

import pytest

from notary.cli import main
from notary.client.sync import AcknowledgedNotSealedError, HttpClient, submit_answer
from notary.entry import parse_entry
from notary.tlogproof import parse_tlog_proof
from tests.inprocess import TOKEN, auth, digest_hex, running


async def _anchored_size(notary) -> int:
    seal = notary.anchorer.latest_anchored
    return 0 if seal is None else seal.tree_size


def test_a_wait_longer_than_the_bound_is_202_with_the_durable_indices_then_proofs_by_index(tmp_path):
    async def main_():
        async with running(tmp_path, max_age=0.05, wait_sealed_timeout=0.5) as (notary, client):
            notary.fake_tsa.fail = True
            body = {"digests": [digest_hex(1), digest_hex(2)]}
            r = await client.post("/v1/entries?wait=sealed", json=body, headers=auth())
            assert r.status == 202, await r.text()
            answer = await r.json()
            indices = [e["index"] for e in answer["entries"]]
            assert indices == [0, 1] and "not anchored within 0.5s" in answer["error"]
            assert "TSA down (injected)" in answer["error"] and "do not submit again" in answer["error"]
            assert "Retry-After" not in r.headers  # nothing to retry: the entries are in the log
            # The client library turns it into the "acknowledged, not sealed" error, with the indices.
            with pytest.raises(AcknowledgedNotSealedError) as caught:
                submit_answer(r.status, await r.read())
            assert caught.value.indices == [0, 1] and "HTTP 202" in str(caught.value)
            assert notary.sequencer.size == 2 and notary.sealed_waiters == 0
            # They are durable, and get their proofs once the TSA is back.
            notary.fake_tsa.fail = False
            notary.anchorer.poke()
            for _ in range(200):
                if await _anchored_size(notary) >= 2:
                    break
                await asyncio.sleep(0.05)
            for i, d in zip(indices, body["digests"]):
                r = await client.get(f"/v1/proof?index={i}")
                assert r.status == 200
                assert parse_entry(parse_tlog_proof(await r.text()).entry).digest.hex() == d

    asyncio.run(main_())


def test_waiters_over_the_bound_are_503_before_anything_is_appended(tmp_path):
    async def main_():
        async with running(tmp_path, max_age=0.05, max_sealed_waiters=1, wait_sealed_timeout=30) as (notary, client):
            notary.fake_tsa.fail = True
            first = asyncio.ensure_future(
                client.post("/v1/entries?wait=sealed", json={"digests": [digest_hex(1)]}, headers=auth()))
            for _ in range(200):
                if notary.sealed_waiters == 1:
                    break
                await asyncio.sleep(0.02)
            assert notary.sealed_waiters == 1
            metrics = await (await client.get("/metrics")).text()
            assert "notary_sealed_waiters 1\n" in metrics

            r = await client.post("/v1/entries?wait=sealed", json={"digests": [digest_hex(2)]}, headers=auth())
            assert r.status == 503 and r.headers["Retry-After"]
            assert "1 ?wait=sealed requests are waiting" in (await r.json())["error"]
            assert notary.sequencer.size == 1  # the refused request appended nothing
            assert notary.metrics.value("notary_ingest_rejected_total", reason="waiters") == 1
            # Without wait=sealed, ingest goes on.
            r = await client.post("/v1/entries", json={"digests": [digest_hex(3)]}, headers=auth())
            assert r.status == 200 and (await r.json())["entries"] == [{"index": 1}]

            notary.fake_tsa.fail = False
            notary.anchorer.poke()
            r = await asyncio.wait_for(first, 30)
            assert r.status == 200
            [entry] = (await r.json())["entries"]
            assert entry["index"] == 0 and parse_tlog_proof(entry["proof"]).index == 0
            assert notary.sealed_waiters == 0

    asyncio.run(main_())


def test_wait_sealed_answers_every_proof_of_a_large_request(tmp_path):
    # The proofs are read in turns of 256: a request of 600 crosses two turn boundaries.
    digests = [digest_hex(i) for i in range(600)]

    async def main_():
        async with running(tmp_path, max_age=0.05) as (notary, client):
            r = await client.post("/v1/entries?wait=sealed", json={"digests": digests}, headers=auth())
            assert r.status == 200
            entries = (await r.json())["entries"]
            assert [e["index"] for e in entries] == list(range(600))
            for e, d in zip(entries, digests):
                proof = parse_tlog_proof(e["proof"])
                assert proof.index == e["index"] and parse_entry(proof.entry).digest.hex() == d
                if e["index"] in (0, 255, 256, 511, 512, 599):  # the same text GET /v1/proof gives
                    assert e["proof"] == await (await client.get(f"/v1/proof?index={e['index']}")).text()

    asyncio.run(main_())


def test_submit_proof_dir_writes_each_records_proof(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NOTARY_TOKEN", TOKEN)
    log = tmp_path / "audit.log"
    log.write_text("user=alice action=login\nuser=bob action=logout\n")
    out = tmp_path / "proofs"

    async def main_():
        async with running(tmp_path, max_age=0.05) as (notary, client):
            url = str(client.make_url("")).rstrip("/")
            status = await asyncio.to_thread(main, ["submit", "--url", url, "--wait-sealed",
                                                    "--proof-dir", str(out), str(log)])
            assert status == 0
            for i in (0, 1):
                served = await asyncio.to_thread(HttpClient(url).proof, index=i)
                assert (out / f"{i}.tlog-proof").read_text() == served
            # Without --wait-sealed there are no proofs to write: refused before anything is sent.
            status = await asyncio.to_thread(main, ["submit", "--url", url,
                                                    "--proof-dir", str(out), str(log)])
            assert status != 0 and notary.sequencer.size == 2

    asyncio.run(main_())
    printed = capsys.readouterr()
    assert f"{log}:1\tindex 0\tproof {out / '0.tlog-proof'}" in printed.out
    assert "--proof-dir needs --wait-sealed" in printed.err
