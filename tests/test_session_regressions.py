"""Regressions found reviewing the daemon's changes of 2026-12-04: each test fails on the code before its fix."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from notary.checkpoint import parse_signed_checkpoint
from notary.daemon import Notary
from notary.entry import encode_run
from notary.errors import VerificationError
from notary.note import verify_note
from tests.inprocess import ORIGIN, FakeS3, FakeTSA, digest_hex, make_config
from tests.support import SoftwareSigner


def test_get_checkpoint_serves_the_seal_signed_again_after_a_rotation(tmp_path):
    """Key A signs seal 1 while the TSA is down; the daemon restarts with only key B. The anchorer signs
    seal 1 again with B and publishes that; /checkpoint served A's checkpoint of the same size until the
    next seal (on a quiet log, for good)."""
    from aiohttp.test_utils import TestClient, TestServer

    from notary.api import build_app

    a, b = SoftwareSigner.ed25519(b"\x01" * 32), SoftwareSigner.ed25519(b"\x02" * 32)

    def signed_by(checkpoint: bytes, key) -> bool:
        try:
            return bool(verify_note(parse_signed_checkpoint(checkpoint).note, [key.verifier(ORIGIN)]))
        except VerificationError:
            return False

    async def main():
        config = make_config(tmp_path, max_age=0.1)
        down = FakeTSA()
        down.fail = True
        first = Notary(config, signers=[a], timestamper=down, publisher=FakeS3())
        await first.start()
        await first.submit(encode_run([bytes.fromhex(digest_hex(1))], "producer"))
        await first.stop(timeout=0.3)  # sealed, not timestamped: it waits in the outbox
        second = Notary(config, signers=[b], timestamper=FakeTSA(), publisher=FakeS3())
        await second.start()
        client = TestClient(TestServer(build_app(second)))
        await client.start_server()
        try:
            await asyncio.wait_for(second.wait_anchored(0), 10)
            served = await (await client.get("/checkpoint")).read()
            published = json.loads(await (await client.get("/v1/seals/1")).read())["seal"]["checkpoint"].encode()
        finally:
            await client.close()
            await second.stop(timeout=1)
        assert signed_by(published, b) and not signed_by(published, a)
        assert served == published

    asyncio.run(main())


@pytest.mark.parametrize("attempts", [1, 3])
def test_an_s3_client_makes_exactly_the_tries_it_is_given(attempts, monkeypatch):
    """botocore's retries "max_attempts" counts retries: attempts=1 sent 2 requests (the daemon's publisher
    retried on its own) and the audit's 5 tries were 6."""
    import botocore.retries.standard as standard

    from anchors.s3 import make_client

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0)
    hits = []

    class SlowDown(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowDown)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = make_client(f"http://127.0.0.1:{server.server_address[1]}", "us-east-1", access_key="a",
                             secret_key="b", timeout=5, attempts=attempts)
        with pytest.raises(Exception, match="SlowDown"):
            client.get_object(Bucket="b", Key="seals/00000000000000000001.json")
    finally:
        server.shutdown()
    assert len(hits) == attempts
