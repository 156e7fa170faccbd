"""Structured audit events: complete, correlated, and redacted before they exist.

``AuditEvents(actions={...})`` is the application's declared vocabulary;
``events.event(actor=, action=, target=, outcome=, **details)`` returns the
event as a plain dict, ready for ``NotaryHandler`` (``logger.info(event)``):

    {"schema_version": 1, "event_id": <ULID>, "time": "2026-11-21T21:40:00.123Z",
     "actor": {"id": "alice", "on_behalf_of": "bob"}, "action": "todo.delete",
     "target": "todo/42", "outcome": "success",
     "trace": {"trace_id": <32 hex>, "parent_id": <16 hex>}, "details": {...}}

Redaction happens here, at construction, so nothing unredacted ever reaches a
handler, a sink or an exception message:
- national-id fields become ``hmac-sha256:<hex>``, HMAC-SHA-256 under the key
  in ``$NOTARY_AUDIT_HMAC_KEY`` (the same id gives the same token, so events can
  be joined without the id);
- card-number fields become ``****<last four>``;
- password and secret fields are dropped;
- any other string or number that contains a card number (13-19 digits,
  Luhn-valid, first digit 2-6) or a national id (US SSN written with
  separators, UK National Insurance number) is refused (AuditEventError names
  the field, never the value), in details, actor, on_behalf_of and target.
Tests: tests/test_audit_events.py (Hypothesis: planted values never reach the sink).
"""

from __future__ import annotations

import contextvars
import datetime
import hashlib
import hmac
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ulid import ULID

from notary.errors import NotaryError

SCHEMA_VERSION = 1
OUTCOMES = frozenset({"success", "failure", "denied"})
KEY_VARIABLE = "NOTARY_AUDIT_HMAC_KEY"
MIN_KEY_BYTES = 16
JSON_INT_MAX = 2**53 - 1  # the largest integer RFC 8785 writes (it holds numbers as IEEE 754 doubles, §3.2.2.3)

# Field names are compared lower-cased with everything but letters and digits removed.
SECRET_FIELDS = frozenset({"password", "passwd", "pwd", "passphrase", "secret", "clientsecret", "token",
                           "accesstoken", "refreshtoken", "apikey", "privatekey", "credential", "credentials",
                           "authorization", "cookie", "pin", "cvv", "cvc", "otp"})
SECRET_PARTS = ("password", "secret", "token", "apikey", "privatekey", "credential")
CARD_FIELDS = frozenset({"card", "cardnumber", "creditcard", "creditcardnumber", "ccnumber", "pan"})
NATIONAL_ID_FIELDS = frozenset({"nationalid", "ssn", "socialsecuritynumber", "nin", "nino", "taxid", "tin",
                                "passportnumber", "idnumber"})

# A run of 13-19 digits, single spaces or dashes allowed between them (how card numbers are written).
_CARD_CANDIDATE = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])")
# National ids whose shape is unmistakable: US SSN (dashes or spaces), UK National Insurance number.
_NATIONAL_ID = re.compile(r"(?<![0-9])[0-9]{3}[- ][0-9]{2}[- ][0-9]{4}(?![0-9])"
                          r"|(?<![A-Za-z])[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D](?![A-Za-z0-9])",
                          re.IGNORECASE)
# W3C Trace Context §3.2: version "-" trace-id "-" parent-id "-" flags, lower-case hex.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")

current_traceparent: contextvars.ContextVar[str | None] = contextvars.ContextVar("traceparent", default=None)
"""The W3C ``traceparent`` header of the request being served; the app sets it per request."""


class AuditEventError(NotaryError, ValueError):
    """An event that must not be written: incomplete, outside the vocabulary, or holding a sensitive value."""


def _field(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def luhn_valid(digits: str) -> bool:
    """The Luhn check (ISO/IEC 7812-1 Annex B) over a string of digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def contains_card_number(text: str) -> bool:
    """A run of 13-19 digits (spaces or dashes between them allowed) that is Luhn-valid and starts
    with a card network's major industry identifier, 2 to 6 (ISO/IEC 7812-1): Visa, Mastercard, Amex,
    Discover, JCB, UnionPay. The first digit keeps epoch milliseconds and most order numbers out."""
    return any(m.group()[0] in "23456" and luhn_valid(re.sub(r"[ -]", "", m.group()))
               for m in _CARD_CANDIDATE.finditer(text))


def contains_national_id(text: str) -> bool:
    return _NATIONAL_ID.search(text) is not None


def parse_traceparent(header: str | None) -> dict | None:
    """trace_id and parent_id of a valid W3C traceparent; None for a missing or invalid one (§3.2: ignore it)."""
    m = _TRACEPARENT.fullmatch(header.strip()) if header else None
    if m is None:
        return None
    version, trace_id, parent_id, _flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or set(trace_id) == {"0"} or set(parent_id) == {"0"}:
        return None
    return {"trace_id": trace_id, "parent_id": parent_id}


def utc_millis(when: datetime.datetime) -> str:
    if when.tzinfo is None:
        raise AuditEventError("event time must be timezone-aware (a naive datetime is ambiguous)")
    when = when.astimezone(datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class AuditEvents:
    """The vocabulary of one application and its redaction key.

    ``actions``: every action an event may name. ``hmac_key``: bytes, or None
    to read ``$NOTARY_AUDIT_HMAC_KEY`` (hex, at least 16 bytes) now, so that a
    missing key stops the application at start, not at the first event.
    ``secret_fields``, ``card_fields``, ``national_id_fields`` add
    application field names to the defaults.
    """

    actions: frozenset[str]
    hmac_key: bytes
    secret_fields: frozenset[str]
    card_fields: frozenset[str]
    national_id_fields: frozenset[str]

    def __init__(self, actions: Iterable[str], *, hmac_key: bytes | None = None,
                 secret_fields: Iterable[str] = (), card_fields: Iterable[str] = (),
                 national_id_fields: Iterable[str] = ()):
        actions = frozenset(actions)
        if not actions or not all(isinstance(a, str) and a for a in actions):
            raise AuditEventError("the action vocabulary must be a non-empty set of non-empty strings")
        object.__setattr__(self, "actions", actions)
        object.__setattr__(self, "hmac_key", _key_from_environment() if hmac_key is None else hmac_key)
        object.__setattr__(self, "secret_fields", SECRET_FIELDS | {_field(f) for f in secret_fields})
        object.__setattr__(self, "card_fields", CARD_FIELDS | {_field(f) for f in card_fields})
        object.__setattr__(self, "national_id_fields", NATIONAL_ID_FIELDS | {_field(f) for f in national_id_fields})
        if len(self.hmac_key) < MIN_KEY_BYTES:
            raise AuditEventError(f"the audit HMAC key has {len(self.hmac_key)} bytes, at least {MIN_KEY_BYTES} needed")

    def event(self, *, actor: str, action: str, target: str, outcome: str, on_behalf_of: str | None = None,
              when: datetime.datetime | None = None, traceparent: str | None = None, **details) -> dict:
        """A complete, redacted event; AuditEventError if anything required is missing or sensitive.

        ``traceparent`` defaults to ``current_traceparent``; ``when`` to now.
        """
        for name, value in (("actor", actor), ("action", action), ("target", target), ("outcome", outcome)):
            if not isinstance(value, str) or not value.strip():
                raise AuditEventError(f"an audit event needs {name} (who, what, which, outcome) as a non-empty "
                                      f"string, got {type(value).__name__}")
        if action not in self.actions:
            raise AuditEventError(f"action {action!r} is not in the declared vocabulary "
                                  f"({', '.join(sorted(self.actions))})")
        if outcome not in OUTCOMES:
            raise AuditEventError(f"outcome must be one of {', '.join(sorted(OUTCOMES))}, got {outcome!r}")
        who = {"id": self._plain("actor", actor)}
        if on_behalf_of is not None:
            if not isinstance(on_behalf_of, str) or not on_behalf_of.strip():
                raise AuditEventError("actor.on_behalf_of, when given, must name the principal")
            who["on_behalf_of"] = self._plain("actor.on_behalf_of", on_behalf_of)
        event = {
            "schema_version": SCHEMA_VERSION,
            "event_id": str(ULID()),
            "time": utc_millis(when or datetime.datetime.now(datetime.timezone.utc)),
            "actor": who,
            "action": action,
            "target": self._plain("target", target),
            "outcome": outcome,
        }
        trace = parse_traceparent(traceparent if traceparent is not None else current_traceparent.get())
        if trace is not None:
            event["trace"] = trace
        if details:
            event["details"] = self._redact_mapping("details", details)
        return event

    def national_id_token(self, value: str) -> str:
        """``hmac-sha256:<hex>`` of the id with spaces and dashes removed, upper-cased."""
        normal = re.sub(r"[\s-]", "", value).upper()
        return "hmac-sha256:" + hmac.new(self.hmac_key, normal.encode(), hashlib.sha256).hexdigest()

    def _plain(self, path: str, value: str) -> str:
        """A string that is neither declared sensitive nor allowed to look like a card number or national id."""
        _check_unicode(path, value)
        if contains_card_number(value):
            raise AuditEventError(f"{path} looks like a card number; put it in a card field to keep the last four")
        if contains_national_id(value):
            raise AuditEventError(f"{path} looks like a national id; put it in a national-id field to tokenize it")
        return value

    def _redact_mapping(self, path: str, mapping: Mapping) -> dict:
        out = {}
        for key, value in mapping.items():
            if not isinstance(key, str):
                raise AuditEventError(f"{path} has a non-string key of type {type(key).__name__}")
            where = f"{path}.{self._plain(path + ' key', key)}"
            name = _field(key)
            if name in self.secret_fields or any(part in name for part in SECRET_PARTS):
                continue
            if name in self.card_fields:
                out[key] = self._card(where, value)
            elif name in self.national_id_fields:
                if not isinstance(value, str) or not value.strip():
                    raise AuditEventError(f"{where} is a national-id field and must hold a non-empty string")
                _check_unicode(where, value)
                out[key] = self.national_id_token(value)
            else:
                out[key] = self._redact_value(where, value)
        return out

    def _redact_value(self, path: str, value):
        if isinstance(value, Mapping):
            return self._redact_mapping(path, value)
        if isinstance(value, (list, tuple)):
            return [self._redact_value(f"{path}[{i}]", v) for i, v in enumerate(value)]
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int) and not -JSON_INT_MAX <= value <= JSON_INT_MAX:
            raise AuditEventError(f"{path} is an integer beyond ±(2**53 - 1), which RFC 8785 JSON cannot hold "
                                  "exactly; write it as a string")
        if isinstance(value, float) and not math.isfinite(value):
            raise AuditEventError(f"{path} is NaN or infinite, which JSON cannot hold")
        if isinstance(value, (int, float)):
            self._plain(path, repr(value))
            return value
        if isinstance(value, str):
            return self._plain(path, value)
        raise AuditEventError(f"{path} has a value of type {type(value).__name__}; "
                              "events hold JSON values only (str, int, float, bool, None, lists, mappings)")

    @staticmethod
    def _card(path: str, value) -> str:
        digits = re.sub(r"[^0-9]", "", str(value)) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
        if not 12 <= len(digits) <= 19:
            raise AuditEventError(f"{path} is a card field and must hold a card number (12 to 19 digits)")
        return "****" + digits[-4:]


def _check_unicode(path: str, value: str) -> None:
    """Refuse a string with a lone surrogate (JSON ``"\\ud800"`` decodes to one): it has no UTF-8, so no line."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise AuditEventError(f"{path} holds a lone surrogate (not Unicode text), which an audit line cannot hold") \
            from None


def _key_from_environment() -> bytes:
    text = os.environ.get(KEY_VARIABLE)
    if not text:
        raise AuditEventError(f"${KEY_VARIABLE} is not set: it must hold the hex HMAC key that tokenizes "
                              f"national ids (at least {MIN_KEY_BYTES} bytes, e.g. `openssl rand -hex 32`)")
    try:
        return bytes.fromhex(text.strip())
    except ValueError:
        raise AuditEventError(f"${KEY_VARIABLE} is not hex (e.g. `openssl rand -hex 32`)") from None
