"""The HTTP API's answers to odd input: a 4xx naming the problem, never a 500 (notary/api.py, in process)."""

from __future__ import annotations

import asyncio

from tests.inprocess import auth, digest_hex, running

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
