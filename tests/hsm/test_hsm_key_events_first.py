"""A key's events are in the log before it signs: every checkpoint a key signs covers the key's activation.

The daemon (``notary.daemon``) appends the keyring's new key events to the
log at start-up and at a SIGHUP reload; these tests check, with the keys of
a real SoftHSM2 token, that no checkpoint signed by a newly activated key is
of a tree that does not yet hold that key's ``activate`` event. The TSA and
S3 are the in-process fakes (tests/inprocess.py): they do not sign.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import signal
import sqlite3
from pathlib import Path

from hsm.algorithms import ECDSA_P256
from hsm.keyring import Keyring
from hsm.signer import active_signers
from hsm.token import Token, TokenKey
from notary import daemon
from notary.checkpoint import checkpoint_signers, parse_signed_checkpoint
from notary.config import KEY_EVENT_SOURCE
from notary.entry import Entry, encode_run
from notary.note import VerifierKey
from notary.sequencer import LogWriter
from notary.store import LogStore
from tests.inprocess import ORIGIN, FakeS3, FakeTSA, make_config


def with_key(ring: Keyring, key: TokenKey) -> Keyring:
    return ring.generate(key.key_id, key.label, key.algorithm.name, key.public_key).activate(key.key_id.hex())


def vkey(key: TokenKey) -> VerifierKey:
    return VerifierKey(ORIGIN, key.algorithm.sig_type, key.public_key)


def seals(config) -> list[tuple[int, bytes]]:
    """(tree size, signed checkpoint) of every seal, as stored (and published), oldest first."""
    db = sqlite3.connect(config.seals_path)
    try:
        return db.execute("SELECT tree_size, checkpoint FROM seals ORDER BY tree_size").fetchall()
    finally:
        db.close()


def signs(key: TokenKey, checkpoint: bytes) -> bool:
    return vkey(key) in checkpoint_signers(parse_signed_checkpoint(checkpoint), [vkey(key)])


def activated_at(config, ring: Keyring, key: TokenKey) -> int:
    """The log index of ``key``'s activate event (the daemon's own source)."""
    event = next(e for e in ring.events if e.event == "activate" and e.key_id == key.key_id)
    store = LogStore(config.store_path, readonly=True)
    try:
        hits = store.find_by_digests([event.digest()])[0]
        own = [i for i in hits if store.entry(i) == Entry(event.digest(), KEY_EVENT_SOURCE).encode()]
    finally:
        store.close()
    assert len(own) == 1, f"the activate event of {key.label} is in the log {len(own)} times"
    return own[0]


def serve_once(monkeypatch, config, keyring: Path, token: Token) -> None:
    """``notary.daemon.serve`` with this token's keys and the fakes, stopped (SIGTERM) as soon as it is ready."""

    async def adapters(_config):
        return daemon.Adapters(keyring=lambda: Keyring.load(keyring), signers=lambda ring: active_signers(token, ring),
                               timestamper=FakeTSA(), publisher=FakeS3(), close=lambda: None)

    monkeypatch.setattr(daemon, "load_config", lambda path: config)
    monkeypatch.setattr(daemon, "build_adapters", adapters)
    try:
        # The drain that SIGTERM starts seals and anchors everything in the log.
        assert asyncio.run(daemon.serve(Path("notary.toml"), on_ready=lambda notary: os.kill(os.getpid(), signal.SIGTERM))) == 0
    finally:
        gc.unfreeze()  # serve froze what start-up made; in a test process that is everything so far


def test_the_first_seal_after_a_start_covers_the_key_events_of_the_keys_that_sign_it(token, tmp_path, monkeypatch):
    """The daemon was killed with entries acknowledged but not sealed; meanwhile a second key was activated.
    Before, start-up started the sealer and then appended the key events: a lookup of them slower than
    batch.max_age (the digest index being rebuilt, a busy disk) let the sealer seal the left-over entries
    first, and the new key signed a tree that does not hold its activation."""
    first, second = token.generate(ECDSA_P256, "start-first"), token.generate(ECDSA_P256, "start-second")
    config = dataclasses.replace(make_config(tmp_path, max_age=0.05), unix_socket=None)
    keyring = tmp_path / "keyring.json"
    ring = with_key(Keyring(ORIGIN), first)
    keyring.write_bytes(ring.encode())
    serve_once(monkeypatch, config, keyring, token)
    before = seals(config)[-1][0]  # the first key's two events, sealed

    async def killed_before_sealing() -> None:
        writer = LogWriter(config.store_path)
        try:
            await writer.append([encode_run([bytes([n]) * 32 for n in range(3)], "producer")])
        finally:
            writer.close()

    asyncio.run(killed_before_sealing())
    ring = with_key(ring, second)
    keyring.write_bytes(ring.encode())

    # The lookup of the key events waits for a sealer that is already running to seal: the slow lookup,
    # made certain. (A sealer that starts after the key events are appended is not waited for.)
    find_all = daemon.Notary.find_all

    async def slow_lookup(self, digests, source=None):
        if source == KEY_EVENT_SOURCE and any(t.get_name() == "sealer" and not t.done() for t in asyncio.all_tasks()):
            async with self.sealer.sealed:
                await self.sealer.sealed.wait_for(lambda: self.sealer.sealed_size >= self.sequencer.size)
        return await find_all(self, digests, source)

    monkeypatch.setattr(daemon.Notary, "find_all", slow_lookup)
    serve_once(monkeypatch, config, keyring, token)

    size, checkpoint = next((size, cp) for size, cp in seals(config) if size > before)
    assert signs(second, checkpoint)
    activation = activated_at(config, ring, second)
    assert activation < size, (f"the first seal after the start, of tree size {size}, is signed by the key "
                               f"activated at index {activation}, outside that tree")
