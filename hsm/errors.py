"""The exception hierarchy of the hsm package.

Every error a caller is expected to handle is an ``HSMError`` whose message
is one sentence naming what is wrong and what to fix. Each class carries its
own ``exit_code`` so that scripts driving ``notary keys`` can tell them apart.

python-pkcs11 raises one exception class per PKCS#11 return value, most of
them with an empty message; ``from_pkcs11`` turns the ones a person can act on
into sentences and names the return value for the rest.
"""

from __future__ import annotations

import pkcs11.exceptions as p11


class HSMError(Exception):
    """Base class of every error the hsm package raises on purpose."""

    exit_code = 10


class ModuleLoadError(HSMError):
    """The PKCS#11 module (shared library) cannot be loaded."""

    exit_code = 11


class TokenNotFoundError(HSMError):
    """No token, or more than one, carries the configured label."""

    exit_code = 12


class PinError(HSMError):
    """The PIN is wrong, locked, or cannot be read from its source. Never retried."""

    exit_code = 13


class KeyNotFoundError(HSMError):
    """No key with the given id (or label) in the token or keyring."""

    exit_code = 14


class DuplicateKeyError(HSMError):
    """Two keys answer to one label or one id, so the reference is ambiguous."""

    exit_code = 15


class MechanismError(HSMError):
    """The token does not offer a mechanism the chosen algorithm needs."""

    exit_code = 16


class KeyringError(HSMError):
    """The keyring file is missing, malformed, or a state change is not allowed."""

    exit_code = 17


class TokenError(HSMError):
    """The token refused an operation for a reason not covered above."""

    exit_code = 18


class SessionLostError(TokenError):
    """The session with the token is gone (HSM connection dropped, token removed, login lost).

    No call on it can succeed again; a new session, with a new login, is
    needed. ``restart_needed`` tells a caller that does not know this package
    (the notary's sealer) to end the process rather than retry: the daemon
    exits, systemd starts it again, and the start logs in once more.
    """

    restart_needed = True


# PKCS#11 return values a person can act on, as (error class, sentence).
# ``{token}`` is the token label; the sentence says what to fix.
_SENTENCES: dict[type[p11.PKCS11Error], tuple[type[HSMError], str]] = {
    p11.PinIncorrect: (
        PinError,
        "the PIN for token {token!r} is wrong; it was not retried (repeated failures can lock "
        "the token): fix the PIN source",
    ),
    p11.PinLocked: (
        PinError,
        "the user PIN of token {token!r} is locked after too many wrong PINs; "
        "the security officer must unlock or reset it",
    ),
    p11.PinExpired: (PinError, "the user PIN of token {token!r} has expired; set a new one"),
    p11.PinLenRange: (PinError, "the PIN for token {token!r} has a length the token does not accept; fix the PIN source"),
    p11.PinInvalid: (PinError, "the PIN for token {token!r} contains characters the token does not accept; fix the PIN source"),
    p11.UserPinNotInitialized: (
        PinError,
        "token {token!r} has no user PIN yet; initialise the token's user PIN first",
    ),
    p11.UserAlreadyLoggedIn: (
        TokenError,
        "this process is already logged in to token {token!r}; keep one session per token "
        "and close it before opening another",
    ),
    p11.UserNotLoggedIn: (SessionLostError, "the session with token {token!r} is not logged in; open it with the user PIN"),
    p11.MechanismInvalid: (
        MechanismError,
        "token {token!r} does not support the mechanism asked for; choose another algorithm",
    ),
    p11.KeyTypeInconsistent: (
        MechanismError,
        "the key in token {token!r} is not of the type its algorithm needs; check the key id",
    ),
    p11.SessionReadOnly: (TokenError, "the session with token {token!r} is read-only; this operation needs a read-write session"),
    p11.TokenWriteProtected: (TokenError, "token {token!r} is write-protected; key generation needs a writable token"),
    p11.DeviceRemoved: (SessionLostError, "token {token!r} was removed or the HSM connection dropped; restart to open a new session"),
    p11.TokenNotPresent: (SessionLostError, "token {token!r} is not present; check the HSM connection and restart"),
    p11.SessionHandleInvalid: (SessionLostError, "the session with token {token!r} was lost; restart to open a new session"),
    p11.SessionClosed: (SessionLostError, "the session with token {token!r} is closed; restart to open a new session"),
    p11.DeviceMemory: (TokenError, "token {token!r} is out of memory; delete unused objects or use another token"),
    p11.AttributeSensitive: (TokenError, "token {token!r} refuses to reveal a sensitive attribute of the key"),
    p11.KeyUnextractable: (TokenError, "token {token!r} refuses to export the key, which is not extractable"),
}


def from_pkcs11(exc: p11.PKCS11Error, token: str) -> HSMError:
    """The ``HSMError`` a person can act on for a python-pkcs11 exception."""
    for cls in type(exc).__mro__:
        if cls in _SENTENCES:
            error_class, sentence = _SENTENCES[cls]
            return error_class(sentence.format(token=token))
    # python-pkcs11 names the PKCS#11 return value through the class; its
    # message is usually empty, so both go into the sentence.
    detail = f": {exc}" if str(exc) else ""
    return TokenError(f"token {token!r} failed with PKCS#11 error {type(exc).__name__}{detail}")
