"""Audit events: complete, correlated, redacted at construction; planted values never reach the sink."""

from __future__ import annotations

import datetime
import json
import re
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ulid import ULID

from notary.audit_events import (KEY_VARIABLE, AuditEvents, AuditEventError, contains_card_number,
                                 current_traceparent, luhn_valid)
from notary.client import NotaryHandler, UnixClient

KEY = bytes(range(32))
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
EVENTS = AuditEvents({"todo.create", "todo.delete", "login"}, hmac_key=KEY)
COMPLETE = dict(actor="alice", action="todo.create", target="todo/7", outcome="success")


def test_complete_event_is_stamped():
    before = datetime.datetime.now(datetime.timezone.utc)
    event = EVENTS.event(**COMPLETE)
    assert event["schema_version"] == 1
    assert event["actor"] == {"id": "alice"} and event["target"] == "todo/7" and event["outcome"] == "success"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["time"])
    stamped = datetime.datetime.strptime(event["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    assert before - datetime.timedelta(milliseconds=1) <= stamped <= datetime.datetime.now(datetime.timezone.utc)
    assert str(ULID.from_str(event["event_id"])) == event["event_id"]
    assert EVENTS.event(**COMPLETE)["event_id"] != event["event_id"]


def test_time_is_utc_milliseconds_and_naive_times_are_refused():
    paris = datetime.timezone(datetime.timedelta(hours=1))
    event = EVENTS.event(**COMPLETE, when=datetime.datetime(2026, 3, 1, 0, 30, 5, 123999, tzinfo=paris))
    assert event["time"] == "2026-02-28T23:30:05.123Z"
    with pytest.raises(AuditEventError, match="timezone-aware"):
        EVENTS.event(**COMPLETE, when=datetime.datetime(2026, 3, 1))


@pytest.mark.parametrize("missing", ["actor", "action", "target", "outcome"])
def test_incomplete_event_is_refused(missing):
    with pytest.raises(AuditEventError, match=f"needs {missing}"):
        EVENTS.event(**(COMPLETE | {missing: ""}))
    with pytest.raises(TypeError):
        EVENTS.event(**{k: v for k, v in COMPLETE.items() if k != missing})


def test_action_outside_the_vocabulary_and_unknown_outcome_are_refused():
    with pytest.raises(AuditEventError, match="'todo.purge' is not in the declared vocabulary"):
        EVENTS.event(**(COMPLETE | {"action": "todo.purge"}))
    with pytest.raises(AuditEventError, match="outcome must be one of denied, failure, success"):
        EVENTS.event(**(COMPLETE | {"outcome": "ok"}))


def test_delegation_is_recorded():
    event = EVENTS.event(**COMPLETE, on_behalf_of="bob")
    assert event["actor"] == {"id": "alice", "on_behalf_of": "bob"}


def test_correlation_ids_come_from_the_current_traceparent():
    token = current_traceparent.set(TRACEPARENT)
    try:
        assert EVENTS.event(**COMPLETE)["trace"] == {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                                                     "parent_id": "00f067aa0ba902b7"}
        other = "00-" + "a" * 32 + "-" + "b" * 16 + "-00"
        assert EVENTS.event(**COMPLETE, traceparent=other)["trace"]["trace_id"] == "a" * 32
    finally:
        current_traceparent.reset(token)
    assert "trace" not in EVENTS.event(**COMPLETE)


@pytest.mark.parametrize("header", [
    "00-" + "0" * 32 + "-00f067aa0ba902b7-01",  # all-zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01",  # all-zero parent id
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version 255 is invalid
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
    TRACEPARENT + "-extra",  # version 00 has exactly four fields
    "garbage",
])
def test_invalid_traceparent_is_ignored(header):
    assert "trace" not in EVENTS.event(**COMPLETE, traceparent=header)


def test_key_comes_from_the_environment_with_a_clear_error_when_unset(monkeypatch):
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    with pytest.raises(AuditEventError, match=rf"\${KEY_VARIABLE} is not set"):
        AuditEvents({"login"})
    monkeypatch.setenv(KEY_VARIABLE, "zz")
    with pytest.raises(AuditEventError, match="is not hex"):
        AuditEvents({"login"})
    monkeypatch.setenv(KEY_VARIABLE, "ab" * 8)
    with pytest.raises(AuditEventError, match="has 8 bytes, at least 16"):
        AuditEvents({"login"})
    monkeypatch.setenv(KEY_VARIABLE, "ab" * 32)
    assert AuditEvents({"login"}).hmac_key == b"\xab" * 32


def test_redaction_of_declared_fields():
    event = EVENTS.event(**COMPLETE, password="hunter2", api_key="k", login={"client_secret": "s", "user": "alice"},
                         card_number="4111 1111 1111 1111", ssn="123-45-6789")
    assert event["details"] == {"login": {"user": "alice"}, "card_number": "****1111",
                                "ssn": EVENTS.national_id_token("123456789")}
    # The token is keyed: same id, same token (joinable); another key, another token.
    assert EVENTS.national_id_token("123 45 6789") == event["details"]["ssn"]
    assert AuditEvents({"login"}, hmac_key=b"\x01" * 32).national_id_token("123-45-6789") != event["details"]["ssn"]


@pytest.mark.parametrize("field, value", [
    ("note", "paid with 4111-1111-1111-1111"),
    ("reference", 4111111111111111),
    ("comment", "ssn 123-45-6789"),
    ("who", "AB 12 34 56 C"),
])
def test_unknown_fields_that_look_sensitive_are_refused_without_echoing_the_value(field, value):
    with pytest.raises(AuditEventError) as err:
        EVENTS.event(**COMPLETE, **{field: value})
    assert f"details.{field}" in str(err.value) and str(value) not in str(err.value)


def test_identifiers_that_are_not_card_numbers_pass():
    # Epoch milliseconds and order numbers start with 1: no card network does (IIN 2-6).
    event = EVENTS.event(**COMPLETE, at_ms=1795296253118, order="1000000000009")
    assert event["details"] == {"at_ms": 1795296253118, "order": "1000000000009"}
    assert luhn_valid("1000000000009") and not contains_card_number("1000000000009")


# -- Hypothesis: whatever is planted, the sink's bytes never hold it ------------

@st.composite
def card_numbers(draw):
    """A Luhn-valid number of a card network (first digit 2-6), 13-19 digits, maybe grouped."""
    length = draw(st.integers(13, 19))
    body = [draw(st.integers(2, 6))] + draw(st.lists(st.integers(0, 9), min_size=length - 2, max_size=length - 2))
    for check in range(10):
        if luhn_valid("".join(map(str, body + [check]))):
            break
    digits = "".join(map(str, body + [check]))
    sep = draw(st.sampled_from(["", " ", "-"]))
    return sep.join(digits[i:i + 4] for i in range(0, len(digits), 4))


ssns = st.builds(lambda a, b, c, sep: f"{a:03d}{sep}{b:02d}{sep}{c:04d}",
                 st.integers(1, 899), st.integers(1, 99), st.integers(1, 9999), st.sampled_from(["-", " "]))
secrets = st.text(string.ascii_letters + string.digits, min_size=12, max_size=40).map(lambda s: "pw-" + s)
secret_fields = st.sampled_from(["password", "Password", "new_password", "client_secret", "api_key", "apiKey",
                                 "access_token", "private_key", "pin", "cvv"])
card_fields = st.sampled_from(["card", "card_number", "cardNumber", "pan", "credit_card"])
id_fields = st.sampled_from(["ssn", "national_id", "nationalId", "tax_id"])
free_text = st.text(string.ascii_letters + " ", max_size=20)


def _digits(text: str) -> str:
    return re.sub(r"[^0-9]", "", text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(secret=secrets, secret_field=secret_fields, card=card_numbers(), card_field=card_fields, ssn=ssns,
       id_field=id_fields, text=free_text, nested=st.booleans(), plant_in=st.sampled_from(["note", "target", "actor"]))
def test_planted_secrets_cards_and_national_ids_never_reach_the_sink(secret, secret_field, card, card_field, ssn,
                                                                     id_field, text, nested, plant_in):
    with tempfile.TemporaryDirectory() as tmp:
        sink = Path(tmp) / "audit.jsonl"
        handler = NotaryHandler(sink, UnixClient(Path(tmp) / "absent.sock", timeout=1), mode="fail_open")
        logger = handler.attach("test.audit.planted")
        try:
            details = {secret_field: secret, card_field: card, id_field: ssn, "text": text}
            logger.info(EVENTS.event(**COMPLETE, **({"form": details} if nested else details)))
            # The same values where no field declares them: refused, nothing written.
            for planted in (card, ssn):
                fields = COMPLETE | ({"note": f"{text} {planted}"} if plant_in == "note" else {plant_in: planted})
                with pytest.raises(AuditEventError) as err:
                    logger.info(EVENTS.event(**fields))
                assert planted not in str(err.value)
        finally:
            handler.close()
        data = sink.read_bytes()
    assert data.count(b"\n") == 1
    event = json.loads(data)
    for planted in (secret, card, _digits(card), ssn, _digits(ssn)):
        assert planted.encode() not in data
    form = event["details"]["form"] if nested else event["details"]
    assert form[card_field] == "****" + _digits(card)[-4:] and form[id_field].startswith("hmac-sha256:")


@pytest.mark.parametrize("where, value, error", [
    ("amount", 2**53, "beyond ±"),
    ("amount", -(2**60), "beyond ±"),
    ("ratio", float("nan"), "NaN or infinite"),
    ("ratio", float("-inf"), "NaN or infinite"),
    ("title", "\ud800", "lone surrogate"),  # what JSON "\ud800" in a request body decodes to
    ("nested", {"\udc80": 1}, "lone surrogate"),
    ("ssn", "12\ud800", "lone surrogate"),
])
def test_values_rfc8785_cannot_write_are_refused_naming_the_field(where, value, error):
    with pytest.raises(AuditEventError, match=error) as err:
        EVENTS.event(**COMPLETE, **{where: value})
    assert f"details.{where}" in str(err.value)
    with pytest.raises(AuditEventError, match="target holds a lone surrogate"):
        EVENTS.event(**{**COMPLETE, "target": "todo/\ud800"})
    assert EVENTS.event(**COMPLETE, amount=2**53 - 1, low=-(2**53 - 1))["details"] == \
        {"amount": 2**53 - 1, "low": -(2**53 - 1)}
