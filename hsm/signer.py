"""Checkpoint signers whose private keys never leave the token.

``HSMSigner`` satisfies ``notary.note.NoteSigner``: ``sig_type``,
``public_key`` and ``async sign(message)``, returning a raw 64-byte Ed25519
signature or a DER ECDSA signature over SHA-256(message). Hashing and DER
encoding run on the caller's thread; only the token operation goes to the
PKCS#11 thread, so asyncio tasks and plain threads can share one signer.

``active_signers`` is how the daemon gets its signers: one per active key of
the keyring, each checked against the key the token actually holds - its
public key object, and a probe signature made with its private key and
verified with the keyring's public key. A key that is pending or retired
gets no signer, so it cannot sign.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

import pkcs11

from hsm.errors import KeyringError
from hsm.keyring import Keyring, KeyRecord
from hsm.token import Token, TokenKey

# Signed by ``signer_for`` to prove the token key is the recorded key pair before anything relies on it.
PROBE_MESSAGE = b"merkle-notary key probe\n"


class HSMSigner:
    """Signs with one key pair of one token (a ``NoteSigner``)."""

    def __init__(self, token: Token, key: TokenKey) -> None:
        token.require(key.algorithm)
        self.token = token
        self.key = key
        self.algorithm = key.algorithm
        self.sig_type = key.algorithm.sig_type
        self.public_key = key.public_key
        self._private_key = token.private_key(key.key_id)

    async def sign(self, message: bytes) -> bytes:
        return self.algorithm.encode_signature(await self.token.call_async(self._operation(message)))

    def sign_blocking(self, message: bytes) -> bytes:
        """``sign`` for threads that are not running an event loop."""
        return self.algorithm.encode_signature(self.token.call(self._operation(message)))

    def _operation(self, message: bytes) -> Callable[[pkcs11.Session], bytes]:
        data = self.algorithm.to_sign(message)  # hashed here, off the PKCS#11 thread
        return lambda session: self._private_key.sign(data, mechanism=self.algorithm.mechanism)

    def __repr__(self) -> str:
        return f"HSMSigner({self.algorithm.name} key {self.key.key_id.hex()} in token {self.token.config.token_label!r})"


def signer_for(token: Token, record: KeyRecord) -> HSMSigner:
    """The signer for a keyring key, refusing a token key that is not the recorded one."""
    key = token.key(record.key_id)
    if key.algorithm is not record.algorithm or not hmac.compare_digest(key.public_key, record.public_key):
        raise KeyringError(
            f"key {record.key_id.hex()} in token {token.config.token_label!r} is not the key the keyring "
            "records (different public key); check that the keyring and the token belong together"
        )
    signer = HSMSigner(token, key)
    # The id could name the recorded public key and another pair's private key (an id set by hand, a key
    # imported under it); only a signature tells.
    if not record.algorithm.verify(record.public_key, PROBE_MESSAGE, signer.sign_blocking(PROBE_MESSAGE)):
        raise KeyringError(
            f"key {record.key_id.hex()} in token {token.config.token_label!r} is not the key the keyring "
            "records (its private key signs for another public key); remove the private key object that "
            "carries this id in error"
        )
    return signer


def active_signers(token: Token, keyring: Keyring) -> list[HSMSigner]:
    """One signer per active key, oldest first: what signs each new checkpoint."""
    active = keyring.active_keys()
    if not active:
        raise KeyringError(
            f"keyring {keyring.name!r} has no active key, so no checkpoint can be signed; "
            "run notary keys activate <key id>"
        )
    return [signer_for(token, record) for record in active]
