"""A signer whose session is gone for good ends the sealer, and with it the daemon, instead of failing every
turn while entries pile up unsealed; an ordinary signing failure is retried. In process (tests/inprocess.py)."""

from __future__ import annotations

import asyncio

from notary.daemon import Notary
from tests.inprocess import FakeS3, FakeTSA, auth, digest_hex, make_config
from tests.support import SoftwareSigner


class Failing(Exception):
    pass


class SessionGone(Exception):
    restart_needed = True  # what hsm.errors.SessionLostError says (tests/hsm/test_hsm_signer.py)


class Breakable:
    """A software key whose signing can be made to fail with a given exception."""

    def __init__(self):
        self._key = SoftwareSigner.ed25519(b"\x05" * 32)
        self.sig_type, self.public_key = self._key.sig_type, self._key.public_key
        self.fails_with: Exception | None = None
        self.attempts = 0

    async def sign(self, message: bytes) -> bytes:
        self.attempts += 1
        if self.fails_with is not None:
            raise self.fails_with
        return await self._key.sign(message)


def test_a_lost_session_ends_the_sealer_and_an_ordinary_failure_is_retried(tmp_path):
    from aiohttp.test_utils import TestClient, TestServer

    from notary.api import build_app

    async def main():
        signer = Breakable()
        notary = Notary(make_config(tmp_path, max_age=0.05), signers=[signer], timestamper=FakeTSA(), publisher=FakeS3())
        await notary.start()
        client = TestClient(TestServer(build_app(notary)))
        await client.start_server()
        sealer_task = notary.tasks[1]
        try:
            signer.fails_with = Failing("the token is busy (injected)")
            r = await client.post("/v1/entries", json={"digests": [digest_hex(1)]}, headers=auth())
            assert r.status == 200
            for _ in range(200):
                if signer.attempts >= 2:
                    break
                await asyncio.sleep(0.02)
            assert signer.attempts >= 2 and not sealer_task.done()  # retried, still running
            assert notary.sealer.failures >= 1

            signer.fails_with = SessionGone("the session with token 't' was lost (injected)")
            notary.sealer._wakeup.set()
            done, _ = await asyncio.wait([sealer_task], timeout=30)
            assert sealer_task in done and isinstance(sealer_task.exception(), SessionGone)
            assert notary.sequencer.size == 1  # the acknowledged entry stays durable; the next start seals it
        finally:
            await client.close()
            notary.sequencer.close()
            await notary.tasks[0]
            for task in notary.tasks[2:]:
                task.cancel()
            notary.close()

    asyncio.run(main())
