"""One logged-in session with a PKCS#11 token, driven from one thread.

python-pkcs11 with SoftHSM2 crashes when several threads use the library at
once (measured, DESIGN.md). So every PKCS#11 call of the process - loading
the module, login, key search, generation, signing - runs on a single worker
thread (``ThreadPoolExecutor(max_workers=1)``, shared by every ``Token``,
because PKCS#11 library state is per process too), and each ``Token`` keeps
one session, logged in once, for its whole life. Callers on any thread use
``Token.call``; asyncio code awaits ``Token.call_async``. A wrong PIN is
tried exactly once: login happens only in ``Token.open``, with no loop.

Keys are found by CKA_ID, never by label: labels are not unique.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pkcs11
import pkcs11.exceptions as p11
from pkcs11 import Attribute, MechanismFlag, ObjectClass, TokenFlag

from hsm.algorithms import ALGORITHMS, Algorithm, key_id_for
from hsm.errors import (
    DuplicateKeyError,
    HSMError,
    KeyNotFoundError,
    MechanismError,
    ModuleLoadError,
    TokenNotFoundError,
    from_pkcs11,
)
from hsm.pin import PinSource

T = TypeVar("T")

SOFTHSM2_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _pkcs11_thread() -> ThreadPoolExecutor:
    """The process's one PKCS#11 thread (see the module docstring for why one)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pkcs11")
        return _executor


@dataclass(frozen=True)
class TokenConfig:
    """Where the signing keys live: module path, token label, PIN source."""

    module: Path
    token_label: str
    pin: PinSource


@dataclass(frozen=True)
class TokenKey:
    """A key pair in the token, as the rest of the system names it."""

    key_id: bytes  # CKA_ID = key_id_for(public_key)
    label: str
    algorithm: Algorithm
    public_key: bytes  # note public key: SPKI DER (ECDSA) or raw 32 bytes (Ed25519)


class Token:
    """A logged-in session with one token; every call runs on the PKCS#11 thread."""

    def __init__(self, config: TokenConfig, session: pkcs11.Session, mechanisms: frozenset[int]) -> None:
        self.config = config
        self._session = session
        self._mechanisms = mechanisms

    @classmethod
    def open(cls, config: TokenConfig, *, rw: bool = False) -> Token:
        """Load the module, find the token by label and log in once.

        ``rw`` is needed only to generate keys; signing uses a read-only session.
        """
        pin = config.pin.read()  # before touching the token: a bad source costs no login attempt

        def open_session() -> Token:
            lib = _load_module(config.module)
            tokens = list(lib.get_tokens(token_label=config.token_label))
            if len(tokens) != 1:
                present = sorted({t.label for t in lib.get_tokens() if t.flags & TokenFlag.TOKEN_INITIALIZED})
                listing = ", ".join(repr(label) for label in present) or "none"
                if not tokens:
                    raise TokenNotFoundError(
                        f"no token labelled {config.token_label!r} in module {config.module} "
                        f"(tokens present: {listing}); check the token label"
                    )
                raise TokenNotFoundError(
                    f"{len(tokens)} tokens are labelled {config.token_label!r} in module {config.module}; "
                    "give each token a distinct label"
                )
            token = tokens[0]
            mechanisms = frozenset(token.slot.get_mechanisms())
            session = token.open(rw=rw, user_pin=pin)
            return cls(config, session, mechanisms)

        return _run(open_session, config.token_label)

    def close(self) -> None:
        self.call(lambda session: session.close())

    def __enter__(self) -> Token:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def call(self, fn: Callable[[pkcs11.Session], T]) -> T:
        """Run ``fn(session)`` on the PKCS#11 thread and wait; from any other thread."""
        return _run(lambda: fn(self._session), self.config.token_label)

    async def call_async(self, fn: Callable[[pkcs11.Session], T]) -> T:
        """``call`` for asyncio code: the event loop keeps running while the token works."""
        future = _pkcs11_thread().submit(_translated, lambda: fn(self._session), self.config.token_label)
        return await asyncio.wrap_future(future)

    def require(self, algorithm: Algorithm, *, generate: bool = False) -> None:
        """Raise ``MechanismError`` unless the token can sign (and ``generate`` keys) with ``algorithm``."""
        needed = (algorithm.keygen, algorithm.mechanism) if generate else (algorithm.mechanism,)
        missing = [m for m in needed if m not in self._mechanisms]
        if missing:
            names = " and ".join(f"CKM_{m.name}" for m in missing)
            others = ", ".join(a.name for a in ALGORITHMS.values() if a is not algorithm)
            raise MechanismError(
                f"token {self.config.token_label!r} does not support {algorithm.name} (no {names}); "
                f"use another algorithm ({others})"
            )

    def generate(self, algorithm: Algorithm, label: str) -> TokenKey:
        """Generate a key pair whose private half never leaves the token.

        The private key is sensitive and not extractable, usable only to sign.
        Its CKA_ID is derived from the public key, which exists only after
        generation, so the pair is created under a random id and then renamed.
        """
        self.require(algorithm, generate=True)

        def generate(session: pkcs11.Session) -> TokenKey:
            public, private = session.generate_keypair(
                algorithm.key_type,
                store=True,
                label=label,
                id=os.urandom(16),
                mechanism=algorithm.keygen,
                capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                public_template={Attribute.EC_PARAMS: algorithm.ec_params, Attribute.PRIVATE: False},
                private_template={
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.DERIVE: False,
                    Attribute.DECRYPT: False,
                    Attribute.UNWRAP: False,
                },
            )
            try:
                public_key = algorithm.public_key_from_ec_point(public[Attribute.EC_POINT])
                key_id = key_id_for(public_key)
                public[Attribute.ID] = key_id
                private[Attribute.ID] = key_id
            except BaseException:
                public.destroy()
                private.destroy()
                raise
            return TokenKey(key_id, label, algorithm, public_key)

        return self.call(generate)

    def key(self, key_id: bytes) -> TokenKey:
        """The key pair with CKA_ID ``key_id``; exactly one private and one public key must carry it."""
        return self.call(lambda session: self._describe(session, key_id))

    def private_key(self, key_id: bytes) -> pkcs11.PrivateKey:
        """The private key object with CKA_ID ``key_id``, usable only in ``call``."""
        return self.call(lambda session: self._one(session, ObjectClass.PRIVATE_KEY, key_id))

    def _describe(self, session: pkcs11.Session, key_id: bytes) -> TokenKey:
        private = self._one(session, ObjectClass.PRIVATE_KEY, key_id)
        public = self._one(session, ObjectClass.PUBLIC_KEY, key_id)
        algorithm = _algorithm_of(public, key_id)
        if private.key_type != algorithm.key_type:
            raise DuplicateKeyError(
                f"key id {key_id.hex()} in token {self.config.token_label!r} names a {algorithm.name} public key "
                f"but a {private.key_type.name} private key; ids must name one key pair"
            )
        return TokenKey(key_id, private.label, algorithm, algorithm.public_key_from_ec_point(public[Attribute.EC_POINT]))

    def _one(self, session: pkcs11.Session, object_class: ObjectClass, key_id: bytes) -> Any:
        found = list(session.get_objects({Attribute.CLASS: object_class, Attribute.ID: key_id}))
        kind = "private" if object_class == ObjectClass.PRIVATE_KEY else "public"
        if not found:
            raise KeyNotFoundError(
                f"no {kind} key with id {key_id.hex()} in token {self.config.token_label!r}; "
                "check the key id (notary keys list) and the token label"
            )
        if len(found) > 1:
            raise DuplicateKeyError(
                f"{len(found)} {kind} keys carry id {key_id.hex()} in token {self.config.token_label!r}; "
                "remove the copies so that the id names one key"
            )
        return found[0]


def _algorithm_of(public: pkcs11.PublicKey, key_id: bytes) -> Algorithm:
    for algorithm in ALGORITHMS.values():
        if public.key_type == algorithm.key_type and public[Attribute.EC_PARAMS] == algorithm.ec_params:
            return algorithm
    raise MechanismError(
        f"key id {key_id.hex()} is a {public.key_type.name} key with parameters the notary does not sign with; "
        f"use a key of one of: {', '.join(ALGORITHMS)}"
    )


def _load_module(module: Path) -> Any:
    if not module.is_file():
        raise ModuleLoadError(
            f"PKCS#11 module {module} does not exist; install it (Debian: softhsm2) or fix the module path"
        )
    try:
        return pkcs11.lib(str(module))
    except p11.PKCS11Error as exc:
        detail = str(exc) or f"PKCS#11 error {type(exc).__name__}"
        raise ModuleLoadError(
            f"PKCS#11 module {module} cannot be loaded or initialised ({detail}); fix the module path "
            "and the module's configuration (SoftHSM2: the file SOFTHSM2_CONF names and its token directory)"
        ) from None


def _translated(fn: Callable[[], T], token_label: str) -> T:
    try:
        return fn()
    except HSMError:
        raise
    except p11.PKCS11Error as exc:
        raise from_pkcs11(exc, token_label) from None


def _run(fn: Callable[[], T], token_label: str) -> T:
    if threading.current_thread().name.startswith("pkcs11_"):
        raise RuntimeError("Token.call from the PKCS#11 thread would deadlock; call the session directly")
    return _pkcs11_thread().submit(_translated, fn, token_label).result()

