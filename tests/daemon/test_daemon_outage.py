"""TSA and S3 outages: ingest goes on within its bounds, then answers 503 Retry-After; the backlog
anchors when they return; nothing is lost."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request

import pytest

from notary.tlogproof import verify_tlog_proof


def post(daemon, digests: list[bytes]) -> tuple[int, dict, dict]:
    body = json.dumps({"digests": [d.hex() for d in digests]}).encode()
    req = urllib.request.Request(daemon.url + "/v1/entries", data=body, method="POST", headers={
        "Authorization": f"Bearer {daemon.stack.token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def health(daemon) -> int:
    try:
        with urllib.request.urlopen(daemon.url + "/healthz", timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize("outage", ["tsa", "s3"])
def test_outage_backpressure_and_recovery(daemon_factory, stack, outage):
    d = daemon_factory(f"out-{outage}", max_age=0.1, limits={"max_unanchored_seals": 4, "anchor_overdue": 1.5}).start()
    acked: dict[bytes, int] = {}
    n = 0

    def submit() -> tuple[int, dict, dict]:
        nonlocal n
        batch = [hashlib.sha256(f"{outage}-{n + i}".encode()).digest() for i in range(50)]
        n += 50
        status, headers, body = post(d, batch)
        if status == 200:
            acked.update({dg: e["index"] for dg, e in zip(batch, body["entries"])})
        return status, headers, body

    assert submit()[0] == 200
    d.wait_anchored(max(acked.values()) + 1)

    (stack.stop_tsa if outage == "tsa" else stack.s3.stop)()
    try:
        accepted_during_outage = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, headers, body = submit()
            if status == 503:
                break
            assert status == 200
            accepted_during_outage += 1
            time.sleep(0.15)  # let each batch become its own seal
        assert status == 503, "ingest never pushed back"
        assert int(headers["Retry-After"]) >= 1 and "retry later" in body["error"]
        assert accepted_during_outage >= 2, "ingest stopped at once instead of continuing within its bounds"
        time.sleep(1.6)
        assert health(d) == 503  # seals have waited longer than anchor_overdue
    finally:
        if outage == "tsa":
            stack.start_tsa()
        else:
            stack.s3.start()

    # Back: the backlog anchors (the outbox retries with backoff up to 30 s) and ingest recovers.
    d.wait_anchored(max(acked.values()) + 1, timeout=90)
    assert submit()[0] == 200
    d.wait_anchored(max(acked.values()) + 1, timeout=30)
    assert health(d) == 200
    vkeys = d.vkeys()
    client = d.client()
    for digest in list(acked)[:: max(1, len(acked) // 20)]:
        record = verify_tlog_proof(client.proof(digest=digest), vkeys)
        assert record.index == acked[digest]
    assert d.stop() == 0
