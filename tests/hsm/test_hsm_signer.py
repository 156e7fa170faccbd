"""The PKCS#11 signer against a real SoftHSM2 token: its signatures verify
with independent implementations, its private keys stay in the token, and
concurrent callers get correct signatures."""

from __future__ import annotations

import asyncio
import threading

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pkcs11 import Attribute, KeyType, ObjectClass
from tlog_scales.signing import Vkey
from tlog_scales.tlog import Checkpoint as ScalesCheckpoint

from hsm.algorithms import SIG_ECDSA, SIG_ED25519, key_id_for
from hsm.errors import TokenError
from hsm.signer import HSMSigner
from hsm.token import Token, TokenKey
from notary.checkpoint import Checkpoint, sign_checkpoint, verify_signed_checkpoint
from notary.note import VerifierKey, parse_note, sign_note, verify_note
from tests.hsm.conftest import ORIGIN


def verify_with_cryptography(key: TokenKey, message: bytes, signature: bytes) -> None:
    """Raises InvalidSignature unless ``signature`` is the note signature of ``message``."""
    if key.algorithm.sig_type == SIG_ED25519:
        Ed25519PublicKey.from_public_bytes(key.public_key).verify(signature, message)
    else:
        public = serialization.load_der_public_key(key.public_key)
        public.verify(signature, message, ec.ECDSA(hashes.SHA256()))  # DER over SHA-256(message)


def test_signer_is_a_note_signer_of_the_right_type(token: Token, key: TokenKey) -> None:
    signer = HSMSigner(token, key)
    expected = SIG_ED25519 if key.algorithm.key_type == KeyType.EC_EDWARDS else SIG_ECDSA
    assert signer.sig_type == expected
    assert signer.public_key == key.public_key
    assert key.key_id == key_id_for(key.public_key)


def test_signatures_verify_with_cryptography(token: Token, key: TokenKey) -> None:
    signer = HSMSigner(token, key)
    for message in (b"", b"one line\n", bytes(range(256)) * 40):
        verify_with_cryptography(key, message, asyncio.run(signer.sign(message)))
        verify_with_cryptography(key, message, signer.sign_blocking(message))


def test_signed_checkpoint_verifies_with_the_note_verifier(token: Token, key: TokenKey) -> None:
    signer = HSMSigner(token, key)
    checkpoint = Checkpoint(ORIGIN, 42, bytes(range(32)))
    signed = asyncio.run(sign_checkpoint(checkpoint, [signer]))
    vkey = VerifierKey(ORIGIN, signer.sig_type, signer.public_key)
    _, verified = verify_signed_checkpoint(signed.encode(), [vkey], origin=ORIGIN)
    assert verified == [vkey]
    assert verify_note(parse_note(signed.encode()), [vkey]) == [vkey]


def test_ed25519_checkpoint_verifies_with_tlog_scales(token: Token, ed25519_key: TokenKey) -> None:
    signer = HSMSigner(token, ed25519_key)
    signed = asyncio.run(sign_checkpoint(Checkpoint(ORIGIN, 7, bytes(32)), [signer]))
    vkey = Vkey.from_string(str(VerifierKey(ORIGIN, signer.sig_type, signer.public_key)))
    scales = ScalesCheckpoint.from_text(signed.encode().decode())
    scales.verify(vkey)  # raises unless a signature by vkey verifies
    [signature] = scales.signatures
    vkey.get_verifier().verify(signature.payload, scales)


def test_note_with_tampered_text_does_not_verify(token: Token, key: TokenKey) -> None:
    signer = HSMSigner(token, key)
    note = asyncio.run(sign_note(f"{ORIGIN}\n1\n{'A' * 43}=\n", ORIGIN, [signer]))
    tampered = parse_note(note.encode().replace(b"\n1\n", b"\n2\n", 1))
    with pytest.raises(Exception, match="does not verify"):
        verify_note(tampered, [VerifierKey(ORIGIN, signer.sig_type, signer.public_key)])


def test_private_key_is_sensitive_and_never_extractable(token: Token, key: TokenKey) -> None:
    private = token.private_key(key.key_id)
    flags = token.call(
        lambda session: private.get_attributes(
            [Attribute.SENSITIVE, Attribute.ALWAYS_SENSITIVE, Attribute.EXTRACTABLE,
             Attribute.NEVER_EXTRACTABLE, Attribute.LOCAL, Attribute.DERIVE, Attribute.DECRYPT]
        )
    )
    assert flags == {
        Attribute.SENSITIVE: True, Attribute.ALWAYS_SENSITIVE: True, Attribute.EXTRACTABLE: False,
        Attribute.NEVER_EXTRACTABLE: True, Attribute.LOCAL: True, Attribute.DERIVE: False, Attribute.DECRYPT: False,
    }


def test_reading_the_private_key_value_fails(token: Token, key: TokenKey) -> None:
    private = token.private_key(key.key_id)
    with pytest.raises(TokenError, match="refuses to reveal a sensitive attribute"):
        token.call(lambda session: private[Attribute.VALUE])


def test_wrapping_the_private_key_out_fails(token: Token, key: TokenKey) -> None:
    private = token.private_key(key.key_id)

    def wrap_out(session: pkcs11.Session) -> bytes:
        wrapping_key = session.generate_key(KeyType.AES, 256, label="test-wrap")  # session object, gone on close
        return wrapping_key.wrap_key(private, mechanism=pkcs11.Mechanism.AES_KEY_WRAP_PAD)

    with pytest.raises(TokenError, match="refuses to export the key"):
        token.call(wrap_out)


def test_private_key_is_the_only_key_with_its_id(token: Token, key: TokenKey) -> None:
    ids = token.call(
        lambda session: [obj[Attribute.ID] for obj in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})]
    )
    assert ids.count(key.key_id) == 1


def test_concurrent_tasks_and_threads_all_get_valid_signatures(token: Token, key: TokenKey) -> None:
    """8 asyncio tasks and 8 threads, 1000 signatures each, all at once: every
    signature is valid for the very message its caller asked to sign."""
    signer = HSMSigner(token, key)
    per_worker = 1000
    results: dict[str, list[tuple[bytes, bytes]]] = {}

    def thread_worker(n: int) -> None:
        out = results[f"thread {n}"] = []
        for i in range(per_worker):
            message = f"thread {n} signature {i}\n".encode()
            out.append((message, signer.sign_blocking(message)))

    async def task_worker(n: int) -> None:
        out = results[f"task {n}"] = []
        for i in range(per_worker):
            message = f"task {n} signature {i}\n".encode()
            out.append((message, await signer.sign(message)))

    async def tasks() -> None:
        await asyncio.gather(*(task_worker(n) for n in range(8)))

    threads = [threading.Thread(target=thread_worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    asyncio.run(tasks())
    for thread in threads:
        thread.join()

    assert sorted(results) == sorted([f"thread {n}" for n in range(8)] + [f"task {n}" for n in range(8)])
    for worker, pairs in results.items():
        assert len(pairs) == per_worker, worker
        for message, signature in pairs:
            verify_with_cryptography(key, message, signature)


_LOSE_SESSION = """
import asyncio, json, os, sys
from pathlib import Path
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hsm.algorithms import ED25519
from hsm.devtoken import init_dev_token
from hsm.pin import PinSource
from hsm.signer import HSMSigner
from hsm.token import SOFTHSM2_MODULE, Token, TokenConfig

base = Path(sys.argv[1])
init_dev_token(Path(os.environ["SOFTHSM2_CONF"]), "lost-session", base / "user.pin")
token = Token.open(TokenConfig(SOFTHSM2_MODULE, "lost-session", PinSource("file", str(base / "user.pin"))), rw=True)
signer = HSMSigner(token, token.generate(ED25519, "lost"))
Ed25519PublicKey.from_public_bytes(signer.public_key).verify(signer.sign_blocking(b"m"), b"m")
token.call(lambda session: session.close())  # what a dropped HSM connection leaves behind
try:
    asyncio.run(signer.sign(b"m"))
except Exception as exc:
    print(json.dumps({"mro": [c.__name__ for c in type(exc).__mro__], "restart_needed":
                      getattr(exc, "restart_needed", False), "message": str(exc)}))
"""


def test_a_lost_session_is_a_SessionLostError_that_asks_for_a_restart(softhsm, tmp_path) -> None:
    """Real SoftHSM2, in a child process with a token of its own (SoftHSM2 lists its tokens once per
    process): the session closed underneath the signer. The daemon's sealer ends on this error, and systemd
    starts the notary again with a new session (tests/test_daemon_restarts.py)."""
    import json
    import os
    import subprocess
    import sys

    from tests.hsm.conftest import REPO

    (tmp_path / "tokens").mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp_path / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    child = subprocess.run([sys.executable, "-c", _LOSE_SESSION, str(tmp_path)], cwd=REPO, capture_output=True,
                           text=True, timeout=120, env=dict(os.environ, SOFTHSM2_CONF=str(conf)))
    assert child.returncode == 0, child.stderr
    outcome = json.loads(child.stdout)
    assert outcome["mro"][:3] == ["SessionLostError", "TokenError", "HSMError"], outcome
    assert outcome["restart_needed"] is True
    assert "lost-session" in outcome["message"] and ("was lost" in outcome["message"] or "is closed" in outcome["message"])
