"""``notary.verify.verify_record`` offline, without a daemon: a real log, Ed25519 checkpoints, dev TSA tokens."""

from __future__ import annotations

import asyncio

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from anchors.tsa import load_roots
from notary.checkpoint import Checkpoint, parse_signed_checkpoint, sign_checkpoint
from notary.tlogproof import TlogProof
from notary.trust import TrustedKeys
from notary.verify import EXIT_OK, EXIT_SIGNATURE, verify_record
from tests.packkit import ORIGIN, SealedLog, keyring
from tests.support import SoftwareSigner

SIZE, INDEX = 5, 2


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    sealed = SealedLog(tmp_path_factory.mktemp("log"), SIZE)
    checkpoint = sealed.checkpoint(SIZE)
    seal = sealed.seal(SIZE, 0, checkpoint, sealed.token(checkpoint))
    return sealed, checkpoint, seal


def _proof(sealed: SealedLog, checkpoint: bytes) -> TlogProof:
    return TlogProof(sealed.store.entry(INDEX), INDEX, tuple(sealed.store.inclusion_proof(INDEX, SIZE)),
                     parse_signed_checkpoint(checkpoint))


def test_the_genuine_sealed_record_verifies(log):
    sealed, checkpoint, seal = log
    verdict = verify_record(_proof(sealed, checkpoint), TrustedKeys.from_keyring(keyring()), seal=seal,
                            roots=load_roots(sealed.tsa.root_cert_path))
    assert verdict.exit_code == EXIT_OK, verdict.render_text()


def test_a_proof_whose_signature_was_not_verified_is_never_verified(log):
    """Keyring keys need a timestamp to be judged; without a seal nothing vouches for the root, whoever signed it."""
    sealed, checkpoint, _ = log
    trust = TrustedKeys.from_keyring(keyring())
    stranger = SoftwareSigner.ed25519(bytes([9] * 32))
    cp = parse_signed_checkpoint(checkpoint).checkpoint
    forged = asyncio.run(sign_checkpoint(Checkpoint(ORIGIN, SIZE, cp.root_hash), [stranger])).encode()
    # The stranger's signature is sound (checked by `cryptography` alone); only trust can reject it.
    note = parse_signed_checkpoint(forged).note
    Ed25519PublicKey.from_public_bytes(stranger.public_key).verify(note.signatures[0].signature, note.text.encode())

    for text in (forged, checkpoint):
        verdict = verify_record(_proof(sealed, text), trust)
        assert [c.status for c in verdict.checks if c.name == "inclusion"] == ["ok"]
        assert not verdict.ok and verdict.exit_code == EXIT_SIGNATURE
        assert verdict.to_json()["verified"] is False
        assert verdict.sentence().startswith("NOT VERIFIED: ") and "no verified timestamp" in verdict.sentence()
