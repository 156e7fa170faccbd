"""Which checkpoint-signing keys an auditor trusts, and during which interval.

A key taken from the keyring (docs/KEYS.md) is trusted only from the time of
its ``activate`` event until the time of its ``retire`` event (exclusive): a
checkpoint whose RFC 3161 timestamp falls outside that interval does not
count as signed by it, so a retired key that leaks cannot sign history after
the fact. A pending key, or one retired before it was ever activated, is
trusted never. A key given as a verifier-key string carries no interval and
is trusted at any time.

The time a signature is judged at is the timestamp's ``genTime``: the token
proves the signed checkpoint existed then, and nothing the notary host says
about time (``sealed_at``) is trusted.

Importing this module needs no HSM: ``hsm.keyring`` is pure parsing (it loads
the python-pkcs11 package, but opens no module and no token).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass

from hsm.keyring import Keyring

from notary.checkpoint import SignedCheckpoint, checkpoint_signers, parse_signed_checkpoint
from notary.errors import VerificationError
from notary.note import VerifierKey, parse_verifier_key


class SignatureError(VerificationError):
    """A checkpoint carries no valid signature by a key trusted at its time, or a trusted key's signature fails."""


def _event_time(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def _iso(when: datetime.datetime | None) -> str:
    return "-" if when is None else when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class TrustedKey:
    """A verifier key and the interval [valid_from, valid_until) in which its signatures count.

    ``None`` bounds are open; ``never`` marks a keyring key that was never active.
    """

    key: VerifierKey
    label: str | None = None  # the keyring's label, None for a key given as a string
    valid_from: datetime.datetime | None = None
    valid_until: datetime.datetime | None = None
    never: bool = False

    def valid_at(self, when: datetime.datetime | None) -> bool:
        """Whether the key may have signed at ``when``; with no time, only keys without an interval."""
        if self.never:
            return False
        if when is None:
            return self.valid_from is None and self.valid_until is None
        return (self.valid_from is None or self.valid_from <= when) and (
            self.valid_until is None or when < self.valid_until)

    def name(self) -> str:
        """``<origin>+<key id>`` and the label: how verdicts name a key."""
        base = f"{self.key.name}+{self.key.key_id:08x}"
        return f"{base} ({self.label})" if self.label else base

    def interval(self) -> str:
        if self.never:
            return "never active"
        return f"valid from {_iso(self.valid_from)} until {_iso(self.valid_until) if self.valid_until else 'now'}"

    def to_json(self) -> dict:
        return {"verifier_key": str(self.key), "label": self.label, "never_active": self.never,
                "valid_from": None if self.valid_from is None else _iso(self.valid_from),
                "valid_until": None if self.valid_until is None else _iso(self.valid_until)}


@dataclass(frozen=True)
class TrustedKeys:
    """Every key an auditor trusts; ``origin`` is the keyring's name when one was given."""

    keys: tuple[TrustedKey, ...]
    origin: str | None = None

    @classmethod
    def from_keyring(cls, keyring: Keyring) -> TrustedKeys:
        """Each key with the interval its activate and retire events give (docs/KEYS.md, "Lifecycle")."""
        records = {k.key_id: k for k in keyring.keys()}
        activated: dict[bytes, datetime.datetime] = {}
        retired: dict[bytes, datetime.datetime] = {}
        for event in keyring.events:
            if event.event == "activate":
                activated[event.key_id] = _event_time(event.time)
            elif event.event == "retire":
                retired[event.key_id] = _event_time(event.time)
        keys = []
        for key_id, record in records.items():
            vkey = VerifierKey(name=keyring.name, sig_type=record.algorithm.sig_type, public_key=record.public_key)
            if key_id not in activated:
                keys.append(TrustedKey(vkey, record.label, never=True))
            else:
                keys.append(TrustedKey(vkey, record.label, activated[key_id], retired.get(key_id)))
        return cls(tuple(keys), origin=keyring.name)

    @classmethod
    def from_strings(cls, texts: Iterable[str]) -> TrustedKeys:
        """Verifier-key strings (``notary keys export``), trusted at any time."""
        return cls(tuple(TrustedKey(parse_verifier_key(t)) for t in texts))

    def __add__(self, other: TrustedKeys) -> TrustedKeys:
        return TrustedKeys(self.keys + other.keys, self.origin or other.origin)

    def needs_time(self) -> bool:
        """True when some key is bounded in time, so a signature can only be judged with a timestamp."""
        return any(k.never or k.valid_from is not None or k.valid_until is not None for k in self.keys)

    def verify_checkpoint(
        self, checkpoint: bytes | str, when: datetime.datetime | None
    ) -> tuple[SignedCheckpoint, tuple[TrustedKey, ...]]:
        """Parse a signed checkpoint and return the trusted keys whose signatures verify at ``when``.

        Raises ``SignatureError`` when none does, naming the keys that signed
        and, for keys we know but not at that time, their interval.
        """
        signed = parse_signed_checkpoint(checkpoint)
        origin = signed.checkpoint.origin
        if self.origin is not None and origin != self.origin:
            raise SignatureError(f"the checkpoint is for log {origin!r}, but the keyring is for {self.origin!r}")
        valid = [k for k in self.keys if k.valid_at(when)]
        try:
            verified = checkpoint_signers(signed, [k.key for k in valid])
        except VerificationError as exc:
            raise SignatureError(f"{exc}{self._outside(signed, when)}{self._other_logs(signed)}") from None
        return signed, tuple(k for k in valid if k.key in verified)

    def _other_logs(self, signed: SignedCheckpoint) -> str:
        """Why keys we trust do not count: they are another log's."""
        origin = signed.checkpoint.origin
        others = sorted({k.key.name for k in self.keys if k.key.name != origin})
        if not others:
            return ""
        return (f"; the checkpoint is for log {origin!r}, and the trusted keys named otherwise "
                f"({', '.join(repr(o) for o in others)}) speak only for their own logs")

    def _outside(self, signed: SignedCheckpoint, when: datetime.datetime | None) -> str:
        """Why keys we know do not count: they signed outside their interval."""
        known = [k for k in self.keys if not k.valid_at(when) and any(k.key.matches(s) for s in signed.note.signatures)]
        if not known:
            return ""
        at = f"the timestamp's time {_iso(when)}" if when else "an unknown time (no timestamp checked)"
        return "; " + "; ".join(f"key {k.name()} is known but {k.interval()}, and the signature is judged at {at}"
                                for k in known)
