"""SIGHUP reloads (``notary.daemon._reload``): all or nothing, one at a time.

A stand-in for the daemon holds what a reload touches (configuration,
signers, the last key event logged); the keyring is a real file read by
``hsm.keyring``, so its history check is the real one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hsm.algorithms import key_id_for
from hsm.keyring import Keyring
from notary import daemon
from notary.config import load_config
from notary.errors import NotaryError

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "notary.example.toml"


def public_key() -> bytes:
    return Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.Raw,
                                                                  serialization.PublicFormat.Raw)


class Daemon:
    """What ``_reload`` touches; ``log_key_events`` records events as the real one does (after a pause)."""

    def __init__(self, config, signers, last_logged: bytes | None, fail_logging: bool = False):
        self.config = config
        self.signers = list(signers)
        self.last = last_logged
        self.logged: list = []
        self.fail_logging = fail_logging

    def replace_signers(self, signers):
        self.signers = list(signers)

    async def log_key_events(self, events):
        await asyncio.sleep(0.01)  # the append is durable only after a commit
        if self.fail_logging:
            raise NotaryError("ingest is closed")
        self.logged += events
        if events:
            self.last = events[-1].digest()
        return len(events)

    async def last_logged_key_event(self):
        return self.last


def adapters_for(path: Path) -> daemon.Adapters:
    return daemon.Adapters(keyring=lambda: Keyring.load(path),
                           signers=lambda keyring: [k.label for k in keyring.active_keys()],
                           timestamper=None, publisher=None, close=lambda: None)


def rotation(origin: str) -> tuple[Keyring, Keyring]:
    """A keyring with key-a active, and the same after activating key-b and retiring key-a."""
    a, b = public_key(), public_key()
    before = Keyring(origin).generate(key_id_for(a), "key-a", "ed25519", a).activate("key-a")
    return before, before.generate(key_id_for(b), "key-b", "ed25519", b).activate("key-b").retire("key-a")


def reload(notary: Daemon, path: Path, lock: asyncio.Lock | None = None) -> None:
    asyncio.run(daemon._reload(notary, EXAMPLE, adapters_for(path), lock or asyncio.Lock()))


def test_a_keyring_rolled_back_behind_the_log_changes_nothing(tmp_path, caplog):
    config = load_config(EXAMPLE)
    before, after = rotation(config.origin)
    path = tmp_path / "keyring.json"
    path.write_bytes(before.encode())  # the log already holds the whole rotation: this is a rollback
    changed = dataclasses.replace(config, http_tokens={})
    notary = Daemon(changed, ["key-b"], after.events[-1].digest())
    caplog.set_level(logging.ERROR)
    reload(notary, path)
    assert "reload failed, keeping the running configuration" in caplog.text
    # Neither the retired key nor the file's sources took over (before: signers ["key-a"], tokens of the file).
    assert notary.signers == ["key-b"] and notary.config.http_tokens == {} and notary.logged == []


def test_a_reload_whose_key_events_cannot_be_logged_changes_nothing(tmp_path, caplog):
    config = load_config(EXAMPLE)
    before, after = rotation(config.origin)
    path = tmp_path / "keyring.json"
    path.write_bytes(after.encode())
    notary = Daemon(dataclasses.replace(config, http_tokens={}), ["key-a"], before.events[-1].digest(),
                    fail_logging=True)
    caplog.set_level(logging.ERROR)
    reload(notary, path)
    assert "reload failed, keeping the running configuration: ingest is closed" in caplog.text
    assert notary.signers == ["key-a"] and notary.config.http_tokens == {}


def test_a_good_reload_logs_the_events_then_applies_everything(tmp_path):
    config = load_config(EXAMPLE)
    before, after = rotation(config.origin)
    path = tmp_path / "keyring.json"
    path.write_bytes(after.encode())
    notary = Daemon(dataclasses.replace(config, http_tokens={}), ["key-a"], before.events[-1].digest())
    reload(notary, path)
    assert notary.signers == ["key-b"] and notary.config.http_tokens == config.http_tokens
    assert [e.digest() for e in notary.logged] == [e.digest() for e in after.events[len(before.events):]]


def test_two_signals_close_together_log_each_key_event_once(tmp_path):
    config = load_config(EXAMPLE)
    before, after = rotation(config.origin)
    path = tmp_path / "keyring.json"
    path.write_bytes(after.encode())
    notary = Daemon(config, ["key-a"], before.events[-1].digest())
    new = len(after.events) - len(before.events)

    async def two() -> None:
        lock = asyncio.Lock()
        await asyncio.gather(daemon._reload(notary, EXAMPLE, adapters_for(path), lock),
                             daemon._reload(notary, EXAMPLE, adapters_for(path), lock))

    asyncio.run(two())
    assert len(notary.logged) == new  # before: each reload logged them (2 * new)


def test_the_keys_that_sign_are_those_of_the_key_events_logged(tmp_path):
    """`notary keys retire key-a` commits while a reload runs. Before, the reload took its signers from one
    reading of the keyring and its key events from a second one: the log recorded key-a's retirement, and
    key-a went on signing every checkpoint until the next reload."""
    config = load_config(EXAMPLE)
    before, after = rotation(config.origin)
    overlap = Keyring(after.name, after.events[:-1])  # key-b activated beside key-a, key-a not retired yet
    path = tmp_path / "keyring.json"
    path.write_bytes(overlap.encode())

    class RetiredDuringReload(Daemon):
        async def last_logged_key_event(self):
            path.write_bytes(after.encode())
            return await super().last_logged_key_event()

    notary = RetiredDuringReload(config, ["key-a"], before.events[-1].digest())
    reload(notary, path)
    logged = Keyring(after.name, before.events + tuple(notary.logged))  # the history the log now attests
    assert notary.last == logged.events[-1].digest()
    assert notary.signers == [k.label for k in logged.active_keys()]


def test_a_reload_names_the_changed_sections_only_a_restart_applies_and_keeps_them(tmp_path, caplog):
    """[hsm], [limits] and the other tables outside [sources] are used only as the daemon starts. Before, a
    reload that found them changed said nothing: an operator who pointed hsm.keyring at a new file and sent
    SIGHUP read "reloaded" while the daemon went on reading the old keyring."""
    config = load_config(EXAMPLE)
    before, _ = rotation(config.origin)
    path = tmp_path / "keyring.json"
    path.write_bytes(before.encode())
    text = EXAMPLE.read_text()
    edited = (text.replace('token_label = "merkle-notary"', 'token_label = "another-token"')
              .replace('keyring = "/var/lib/merkle-notary/keyring.json"', 'keyring = "/srv/keyring.json"')
              .replace("max_unanchored_seals = 1000", "max_unanchored_seals = 50"))
    assert edited.count("another-token") == edited.count("/srv/keyring.json") == 1 and "= 50 " in edited
    changed = tmp_path / "notary.toml"
    changed.write_text(edited)
    notary = Daemon(dataclasses.replace(config, http_tokens={}), ["key-a"], before.events[-1].digest())
    caplog.set_level(logging.INFO)
    asyncio.run(daemon._reload(notary, changed, adapters_for(path), asyncio.Lock()))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"reload: hsm.token_label, hsm.keyring, limits.max_unanchored_seals changed in {changed}, but a reload "
        "does not apply [hsm], [limits]: the running values stay in force until the service is restarted "
        "(the keyring is still read from /var/lib/merkle-notary/keyring.json)"]
    assert "reloaded: 2 sources" in caplog.text  # the sources are applied all the same
    assert notary.config.http_tokens == config.http_tokens
    assert notary.config.hsm == config.hsm and notary.config.limits == config.limits  # the rest is not


def test_a_reload_that_changes_only_the_sources_warns_about_nothing(tmp_path, caplog):
    config = load_config(EXAMPLE)
    before, _ = rotation(config.origin)
    path = tmp_path / "keyring.json"
    path.write_bytes(before.encode())
    notary = Daemon(dataclasses.replace(config, http_tokens={}, unix_peers={}), ["key-a"], before.events[-1].digest())
    caplog.set_level(logging.INFO)
    reload(notary, path)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert notary.config.http_tokens == config.http_tokens and notary.config.unix_peers == config.unix_peers
