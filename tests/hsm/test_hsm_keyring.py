"""The keyring: lifecycle rules, the key-event records, and rotation against
a real token (old checkpoints keep verifying, both keys sign during the
overlap, a retired key never signs again)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pkcs11
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st
from pkcs11 import Attribute, ObjectClass
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hsm import keyring as keyring_file
from hsm.algorithms import ECDSA_P256, ED25519
from hsm.errors import DuplicateKeyError, KeyNotFoundError, KeyringError
from hsm.keyring import ACTIVE, GENESIS, PENDING, RETIRED, Keyring, KeyRecord
from hsm.signer import active_signers, signer_for
from hsm.token import Token, TokenKey
from notary.checkpoint import Checkpoint, sign_checkpoint, verify_signed_checkpoint
from notary.errors import VerificationError
from notary.note import VerifierKey
from tests.hsm.conftest import ORIGIN

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
# Two fixed public keys (any valid keys do for the pure keyring rules).
ED_PUB = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")  # RFC 8032 test 1
EC_PUB = ec.derive_private_key(7, ec.SECP256R1()).public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def generated(keyring: Keyring, public_key: bytes = ED_PUB, label: str = "k") -> Keyring:
    return keyring.generate(hashlib.sha256(public_key).digest()[:16], label, "ed25519", public_key, now=T0)


def other_ed_key(n: int) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def trusted_keys(keyring: Keyring) -> list[VerifierKey]:
    """What an auditor trusts: every key the keyring ever had, retired ones included."""
    return [VerifierKey(keyring.name, k.algorithm.sig_type, k.public_key) for k in keyring.keys()]


def sign(signers, size: int) -> bytes:
    return asyncio.run(sign_checkpoint(Checkpoint(ORIGIN, size, hashlib.sha256(b"%d" % size).digest()), signers)).encode()


# --- lifecycle rules (pure) ---------------------------------------------------


def test_key_moves_pending_active_retired() -> None:
    ring = generated(Keyring(ORIGIN))
    key_id = ring.keys()[0].key_id.hex()
    assert ring.key(key_id).status == PENDING
    ring = ring.activate(key_id, now=T0)
    assert ring.key(key_id).status == ACTIVE
    ring = generated(ring, other_ed_key(2), "k2").activate("k2", now=T0)
    ring = ring.retire(key_id, now=T0)
    assert ring.key(key_id).status == RETIRED
    assert [e.event for e in ring.events] == ["generate", "activate", "generate", "activate", "retire"]


def test_retired_key_cannot_be_activated_again() -> None:
    ring = generated(Keyring(ORIGIN)).retire("k", now=T0)
    with pytest.raises(KeyringError, match="not allowed for a key that is retired"):
        ring.activate("k")


def test_active_key_cannot_be_activated_twice() -> None:
    ring = generated(Keyring(ORIGIN)).activate("k")
    with pytest.raises(KeyringError, match="not allowed for a key that is active"):
        ring.activate("k")


def test_last_active_key_cannot_be_retired() -> None:
    ring = generated(Keyring(ORIGIN)).activate("k")
    with pytest.raises(KeyringError, match="only active key"):
        ring.retire("k")


def test_pending_key_can_be_withdrawn() -> None:
    assert generated(Keyring(ORIGIN)).retire("k").key("k").status == RETIRED


def test_key_is_found_by_id_or_unique_label() -> None:
    ring = generated(generated(Keyring(ORIGIN)), other_ed_key(2), "k")
    ids = [k.key_id.hex() for k in ring.keys()]
    assert ring.key(ids[1]).key_id.hex() == ids[1]
    with pytest.raises(DuplicateKeyError, match="2 keys carry the label 'k'"):
        ring.key("k")
    with pytest.raises(KeyNotFoundError, match="no key with id or label 'nope'"):
        ring.key("nope")


def test_generate_refuses_an_id_not_derived_from_the_public_key() -> None:
    with pytest.raises(KeyringError, match="not derived from its public key"):
        Keyring(ORIGIN).generate(b"\x00" * 16, "k", "ed25519", ED_PUB)


# --- key events ---------------------------------------------------------------


def test_event_record_is_canonical_json_with_sorted_keys_and_a_hash_chain() -> None:
    ring = generated(Keyring(ORIGIN)).activate("k", now=T0)
    first, second = ring.events
    record = first.record()
    assert record == json.dumps(json.loads(record), sort_keys=True, separators=(",", ":")).encode()
    assert json.loads(record) == {
        "algorithm": "ed25519",
        "event": "generate",
        "format": "notary-key-event/v1",
        "key_id": hashlib.sha256(ED_PUB).hexdigest()[:32],
        "label": "k",
        "name": ORIGIN,
        "prev": GENESIS,
        "public_key": "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
        "seq": 0,
        "time": "2026-01-02T03:04:05Z",
    }
    assert first.digest() == hashlib.sha256(record).digest()
    assert second.prev == first.digest().hex()


def test_documented_key_event_example_matches() -> None:
    """The records and digests printed in docs/KEYS.md are what the code produces."""
    doc = (Path(__file__).parents[2] / "docs" / "KEYS.md").read_text()
    block = doc.split("Example (the RFC 8032")[1].split("```")[1].strip().split("\n\n")
    ring = Keyring("example.com/log").generate(
        hashlib.sha256(ED_PUB).digest()[:16], "checkpoint-2026", "ed25519", ED_PUB, now=T0
    ).activate("checkpoint-2026", now=T0)
    for event, documented in zip(ring.events, block, strict=True):
        record, digest_line = documented.split("\n")
        assert event.record() == record.encode()
        assert hashlib.sha256(record.encode()).hexdigest() == digest_line.removeprefix("SHA-256: ") == event.digest().hex()


def test_unlogged_events_are_those_after_the_last_logged_digest() -> None:
    ring = generated(Keyring(ORIGIN)).activate("k", now=T0)
    assert ring.unlogged_events(None) == list(ring.events)
    assert ring.unlogged_events(ring.events[0].digest()) == [ring.events[1]]
    assert ring.unlogged_events(ring.events[1].digest()) == []


def test_rewritten_history_is_detected_by_the_last_logged_digest() -> None:
    ring = generated(Keyring(ORIGIN)).activate("k", now=T0)
    rewritten = generated(Keyring(ORIGIN), other_ed_key(3)).activate("k", now=T0)
    with pytest.raises(KeyringError, match="replaced or rewritten"):
        rewritten.unlogged_events(ring.events[1].digest())


def test_keyring_file_round_trips(tmp_path: Path) -> None:
    ring = generated(Keyring(ORIGIN)).activate("k", now=T0)
    keyring_file.update(tmp_path / "keyring.json", lambda old: ring)
    assert Keyring.load(tmp_path / "keyring.json") == ring


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda e: e[1].update(seq=5), "out of sequence"),
        (lambda e: e[1].update(prev=GENESIS), "does not chain"),
        (lambda e: e[1].update(event="retire"), "does not chain"),  # any edit breaks the next prev
        (lambda e: e.pop(0), "out of sequence"),
        (lambda e: e[0].update(label="other"), "does not chain"),
        (lambda e: e[1].update(name="evil.example/log"), "names the key name"),
        (lambda e: e[0].update(extra=1), "exactly the fields"),
    ],
)
def test_tampered_keyring_file_is_rejected(tmp_path: Path, tamper, message: str) -> None:
    ring = generated(Keyring(ORIGIN)).activate("k", now=T0)
    ring = generated(ring, other_ed_key(2), "k2").activate("k2", now=T0)
    value = json.loads(ring.encode())
    tamper(value["events"])
    with pytest.raises(KeyringError, match=message):
        Keyring.parse(json.dumps(value).encode())


def _rechained(ring: Keyring, times: list[str]) -> bytes:
    """``ring``'s file with the events' times replaced, each ``prev`` fixed so that only the times are wrong."""
    value = json.loads(ring.encode())
    prev = GENESIS
    for event, time in zip(value["events"], times):
        event.update(time=time, prev=prev)
        prev = hashlib.sha256(json.dumps(event, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return json.dumps(value).encode()


@pytest.mark.parametrize("times, message", [
    (["2026-02-30T10:00:00Z", "2026-03-01T10:00:00Z"], "which is no date and time"),
    (["2026-01-01T25:61:61Z", "2026-03-01T10:00:00Z"], "which is no date and time"),
    (["2026-03-01T10:00:00Z", "2026-02-01T10:00:00Z"], "before the key's previous event"),
])
def test_event_times_that_are_no_date_or_go_back_for_a_key_are_refused(times, message) -> None:
    """Before, such a keyring parsed, and every auditor command then died in a ValueError traceback (or,
    for a retirement dated before the activation, trusted the key at no time at all)."""
    ring = generated(Keyring(ORIGIN)).activate("k", now=T0)
    data = _rechained(ring, times)
    if message == "before the key's previous event":
        assert Keyring.parse(_rechained(ring, times[::-1])).key("k").status == ACTIVE  # the same, in order
    with pytest.raises(KeyringError, match=message):
        Keyring.parse(data)


def test_update_only_appends(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    keyring_file.update(path, lambda old: generated(Keyring(ORIGIN)).activate("k"))
    with pytest.raises(KeyringError, match="may only grow"):
        keyring_file.update(path, lambda old: generated(Keyring(ORIGIN), other_ed_key(4)))
    assert Keyring.load(path).key("k").status == ACTIVE



def test_update_through_a_symlink_writes_the_file_it_points_at(tmp_path: Path) -> None:
    real = tmp_path / "vault" / "keyring.json"
    real.parent.mkdir()
    link = tmp_path / "keyring.json"
    link.symlink_to(real)
    keyring_file.update(link, lambda old: generated(Keyring(ORIGIN)))
    keyring_file.update(link, lambda old: old.activate("k"))
    assert link.is_symlink() and link.resolve() == real  # before: replaced by a file, the target left stale
    assert Keyring.load(real).key("k").status == ACTIVE

# --- rotation against the token -------------------------------------------------


def with_key(ring: Keyring, key: TokenKey) -> Keyring:
    return ring.generate(key.key_id, key.label, key.algorithm.name, key.public_key)


def test_rotation_keeps_old_checkpoints_verifying_and_retired_key_never_signs(token: Token) -> None:
    old = token.generate(ECDSA_P256, "rotation-old")
    new = token.generate(ED25519, "rotation-new")
    ring = with_key(Keyring(ORIGIN), old).activate(old.key_id.hex())

    before = sign(active_signers(token, ring), 1)

    ring = with_key(ring, new)
    assert [s.key.key_id for s in active_signers(token, ring)] == [old.key_id]  # pending does not sign
    ring = ring.activate(new.key_id.hex())
    overlap = sign(active_signers(token, ring), 2)

    ring = ring.retire(old.key_id.hex())
    signers = active_signers(token, ring)
    assert [s.key.key_id for s in signers] == [new.key_id]
    after = sign(signers, 3)

    old_vkey, new_vkey = trusted_keys(ring)
    # Old checkpoints still verify with the keyring, after the rotation.
    assert verify_signed_checkpoint(before, trusted_keys(ring))[1] == [old_vkey]
    # During the overlap each checkpoint carries both signatures, each valid alone.
    assert verify_signed_checkpoint(overlap, trusted_keys(ring))[1] == [old_vkey, new_vkey]
    assert verify_signed_checkpoint(overlap, [old_vkey])[1] == [old_vkey]
    assert verify_signed_checkpoint(overlap, [new_vkey])[1] == [new_vkey]
    # After retirement the old key signs nothing: no signature line of it at all.
    signed_after, verified = verify_signed_checkpoint(after, trusted_keys(ring))
    assert verified == [new_vkey]
    assert [sig.key_id for sig in signed_after.note.signatures] == [new_vkey.key_id]
    with pytest.raises(VerificationError, match="no signature by a trusted key"):
        verify_signed_checkpoint(after, [old_vkey])


def test_keyring_without_active_key_gives_no_signer(token: Token, ecdsa_key: TokenKey) -> None:
    with pytest.raises(KeyringError, match="no active key"):
        active_signers(token, with_key(Keyring(ORIGIN), ecdsa_key))


def test_signer_refuses_a_token_key_that_differs_from_the_keyring(token: Token, ecdsa_key: TokenKey, ed25519_key: TokenKey) -> None:
    impostor = KeyRecord(ecdsa_key.key_id, "x", ED25519, ed25519_key.public_key, ACTIVE)
    with pytest.raises(KeyringError, match="not the key the keyring records"):
        signer_for(token, impostor)
    wrong_point = KeyRecord(ecdsa_key.key_id, "x", ECDSA_P256, token.generate(ECDSA_P256, "decoy").public_key, ACTIVE)
    with pytest.raises(KeyringError, match="not the key the keyring records"):
        signer_for(token, wrong_point)


def test_signer_refuses_a_private_key_of_another_pair_under_the_recorded_id(token: Token) -> None:
    """The token's public key object is the keyring's, but the private key carrying the id belongs to
    another pair (an id set by hand, a key imported under it). Before, the daemon started (or reloaded)
    with that signer and every seal then failed its verification: no checkpoint was signed any more."""
    recorded = token.generate(ECDSA_P256, "pair-recorded")
    other = token.generate(ECDSA_P256, "pair-other")

    def swap(session: pkcs11.Session) -> None:
        mine = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=recorded.key_id)
        theirs = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=other.key_id)
        mine[Attribute.ID] = bytes(16)
        theirs[Attribute.ID] = recorded.key_id

    token.call(swap)
    ring = with_key(Keyring(ORIGIN), recorded).activate(recorded.key_id.hex())
    assert token.key(recorded.key_id).public_key == recorded.public_key  # the public half still matches
    with pytest.raises(KeyringError, match="its private key signs for another public key"):
        active_signers(token, ring)


# --- strict parsing -------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_parsing_a_damaged_keyring_raises_only_keyring_error(data: st.DataObject) -> None:
    """Whatever bytes a damaged or hostile keyring file holds, parsing either
    returns a keyring or raises KeyringError, never anything else."""
    ring = generated(Keyring(ORIGIN)).activate("k", now=T0)
    ring = ring.generate(hashlib.sha256(EC_PUB).digest()[:16], "ec", "ecdsa-p256", EC_PUB, now=T0)
    encoded = bytearray(ring.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] = data.draw(st.integers(0, 255))
    try:
        Keyring.parse(bytes(encoded))
    except KeyringError:
        pass


def test_deeply_nested_keyring_is_a_keyring_error() -> None:
    with pytest.raises(KeyringError, match="not valid JSON"):
        Keyring.parse(b"[" * 100_000)
