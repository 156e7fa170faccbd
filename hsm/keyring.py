"""The keyring: which signing keys a log has, in which state, and since when.

The keyring file is public data (no secret): the log's key name and the
hash-chained list of key events. Everything else - each key's algorithm,
public key and status - is derived by replaying the events, so the file
cannot say one thing in a summary and another in its history.

Lifecycle (docs/KEYS.md)::

    generate -> pending --activate--> active --retire--> retired
                pending --retire--> retired        (withdrawn before use)

An active key signs every new checkpoint; a retired key stays so that old
checkpoints verify, and never signs again. The last active key cannot be
retired: activate its successor first.

Each event is a small record in canonical JSON (RFC 8785 form for our value
set: ASCII keys, strings and small integers); the daemon appends
SHA-256(record) to the log when it loads a changed keyring
(``Keyring.unlogged_events``), so the log itself attests its key history.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import hmac
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from hsm.algorithms import Algorithm, algorithm, key_id_for
from hsm.errors import DuplicateKeyError, KeyNotFoundError, KeyringError

FORMAT = "notary-keyring/v1"
EVENT_FORMAT = "notary-key-event/v1"

PENDING, ACTIVE, RETIRED = "pending", "active", "retired"

# event name -> (states it may start from, state it leads to); None: the key is new.
TRANSITIONS: dict[str, tuple[tuple[str | None, ...], str]] = {
    "generate": ((None,), PENDING),
    "activate": ((PENDING,), ACTIVE),
    "retire": ((PENDING, ACTIVE), RETIRED),
}

GENESIS = "0" * 64  # ``prev`` of the first event

# Labels are for people; restricted so that an event's bytes have one reading.
LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")

# A keyring holds a handful of keys; a larger file is not a keyring.
MAX_KEYRING_BYTES = 1 << 20

_EVENT_FIELDS = ("algorithm", "event", "format", "key_id", "label", "name", "prev", "public_key", "seq", "time")


def check_label(label: str) -> None:
    if not LABEL_RE.fullmatch(label):
        raise KeyringError(
            f"key label {label!r} is not 1-64 characters of letters, digits, '.', '_' or '-' "
            "starting with a letter or digit; choose another label"
        )


def canonical_json(value: dict) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the one byte form of a record."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class KeyEvent:
    """One state change of one key: a self-contained, hash-chained record."""

    seq: int  # 0-based position in the keyring's history
    prev: str  # hex SHA-256 of the previous event's record; GENESIS for seq 0
    name: str  # the log's key name (its origin), shared by every key
    event: str  # "generate" | "activate" | "retire"
    key_id: bytes  # CKA_ID = SHA-256(public_key)[:16]
    label: str
    algorithm: str  # "ecdsa-p256" | "ed25519"
    public_key: bytes  # SPKI DER (ECDSA) or raw 32 bytes (Ed25519)
    time: str  # RFC 3339 UTC, whole seconds, when the change was made

    def to_json(self) -> dict:
        return {
            "algorithm": self.algorithm,
            "event": self.event,
            "format": EVENT_FORMAT,
            "key_id": self.key_id.hex(),
            "label": self.label,
            "name": self.name,
            "prev": self.prev,
            "public_key": base64.b64encode(self.public_key).decode("ascii"),
            "seq": self.seq,
            "time": self.time,
        }

    def record(self) -> bytes:
        """The canonical bytes whose SHA-256 the log records."""
        return canonical_json(self.to_json())

    def digest(self) -> bytes:
        return hashlib.sha256(self.record()).digest()

    @classmethod
    def from_json(cls, value: object, seq: int) -> KeyEvent:
        where = f"key event {seq}"
        if not isinstance(value, dict) or sorted(value) != list(_EVENT_FIELDS):
            raise KeyringError(f"{where} does not have exactly the fields {', '.join(_EVENT_FIELDS)}")
        if value["format"] != EVENT_FORMAT:
            raise KeyringError(f"{where} has format {value['format']!r}, expected {EVENT_FORMAT!r}")
        if type(value["seq"]) is not int:
            raise KeyringError(f"{where} has a seq that is not an integer")
        text_fields = [f for f in _EVENT_FIELDS if f != "seq"]
        if not all(isinstance(value[f], str) for f in text_fields):
            raise KeyringError(f"{where} has a field that is not a string")
        try:
            key_id = bytes.fromhex(value["key_id"])
            public_key = base64.b64decode(value["public_key"], validate=True)
        except (ValueError, binascii.Error):
            raise KeyringError(f"{where} has a key_id that is not hex or a public_key that is not base64") from None
        event = cls(
            seq=value["seq"],
            prev=value["prev"],
            name=value["name"],
            event=value["event"],
            key_id=key_id,
            label=value["label"],
            algorithm=value["algorithm"],
            public_key=public_key,
            time=value["time"],
        )
        if event.to_json() != value:
            raise KeyringError(f"{where} is not in canonical form (lowercase hex, padded base64)")
        return event


@dataclass(frozen=True)
class KeyRecord:
    """A key as the keyring knows it, derived from its events."""

    key_id: bytes
    label: str
    algorithm: Algorithm
    public_key: bytes
    status: str  # PENDING | ACTIVE | RETIRED


@dataclass(frozen=True)
class Keyring:
    """The log's key name and its key history. Immutable: changes return a new keyring."""

    name: str
    events: tuple[KeyEvent, ...] = ()

    def __post_init__(self) -> None:
        if not self.name:
            raise KeyringError("the keyring's key name is empty; give the log's origin as its name")
        self._replay()  # a keyring exists only if its history is valid

    def keys(self) -> list[KeyRecord]:
        """Every key ever generated, oldest first, with its current status."""
        return list(self._replay().values())

    def active_keys(self) -> list[KeyRecord]:
        return [k for k in self.keys() if k.status == ACTIVE]

    def key(self, ref: str) -> KeyRecord:
        """The key named by ``ref``: its hex id, or its label if no id matches."""
        keys = self.keys()
        by_id = [k for k in keys if k.key_id.hex() == ref.lower()]
        if by_id:
            return by_id[0]
        by_label = [k for k in keys if k.label == ref]
        if len(by_label) > 1:
            ids = ", ".join(k.key_id.hex() for k in by_label)
            raise DuplicateKeyError(f"{len(by_label)} keys carry the label {ref!r} (ids {ids}); name the key by its id")
        if not by_label:
            raise KeyNotFoundError(f"no key with id or label {ref!r} in the keyring; see notary keys list")
        return by_label[0]

    def generate(self, key_id: bytes, label: str, algorithm_name: str, public_key: bytes, now: datetime | None = None) -> Keyring:
        """Record a key pair just generated in the token, as pending."""
        template = KeyRecord(key_id, label, algorithm(algorithm_name), public_key, status="")
        return self._append("generate", template, now)

    def activate(self, ref: str, now: datetime | None = None) -> Keyring:
        return self._append("activate", self.key(ref), now)

    def retire(self, ref: str, now: datetime | None = None) -> Keyring:
        key = self.key(ref)
        if key.status == ACTIVE and len(self.active_keys()) == 1:
            raise KeyringError(
                f"key {key.key_id.hex()} is the only active key, so the log could not sign; "
                "generate and activate its successor before retiring it"
            )
        return self._append("retire", key, now)

    def unlogged_events(self, last_logged: bytes | None) -> list[KeyEvent]:
        """The events after the one whose digest the log recorded last (all if ``None``).

        Raises ``KeyringError`` if that digest is not in this keyring's history:
        the keyring was replaced or rewritten since the log last saw it.
        """
        if last_logged is None:
            return list(self.events)
        for event in self.events:
            if hmac.compare_digest(event.digest(), last_logged):
                return list(self.events[event.seq + 1 :])
        raise KeyringError(
            f"the keyring's history does not contain the last key event the log recorded "
            f"(SHA-256 {last_logged.hex()}); the keyring file was replaced or rewritten: restore it"
        )

    def encode(self) -> bytes:
        """The keyring file: indented JSON, one event per object, newline at the end."""
        value = {"format": FORMAT, "name": self.name, "events": [e.to_json() for e in self.events]}
        return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")

    @classmethod
    def parse(cls, data: bytes) -> Keyring:
        if len(data) > MAX_KEYRING_BYTES:
            raise KeyringError(f"keyring is {len(data)} bytes, more than the limit of {MAX_KEYRING_BYTES}")
        try:
            value = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_fields)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: deep nesting
            raise KeyringError(f"keyring is not valid JSON: {exc}") from None
        if not isinstance(value, dict) or sorted(value) != ["events", "format", "name"]:
            raise KeyringError("keyring does not have exactly the fields events, format, name")
        if value["format"] != FORMAT:
            raise KeyringError(f"keyring has format {value['format']!r}, expected {FORMAT!r}")
        if not isinstance(value["name"], str) or not isinstance(value["events"], list):
            raise KeyringError("keyring name must be a string and events a list")
        events = tuple(KeyEvent.from_json(v, seq) for seq, v in enumerate(value["events"]))
        return cls(value["name"], events)

    @classmethod
    def load(cls, path: Path) -> Keyring:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise KeyringError(f"keyring {path} does not exist; create it with notary keys generate --name <origin>") from None
        except OSError as exc:
            raise KeyringError(f"keyring {path} cannot be read: {exc.strerror}") from None
        try:
            return cls.parse(data)
        except KeyringError as exc:
            raise KeyringError(f"keyring {path}: {exc}") from None

    def _append(self, event_name: str, key: KeyRecord, now: datetime | None) -> Keyring:
        moment = (now or datetime.now(UTC)).astimezone(UTC)
        event = KeyEvent(
            seq=len(self.events),
            prev=self.events[-1].digest().hex() if self.events else GENESIS,
            name=self.name,
            event=event_name,
            key_id=key.key_id,
            label=key.label,
            algorithm=key.algorithm.name,
            public_key=key.public_key,
            time=moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        return replace(self, events=self.events + (event,))

    def _replay(self) -> dict[bytes, KeyRecord]:
        """Key states after every event, checking each event against the rules."""
        keys: dict[bytes, KeyRecord] = {}
        times: dict[bytes, datetime] = {}
        prev = GENESIS
        for seq, event in enumerate(self.events):
            where = f"key event {seq} ({event.event} {event.key_id.hex()})"
            if event.seq != seq or event.prev != prev:
                raise KeyringError(f"{where} is out of sequence or does not chain to the event before it")
            if event.name != self.name:
                raise KeyringError(f"{where} names the key name {event.name!r}, but the keyring is {self.name!r}")
            if not TIME_RE.fullmatch(event.time):
                raise KeyringError(f"{where} has time {event.time!r}, expected YYYY-MM-DDTHH:MM:SSZ")
            try:
                when = datetime.strptime(event.time, "%Y-%m-%dT%H:%M:%SZ")
            except ValueError:
                raise KeyringError(f"{where} has time {event.time!r}, which is no date and time") from None
            if event.key_id in times and when < times[event.key_id]:
                raise KeyringError(f"{where} has time {event.time!r}, before the key's previous event: a key's "
                                   "events go forward in time (auditors trust it only between them)")
            times[event.key_id] = when
            if event.event not in TRANSITIONS:
                raise KeyringError(f"{where} is not one of {', '.join(TRANSITIONS)}")
            sources, target = TRANSITIONS[event.event]
            current = keys.get(event.key_id)
            status = current.status if current else None
            if status not in sources:
                raise KeyringError(f"{where} is not allowed for a key that is {status or 'not generated'}")
            record = _record_of(event, where)
            if current and replace(current, status="") != replace(record, status=""):
                raise KeyringError(f"{where} describes the key differently from its generate event")
            keys[event.key_id] = replace(record, status=target)
            prev = event.digest().hex()
        return keys


def _record_of(event: KeyEvent, where: str) -> KeyRecord:
    check_label(event.label)
    alg = algorithm(event.algorithm)
    try:
        alg.check_public_key(event.public_key)
    except KeyringError as exc:
        raise KeyringError(f"{where}: {exc}") from None
    if not hmac.compare_digest(event.key_id, key_id_for(event.public_key)):
        raise KeyringError(f"{where} has an id that is not derived from its public key")
    return KeyRecord(event.key_id, event.label, alg, event.public_key, status="")


def _no_duplicate_fields(pairs: list[tuple[str, object]]) -> dict:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise ValueError("a field appears twice in one object")
    return value


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of one keyring between processes."""
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def update(path: Path, change: Callable[[Keyring | None], Keyring]) -> Keyring:
    """Apply ``change`` to the keyring at ``path`` (``None`` if absent) and save it.

    Holds a lock for the whole change, refuses anything but appending events,
    and replaces the file atomically (write, fsync, rename, fsync directory).
    """
    try:
        return _update(path, change)
    except OSError as exc:  # the lock, the temporary file or the rename: one sentence, not a traceback
        where = f" ({exc.filename})" if exc.filename else ""
        raise KeyringError(f"keyring {path} cannot be written: {exc.strerror or exc}{where}; "
                           "check the permissions and free space of its directory") from None


def _update(path: Path, change: Callable[[Keyring | None], Keyring]) -> Keyring:
    # Through a symlink (a keyring kept on another volume, or under configuration management), the
    # file it points at is the keyring: renaming over the link would leave that file behind, stale.
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        old = Keyring.load(path) if path.exists() else None
        new = change(old)
        if old is not None and (new.name != old.name or new.events[: len(old.events)] != old.events):
            raise KeyringError(f"keyring {path} may only grow by new events; its history was not changed")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(new.encode())
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return new
