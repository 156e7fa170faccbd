"""The HTTP API's answers to odd input: a 4xx naming the problem, never a 500 (notary/api.py, in process)."""

from __future__ import annotations

import asyncio

from tests.inprocess import TOKEN, auth, digest_hex, running

BEYOND_INT64 = str(1 << 63)  # one more than SQLite's largest INTEGER


def test_indices_and_sizes_beyond_int64_are_400_naming_the_parameter(tmp_path):
    async def main():
        async with running(tmp_path) as (notary, client):
            for path, name in ((f"/v1/proof?index=0&size={BEYOND_INT64}", "size"),
                               (f"/v1/proof?index={BEYOND_INT64}", "index"),
                               (f"/v1/range-proof?from=0&to=1&size={BEYOND_INT64}", "size"),
                               ("/v1/range-proof?from=0&to=1&size=9999999999999999999", "size"),
                               (f"/v1/consistency?from=0&to={BEYOND_INT64}", "to"),
                               (f"/v1/entries?from={BEYOND_INT64}&to={BEYOND_INT64}1", "from")):
                r = await client.get(path)
                assert r.status == 400, (path, r.status, await r.text())
                assert (await r.json())["error"].startswith(f"{name}: must be an integer from 0 to 2^63-1"), path
            # The largest size there is still an ordinary question, with an ordinary answer.
            r = await client.get(f"/v1/range-proof?from=0&to=1&size={(1 << 63) - 1}")
            assert r.status == 404 and f"at tree size {(1 << 63) - 1}" in (await r.json())["error"]

    asyncio.run(main())


def test_seal_path_takes_ascii_digits_and_sizes_no_seal_can_have_are_404(tmp_path):
    async def main():
        async with running(tmp_path) as (notary, client):
            r = await client.post("/v1/entries?wait=sealed", json={"digests": [digest_hex(1)]}, headers=auth())
            assert r.status == 200
            assert (await client.get("/v1/seals/1")).status == 200
            r = await client.get("/v1/seals/%D9%A1")  # ARABIC-INDIC DIGIT ONE: not another name for seal 1
            assert r.status == 404
            for size in (BEYOND_INT64, "9999999999999999999"):
                r = await client.get(f"/v1/seals/{size}")
                assert r.status == 404 and (await r.json())["error"] == f"no seal at tree size {size}"

    asyncio.run(main())


def test_bodies_that_are_not_utf8_json_are_400_naming_the_problem_and_append_nothing(tmp_path):
    good = f'{{"digests": ["{digest_hex(1)}"]}}'.encode()
    refused = [
        (b"[" * 200_000, "application/json", "nested too deeply"),  # 200 kB, under max_request_bytes
        (good, "application/json; charset=no-such-codec", "charset must be utf-8, got 'no-such-codec'"),
        (good, "application/json; charset=utf-16", "charset must be utf-8, got 'utf-16'"),
        (b'{"digests": ["\xff"]}', "application/json", "body is not UTF-8"),
        (b'{"digests": [' + b"1" * 5000 + b"]}", "application/json", "a number is too long"),
        (b'{"digests": [}', "application/json", "body is not JSON: Expecting value: line 1 column 14"),
    ]

    async def main():
        async with running(tmp_path) as (notary, client):
            for path, headers in (("/v1/lookup", {}), ("/v1/entries", auth())):
                for body, content_type, message in refused:
                    r = await client.post(path, data=body, headers={"Content-Type": content_type, **headers})
                    assert r.status == 400, (path, message, r.status, await r.text())
                    assert message in (await r.json())["error"], (path, message)
            assert notary.sequencer.size == 0
            r = await client.post("/v1/entries", data=good, headers={"Content-Type": "application/json; charset=UTF-8", **auth()})
            assert r.status == 200 and (await r.json())["entries"] == [{"index": 0}]

    asyncio.run(main())


def test_bearer_scheme_is_case_insensitive_and_a_token_that_is_not_utf8_is_401(tmp_path):
    async def main():
        async with running(tmp_path) as (notary, client):
            for scheme in ("bearer", "BEARER"):  # RFC 7235, section 2.1
                r = await client.post("/v1/entries", json={"digests": [digest_hex(1)]},
                                      headers={"Authorization": f"{scheme} {TOKEN}"})
                assert r.status == 200, scheme
            # aiohttp's client will not send these bytes: write the request ourselves.
            body = f'{{"digests": ["{digest_hex(2)}"]}}'.encode()
            reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
            writer.write(b"POST /v1/entries HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Authorization: Bearer \xff\xfe\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                         % (len(body), body))
            answer = await reader.read()
            writer.close()
            head, _, payload = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 401 ") and b"WWW-Authenticate: Bearer" in head, answer[:300]
            assert b"missing or unknown bearer token" in payload
            assert notary.sequencer.size == 2

    asyncio.run(main())


def test_proofs_at_a_size_sealed_but_not_anchored_yet_are_425_with_retry_after(tmp_path):
    async def main():
        async with running(tmp_path, max_age=0.1) as (notary, client):
            notary.fake_tsa.fail = True  # a TSA outage: the seal waits in the outbox
            r = await client.post("/v1/entries", json={"digests": [digest_hex(1)]}, headers=auth())
            assert (await r.json())["entries"] == [{"index": 0}]
            while notary.sealer.sealed_size < 1:
                await asyncio.sleep(0.05)
            paths = ("/v1/proof?index=0&size=1", "/v1/range-proof?from=0&to=1&size=1")
            for path in paths:
                r = await client.get(path)
                assert r.status == 425 and r.headers["Retry-After"] == "1", (path, r.status, await r.text())
                assert (await r.json())["error"] == "the seal at tree size 1 is not anchored yet; retry shortly"
            for path in ("/v1/proof?index=0&size=2", "/v1/range-proof?from=0&to=1&size=2"):
                r = await client.get(path)  # no seal has that size, nor will: final
                assert r.status == 404 and (await r.json())["error"] == "there is no seal at tree size 2", path
            # Without a size: the latest anchored seal's span, not there yet but coming (before: 404, final).
            r = await client.get("/v1/range-proof?from=0&to=1")
            assert r.status == 425 and r.headers["Retry-After"] == "1", await r.text()
            assert "entries up to 1 are in the log but not covered by an anchored seal yet" in (await r.json())["error"]
            r = await client.get("/v1/range-proof?from=0&to=2")  # beyond the log: final
            assert r.status == 404, await r.text()
            notary.fake_tsa.fail = False
            await notary.wait_anchored(0)
            for path in (*paths, "/v1/range-proof?from=0&to=1"):
                assert (await client.get(path)).status == 200, path

    asyncio.run(main())


def test_a_submission_that_could_never_wait_is_413_not_503(tmp_path):
    # A configuration parse_config refuses (tests/test_config.py); a Notary built without it still answers sense.
    async def main():
        async with running(tmp_path, max_request_digests=10, max_pending_entries=5) as (notary, client):
            r = await client.post("/v1/entries", json={"digests": [digest_hex(i) for i in range(6)]}, headers=auth())
            assert r.status == 413 and "Retry-After" not in r.headers
            assert (await r.json())["error"] == ("6 entries in one submission, more than may wait to be written at once "
                                                 "(limits.max_pending_entries, 5); send fewer at a time")
            r = await client.post("/v1/entries", json={"digests": [digest_hex(i) for i in range(5)]}, headers=auth())
            assert r.status == 200 and notary.sequencer.size == 5

    asyncio.run(main())
