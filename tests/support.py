"""Helpers shared by the tests: in-memory signers built on `cryptography`."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from notary.note import SIG_ECDSA, SIG_ED25519, VerifierKey


class SoftwareSigner:
    """A NoteSigner holding its key in memory: for tests and vectors only."""

    def __init__(self, key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        self.key = key
        public = key.public_key()
        if isinstance(key, ed25519.Ed25519PrivateKey):
            self.sig_type = SIG_ED25519
            self.public_key = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        else:
            self.sig_type = SIG_ECDSA
            self.public_key = public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )

    @classmethod
    def ed25519(cls, seed: bytes | None = None) -> SoftwareSigner:
        key = ed25519.Ed25519PrivateKey.from_private_bytes(seed) if seed else ed25519.Ed25519PrivateKey.generate()
        return cls(key)

    @classmethod
    def ecdsa(cls, scalar: int | None = None) -> SoftwareSigner:
        curve = ec.SECP256R1()
        key = ec.derive_private_key(scalar, curve) if scalar else ec.generate_private_key(curve)
        return cls(key)

    def verifier(self, name: str) -> VerifierKey:
        return VerifierKey(name=name, sig_type=self.sig_type, public_key=self.public_key)

    async def sign(self, message: bytes) -> bytes:
        if self.sig_type == SIG_ED25519:
            return self.key.sign(message)
        return self.key.sign(message, ec.ECDSA(hashes.SHA256()))


def examples(n: int) -> int:
    """Hypothesis example count: ``n`` in CI, ``n * FUZZ_SCALE`` for a deeper local run."""
    return n * int(os.environ.get("FUZZ_SCALE", "1"))


def relabelled_checkpoint(key: SoftwareSigner, origin: str, claimed: str) -> tuple[bytes, bytes]:
    """A checkpoint of log ``origin`` signed by ``key``, and the same with its signature relabelled as log ``claimed``'s.

    What a key serving two logs makes possible: the signature itself still
    verifies under ``key.verifier(claimed)``.
    """
    import asyncio

    from notary.checkpoint import Checkpoint, SignedCheckpoint, sign_checkpoint
    from notary.note import Note, Signature

    signed = asyncio.run(sign_checkpoint(Checkpoint(origin, 5, bytes(32)), [key]))
    key_id = key.verifier(claimed).key_id
    note = Note(signed.note.text, tuple(Signature(claimed, key_id, s.signature) for s in signed.note.signatures))
    return signed.encode(), SignedCheckpoint(signed.checkpoint, note).encode()
