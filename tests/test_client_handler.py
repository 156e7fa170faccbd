"""NotaryHandler without a notary: real files, a real (absent) socket. With a daemon: tests/daemon/test_producer_client.py."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3

import pytest
import rfc8785

from notary.client import (HandlerError, NotAcknowledgedError, NotaryHandler, UnixClient, canonical_line,
                           line_digests)


@pytest.fixture
def nowhere(tmp_path):
    """A transport to a socket nobody listens on: the notary is down."""
    return UnixClient(tmp_path / "no-notary.sock", timeout=1)


def ledger(sink):
    with sqlite3.connect(str(sink) + ".notary") as db:
        return db.execute("SELECT line, digest, entry_index, refused_to_caller FROM lines ORDER BY line").fetchall()


def test_line_is_rfc8785_and_its_digest_is_the_records_digest(tmp_path, nowhere):
    sink = tmp_path / "audit.jsonl"
    h = NotaryHandler(sink, nowhere, mode="fail_open")
    document = {"b": [1, 2.5, "é\n"], "a": {"z": None, "y": True}}
    receipt = h.audit(document)
    h.close()
    assert canonical_line(document) == rfc8785.dumps(document)
    assert sink.read_bytes() == rfc8785.dumps(document) + b"\n"
    assert list(line_digests(sink)) == [(1, receipt.digest)] and receipt.index is None


def test_fail_closed_raises_through_the_logging_call_whatever_raiseExceptions(tmp_path, nowhere, monkeypatch):
    monkeypatch.setattr(logging, "raiseExceptions", False)
    sink = tmp_path / "audit.jsonl"
    h = NotaryHandler(sink, nowhere)
    logger = h.attach("test.fail_closed.raises")
    with pytest.raises(NotAcknowledgedError, match=r"audit.jsonl:1 was not acknowledged"):
        logger.info({"action": "approve"})
    h.close()
    # The line stays in the sink and the spool, flagged as refused to its caller.
    assert [(line, index, refused) for line, _, index, refused in ledger(sink)] == [(1, None, 1)]


def test_fail_open_returns_and_the_spool_survives_a_producer_restart(tmp_path, nowhere):
    sink = tmp_path / "audit.jsonl"
    h = NotaryHandler(sink, nowhere, mode="fail_open")
    logger = h.attach("test.fail_open.survives")
    for i in range(5):
        logger.info({"n": i})
    h.close()
    again = NotaryHandler(sink, nowhere, mode="fail_open")
    assert again.spool_depth == 5
    assert [(line, digest) for line, digest, _, _ in ledger(sink)] == list(line_digests(sink))
    again.close()


def test_mode_per_logger_longest_prefix_wins(tmp_path, nowhere):
    h = NotaryHandler(tmp_path / "a.jsonl", nowhere, modes={"app": "fail_open", "app.payments": "fail_closed"})
    assert [h.mode_for(n) for n in ("app.ui", "app.payments.refunds", "app", "other")] == \
        ["fail_open", "fail_closed", "fail_open", "fail_closed"]
    h.attach("app.ui").info({"click": 1})  # fail-open: returns with the notary down
    with pytest.raises(NotAcknowledgedError):
        h.attach("app.payments.refunds").info({"refund": 1})
    with pytest.raises(NotAcknowledgedError):
        h.attach("app.ui.admin", "fail_closed").info({"grant": 1})  # attach sets the logger's mode
    h.close()


def test_unknown_mode_is_refused(tmp_path, nowhere):
    with pytest.raises(ValueError, match="fail_closed, fail_open"):
        NotaryHandler(tmp_path / "a.jsonl", nowhere, mode="best_effort")


def test_spool_warns_and_counts_while_not_empty(tmp_path, nowhere, caplog):
    h = NotaryHandler(tmp_path / "audit.jsonl", nowhere, mode="fail_open")
    with caplog.at_level(logging.WARNING, logger="notary.client.handler"):
        h.audit({"n": 1})
        assert not h.drain(timeout=1.5)
    metrics = h.metrics_text()
    h.close()
    assert any("not yet acknowledged by the notary" in r.getMessage() for r in caplog.records)
    values = {line.split("{")[0]: float(line.rsplit(" ", 1)[1])
              for line in metrics.splitlines() if not line.startswith("#")}
    assert values["notary_producer_spool_lines"] == 1 and values["notary_producer_acknowledged_total"] == 0
    assert values["notary_producer_submit_failures_total"] >= 1
    assert values["notary_producer_oldest_spooled_age_seconds"] > 0


def test_plain_messages_become_documents_and_warnings_of_the_handler_stay_out_of_the_sink(tmp_path, nowhere):
    sink = tmp_path / "audit.jsonl"
    h = NotaryHandler(sink, nowhere, mode="fail_open")
    h.attach("test.plain").info("user %s logged in", "alice")
    h.attach("notary.client.handler")  # even if someone attaches it there, no feedback loop
    assert not h.drain(timeout=1.5)
    h.close()
    lines = sink.read_bytes().splitlines()
    assert len(lines) == 1 and b'"message":"user alice logged in"' in lines[0]


def test_lines_written_but_not_in_the_ledger_are_spooled_at_start(tmp_path, nowhere):
    # A crash between the sink's fsync and the ledger's commit leaves a line the ledger does not know.
    sink = tmp_path / "audit.jsonl"
    h = NotaryHandler(sink, nowhere, mode="fail_open")
    h.audit({"n": 1})
    h.close()
    with open(sink, "ab") as f:
        f.write(b'{"n":2}\n{"n":3}\n{"torn":')
    again = NotaryHandler(sink, nowhere, mode="fail_open")
    assert again.spool_depth == 3
    again.audit({"n": 4})
    again.close()
    assert sink.read_bytes() == b'{"n":1}\n{"n":2}\n{"n":3}\n{"n":4}\n'  # the torn line, never answered, cut off
    assert [(line, digest) for line, digest, _, _ in ledger(sink)] == list(line_digests(sink))


@pytest.mark.parametrize("altered, error", [
    (b'{"n":1}\n', "lines were removed"),  # the last line deleted
    (b'{"n":1}\n{"n":3}\n', "line 2 is not the line its ledger recorded"),  # the last line rewritten
])
def test_a_shortened_or_rewritten_sink_is_refused(tmp_path, nowhere, altered, error):
    sink = tmp_path / "audit.jsonl"
    h = NotaryHandler(sink, nowhere, mode="fail_open")
    h.audit({"n": 1})
    h.audit({"n": 2})
    h.close()
    sink.write_bytes(altered)
    with pytest.raises(HandlerError, match=error):
        NotaryHandler(sink, nowhere, mode="fail_open")


def test_one_handler_per_sink(tmp_path, nowhere):
    sink = tmp_path / "audit.jsonl"
    h = NotaryHandler(sink, nowhere, mode="fail_open")
    with pytest.raises(HandlerError, match="in use by another handler"):
        NotaryHandler(sink, nowhere, mode="fail_open")
    h.close()
    NotaryHandler(sink, nowhere, mode="fail_open").close()  # free again once closed


def test_a_failed_write_refuses_later_lines_until_reopened(tmp_path, nowhere):
    sink = tmp_path / "audit.jsonl"
    h = NotaryHandler(sink, nowhere, mode="fail_open")
    h.audit({"n": 1})
    os.close(h._file.fileno())  # the sink's descriptor goes bad: the next write fails like a dead disk
    with pytest.raises(HandlerError, match="failed to write a line"):
        h.audit({"n": 2})
    with pytest.raises(HandlerError, match="reopen it"):
        h.attach("test.failed.write").info({"n": 3})
    with contextlib.suppress(OSError):  # closing the already closed descriptor
        h.close()
    again = NotaryHandler(sink, nowhere, mode="fail_open")  # reconciles sink and ledger
    again.audit({"n": 4})
    again.close()
    assert [(line, digest) for line, digest, _, _ in ledger(sink)] == list(line_digests(sink))
    assert sink.read_bytes() == b'{"n":1}\n{"n":4}\n'
