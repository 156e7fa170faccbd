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

import pytest

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


def signed_by(checkpoint: bytes, *keys: TokenKey) -> list[str]:
    """The labels of ``keys`` whose signatures on ``checkpoint`` verify (VerificationError when none does)."""
    verified = checkpoint_signers(parse_signed_checkpoint(checkpoint), [vkey(k) for k in keys])
    return [k.label for k in keys if vkey(k) in verified]


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
    assert signed_by(checkpoint, first, second) == [first.label, second.label]
    activation = activated_at(config, ring, second)
    assert activation < size, (f"the first seal after the start, of tree size {size}, is signed by the key "
                               f"activated at index {activation}, outside that tree")


def reload_adapters(keyring: Path, token: Token) -> daemon.Adapters:
    return daemon.Adapters(keyring=lambda: Keyring.load(keyring), signers=lambda ring: active_signers(token, ring),
                           timestamper=None, publisher=None, close=lambda: None)


def test_a_seal_begun_before_a_reload_is_not_signed_by_the_key_the_reload_activates(token, tmp_path, monkeypatch):
    """A seal reads the tree size, then the tree head, then signs. Before, it took its signers only after
    reading the tree head: a reload that appended a new key's events and switched the signers meanwhile
    had the new key sign the tree size read before its activation was in the log."""
    first, second = token.generate(ECDSA_P256, "reload-first"), token.generate(ECDSA_P256, "reload-second")
    before = with_key(Keyring(ORIGIN), first)
    after = with_key(before, second)
    keyring = tmp_path / "keyring.json"
    keyring.write_bytes(after.encode())
    config = dataclasses.replace(make_config(tmp_path, max_age=3600), max_entries=1, unix_socket=None)
    monkeypatch.setattr(daemon, "load_config", lambda path: config)
    made = []  # the seals as the sealer signed them (the anchorer may sign one again before it is published)

    async def main() -> None:
        notary = daemon.Notary(config, signers=active_signers(token, before), timestamper=FakeTSA(), publisher=FakeS3())
        await notary.start(before.events)
        poke = notary.sealer.on_seal
        notary.sealer.on_seal = lambda seal: (made.append(seal), poke(seal))
        async with notary.sealer.sealed:  # max_entries = 1: each commit is sealed at once
            await notary.sealer.sealed.wait_for(lambda: notary.sealer.sealed_size == 2)

        # The sealer's read of the next tree head waits until the reload is over: a slow read, made certain.
        reading, reloaded = asyncio.Event(), asyncio.Event()
        run = notary.writer.run

        async def slow_tree_head(fn):
            if asyncio.current_task().get_name() == "sealer" and not reloaded.is_set():
                reading.set()
                await reloaded.wait()
            return await run(fn)

        monkeypatch.setattr(notary.writer, "run", slow_tree_head)
        await notary.submit(encode_run([bytes(32)], "producer"))  # index 2: the sealer begins sealing size 3
        await reading.wait()
        await daemon._reload(notary, Path("notary.toml"), reload_adapters(keyring, token), asyncio.Lock())
        reloaded.set()
        await notary.stop(timeout=5)

    asyncio.run(main())
    activation = activated_at(config, after, second)
    assert [s.tree_size for s in made] == [2, 3, activation + 1]
    for seal in made:  # the second key signs exactly the trees that hold its activation
        expected = [first.label, second.label] if seal.tree_size > activation else [first.label]
        assert signed_by(seal.checkpoint, first, second) == expected, (
            f"seal {seal.tree_size}; the second key was activated at index {activation}")


@pytest.mark.parametrize("change", ["second key activated", "second key activated, first retired"])
def test_a_seal_waiting_through_a_reload_is_signed_again_only_when_none_of_its_keys_is_active(
        token, tmp_path, monkeypatch, change):
    """A seal waits in the outbox (the TSA down) while a reload activates a second key. Before, the anchorer
    signed every waiting seal again whenever one active key had not signed it: the new key signed a tree
    without its activation, though the first key's signature, still trusted, was enough. Only a seal none
    of whose keys is active any more (a rotation finished while it waited) is signed again."""
    first = token.generate(ECDSA_P256, "outbox-first")
    second = token.generate(ECDSA_P256, "outbox-second")
    before = with_key(Keyring(ORIGIN), first)
    after = with_key(before, second)
    if "retired" in change:
        after = after.retire(first.key_id.hex())
    keyring = tmp_path / "keyring.json"
    keyring.write_bytes(after.encode())
    config = dataclasses.replace(make_config(tmp_path, max_age=3600), max_entries=1, unix_socket=None)
    monkeypatch.setattr(daemon, "load_config", lambda path: config)
    tsa = FakeTSA()

    async def until(condition, predicate) -> None:
        async with condition:
            await condition.wait_for(predicate)

    async def main() -> int:
        notary = daemon.Notary(config, signers=active_signers(token, before), timestamper=tsa, publisher=FakeS3())
        await notary.start(before.events)  # max_entries = 1: each commit is sealed at once
        anchored = lambda size: lambda: notary.anchorer.latest_anchored is not None and (  # noqa: E731
            notary.anchorer.latest_anchored.tree_size == size)
        await until(notary.anchorer.anchored, anchored(2))
        tsa.fail = True
        await notary.submit(encode_run([bytes(32)], "producer"))  # index 2, sealed at 3, waits for the TSA
        await until(notary.sealer.sealed, lambda: notary.sealer.sealed_size == 3)
        await daemon._reload(notary, Path("notary.toml"), reload_adapters(keyring, token), asyncio.Lock())
        reloaded = notary.sequencer.size  # the reload's key events are in the log
        await until(notary.sealer.sealed, lambda: notary.sealer.sealed_size == reloaded)
        last = await notary.submit(encode_run([bytes(31) + b"\x01"], "producer")) + 1  # sealed by the new keys
        await until(notary.sealer.sealed, lambda: notary.sealer.sealed_size == last)
        tsa.fail = False
        await until(notary.anchorer.anchored, anchored(last))
        await notary.stop(timeout=5)
        return last

    last = asyncio.run(main())
    assert activated_at(config, after, second) == 4
    published = dict(seals(config))
    if "retired" in change:  # the first key's signature no longer counts: the second signs the waiting seal
        assert signed_by(published[3], first, second) == [second.label]
        assert signed_by(published[last], first, second) == [second.label]
    else:  # the first key's signature still counts: the waiting seal keeps it alone
        assert signed_by(published[3], first, second) == [first.label]
        assert signed_by(published[last], first, second) == [first.label, second.label]
