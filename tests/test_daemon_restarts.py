"""What a restart of the daemon must find, in process (tests/inprocess.py).

A signer whose session is gone for good ends the sealer, and with it the
daemon (systemd starts it again), instead of failing every turn while entries
pile up unsealed; an ordinary signing failure is retried. Key events logged
just before a crash are not logged again by the next start.
"""

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


def test_key_events_logged_before_a_crash_are_not_logged_again(tmp_path, monkeypatch):
    """The append and the record of the last event logged (seals.db) are two writes: a crash between them
    handed the next start the same events again, and the log held them twice."""
    import hashlib
    from types import SimpleNamespace

    from notary.config import KEY_EVENT_SOURCE
    from notary.entry import Entry, encode_run
    from tests.inprocess import running

    events = [SimpleNamespace(digest=lambda n=n: hashlib.sha256(b"key event %d" % n).digest()) for n in range(3)]

    async def main():
        async with running(tmp_path) as (notary, _):
            # A producer's entry holding the same digest is not the event: only the daemon's own source counts.
            await notary.submit(encode_run([events[2].digest()], "producer"))

            async def crash(key, value):
                raise OSError("the host lost power here (injected)")

            real = notary.seals.set_state
            monkeypatch.setattr(notary.seals, "set_state", crash)
            try:
                await notary.log_key_events(events[:2])
            except OSError:
                pass
            monkeypatch.setattr(notary.seals, "set_state", real)
            assert await notary.last_logged_key_event() is None  # the record never happened

            assert await notary.log_key_events(events) == 1  # handed all three again: only the third is new
            assert await notary.last_logged_key_event() == events[2].digest()
            found = await notary.find_all([e.digest() for e in events])
            own = [[i for i in hits if await notary.writer.run(lambda s, i=i: s.entry(i))
                    == Entry(e.digest(), KEY_EVENT_SOURCE).encode()] for e, hits in zip(events, found)]
            assert [len(i) for i in own] == [1, 1, 1], own

    asyncio.run(main())


def test_key_events_that_cannot_be_appended_stop_the_start_before_anything_is_signed(tmp_path, monkeypatch):
    """Start-up appends the key events before it seals: when the store refuses them, the start fails with a
    sentence saying so, no checkpoint is signed, and the entries already acknowledged stay in the store."""
    import hashlib
    from types import SimpleNamespace

    import pytest

    from notary.daemon import KeyEventsNotLogged
    from notary.entry import encode_run
    from notary.errors import StoreError
    from notary.sequencer import LogWriter

    config = make_config(tmp_path, max_age=0.01)
    events = [SimpleNamespace(digest=lambda: hashlib.sha256(b"activate").digest())]

    async def main():
        config.data_dir.mkdir(parents=True)
        writer = LogWriter(config.store_path)  # acknowledged before a kill, never sealed
        await writer.append([encode_run([hashlib.sha256(b"acknowledged").digest()], "producer")])
        writer.close()
        signer = Breakable()
        notary = Notary(config, signers=[signer], timestamper=FakeTSA(), publisher=FakeS3())

        async def disk_full(runs):
            raise StoreError("database or disk is full (injected)")

        monkeypatch.setattr(notary.writer, "append", disk_full)
        try:
            with pytest.raises(KeyEventsNotLogged, match=r"the keyring's key events not logged yet \(1\) could not "
                               r"be appended to the log, so the notary does not start .*database or disk is full"):
                await notary.start(events)
            assert signer.attempts == 0 and await notary.seals.latest() is None
            assert notary.writer.store.size == 1 and notary.tasks == []
        finally:
            notary.close()

    asyncio.run(main())


def test_a_batch_filled_before_the_sealer_runs_is_sealed_at_once(tmp_path):
    """The key events appended at start-up commit before the sealer's first turn, and so do the commits
    made while a seal is being signed. Before, such a full batch woke nobody (each turn began by clearing
    the wake-up) and waited batch.max_age to be sealed, here an hour."""
    import dataclasses
    import hashlib
    from types import SimpleNamespace

    config = dataclasses.replace(make_config(tmp_path, max_age=3600), max_entries=2)
    events = [SimpleNamespace(digest=lambda n=n: hashlib.sha256(b"key event %d" % n).digest()) for n in range(2)]

    async def main():
        notary = Notary(config, signers=[SoftwareSigner.ed25519(b"\x02" * 32)], timestamper=FakeTSA(), publisher=FakeS3())
        await notary.start(events)
        try:
            async with notary.sealer.sealed:  # the bound only keeps a failure from hanging the run
                await asyncio.wait_for(notary.sealer.sealed.wait_for(lambda: notary.sealer.sealed_size == 2), 60)
        finally:
            await notary.stop(timeout=2)

    asyncio.run(main())
