"""NotaryHandler without a notary: real files, a real (absent) socket. With a daemon: tests/daemon/test_producer_client.py."""

from __future__ import annotations

import contextlib
import logging
import logging.config
import os
import shutil
import signal
import sqlite3
import threading
import time

import pytest
import rfc8785

from notary.client import (ClientError, HandlerError, NotAcknowledgedError, NotaryHandler, UnixClient, canonical_line,
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


class Numbering:
    """An in-process notary: hands out consecutive indices, after ``delay`` seconds (a slow or stuck notary)."""

    def __init__(self, delay: float = 0.0, timeout: float = 60.0):
        self.delay, self.timeout, self.next = delay, timeout, 0

    def submit_indices(self, digests):
        time.sleep(self.delay)
        first, self.next = self.next, self.next + len(digests)
        return list(range(first, first + len(digests)))


class TimesOut:
    """A notary that never answers: each submission fails after the transport's timeout."""

    timeout = 1.0

    def submit_indices(self, digests):
        time.sleep(self.timeout)
        raise ClientError("notary at http://notary:8640 cannot be reached: timed out")


def test_logging_configuration_cannot_silence_a_fail_closed_record(tmp_path):
    sink = tmp_path / "audit.jsonl"
    h = NotaryHandler(sink, Numbering())
    audit = h.attach("test.silenced.audit")
    logging.disable(logging.CRITICAL)
    try:
        audit.info({"n": 1})
        logging.getLogger("test.silenced.audit").disabled = True  # what dictConfig does to loggers it does not name
        audit.info({"n": 2})
    finally:
        logging.disable(logging.NOTSET)
        logging.getLogger("test.silenced.audit").disabled = False
    assert [(line, index) for line, _, index, _ in ledger(sink)] == [(1, 0), (2, 1)]
    # dictConfig and fileConfig close every handler: the call raises rather than returning unrecorded.
    # (disable_existing_loggers: False keeps the loggers of the tests that run after this one working.)
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    with pytest.raises(HandlerError, match="configure logging before creating the audit handler"):
        audit.info({"n": 3})
    assert sink.read_bytes().count(b"\n") == 2


def test_a_handler_used_after_fork_raises_in_the_child(tmp_path):
    sink = tmp_path / "audit.jsonl"
    h = NotaryHandler(sink, Numbering(), mode="fail_open")
    h.audit({"n": 1})
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # a worker forked from a preloaded application
        signal.alarm(10)  # a deadlock in the child ends it, and the test fails rather than hangs
        try:
            h.audit({"worker": 1})
            os.write(wr, b"returned")
        except HandlerError as exc:
            os.write(wr, str(exc).encode())
        h.close()  # logging.shutdown at the worker's exit: must not touch the parent's ledger
        os._exit(0)
    os.close(wr)
    os.waitpid(pid, 0)
    with os.fdopen(rd) as f:
        child = f.read()
    assert f"created in process {os.getpid()} before a fork" in child and "post_fork" in child
    h.audit({"n": 2})
    assert h.drain(5)
    h.close()
    assert sink.read_bytes() == b'{"n":1}\n{"n":2}\n'
    assert [(line, digest, index) for line, digest, index, _ in ledger(sink)] == \
        [(n, d, n - 1) for n, d in line_digests(sink)]


class Held:
    """An in-process notary that holds each submission until released."""

    timeout = 60.0

    def __init__(self):
        self.entered, self.release, self.next = threading.Event(), threading.Event(), 0
        self.answered = threading.Event()  # a submission came back (released, or held for 30 s)

    def submit_indices(self, digests):
        self.entered.set()
        self.release.wait(30)
        first, self.next = self.next, self.next + len(digests)
        self.answered.set()
        return list(range(first, first + len(digests)))


def test_a_fail_open_call_does_not_wait_for_a_fail_closed_one(tmp_path):
    notary = Held()
    h = NotaryHandler(tmp_path / "audit.jsonl", notary)
    payments, ui = h.attach("test.wait.payments"), h.attach("test.wait.ui", "fail_open")
    t = threading.Thread(target=payments.info, args=({"pay": 1},))
    t.start()
    try:
        assert notary.entered.wait(10), "the fail-closed call never reached the notary"
        u = threading.Thread(target=ui.info, args=({"click": 1},))
        u.start()
        u.join(10)
        # The fail-open call came back while the fail-closed one was still held at the notary.
        assert not u.is_alive() and t.is_alive()
    finally:
        notary.release.set()
        t.join()
    h.close()


def test_fail_closed_callers_wait_at_most_the_transport_timeout_however_many(tmp_path):
    """Each caller gives up at its own deadline (the transport's timeout), not when the notary answers."""
    notary = Held()
    notary.timeout = 0.2
    h = NotaryHandler(tmp_path / "audit.jsonl", notary)
    audit = h.attach("test.wait.concurrent")
    refused = []

    def call():
        try:
            audit.info({"action": "x"})
        except NotAcknowledgedError as exc:
            refused.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)  # (the notary holds a submission for 30 s unless released)
        # All four were refused while the notary still held the submission: none waited for its answer.
        assert not any(t.is_alive() for t in threads) and len(refused) == 4
        assert notary.entered.is_set() and not notary.answered.is_set()
    finally:
        notary.release.set()
        for t in threads:
            t.join()
        h.close()


def test_drain_returns_at_its_timeout_while_a_submission_hangs(tmp_path):
    notary = Held()
    h = NotaryHandler(tmp_path / "audit.jsonl", notary, mode="fail_open")
    h.audit({"n": 1})
    try:
        assert notary.entered.wait(10), "the submission never reached the notary"
        assert not h.drain(timeout=0.5)
        assert not notary.answered.is_set()  # drain came back while the submission still hung
    finally:
        notary.release.set()
    assert h.drain(timeout=20)
    h.close()


def test_a_line_whose_caller_got_HandlerError_is_marked_refused_when_reconciled(tmp_path):
    sink = tmp_path / "audit.jsonl"
    h = NotaryHandler(sink, Numbering())
    h.audit({"n": 1})
    h._db.execute("PRAGMA busy_timeout = 100")
    other = sqlite3.connect(str(sink) + ".notary", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the ledger cannot be written (as with a full disk), after the sink was
    with pytest.raises(HandlerError, match="failed to write a line"):
        h.audit({"action": "todo.delete", "outcome": "success"})  # the caller is told: not recorded
    other.execute("ROLLBACK")
    other.close()
    h.close()
    again = NotaryHandler(sink, Numbering())
    assert again.drain(5)
    again.close()
    assert [(line, refused) for line, _, _, refused in ledger(sink)] == [(1, 0), (2, 1)]


@pytest.mark.parametrize("content", [b"first\r\nsecond\r\n", b"a\rb\nc\n"])
def test_an_adopted_sink_is_split_into_lines_as_line_digests_splits_it(tmp_path, nowhere, content):
    sink = tmp_path / "audit.jsonl"
    sink.write_bytes(content)  # an existing log, without a ledger: every line spooled, none refused
    NotaryHandler(sink, nowhere, mode="fail_open").close()
    assert [(line, digest, refused) for line, digest, _, refused in ledger(sink)] == \
        [(n, d, 0) for n, d in line_digests(sink)]


def test_only_the_handlers_own_loggers_are_kept_out_of_the_sink(tmp_path):
    sink = tmp_path / "audit.jsonl"
    h = NotaryHandler(sink, Numbering())
    h.attach("notary.clientportal.audit").info({"action": "x"})
    h.attach("notary.client").info({"action": "dropped"})
    h.attach("notary.client.handler").info({"action": "dropped"})
    h.close()
    assert sink.read_bytes() == b'{"action":"x"}\n'


@pytest.mark.parametrize("rotate", ["create", "copytruncate"])
def test_a_rotated_sink_is_refused(tmp_path, rotate):
    sink, old = tmp_path / "audit.jsonl", tmp_path / "audit.jsonl.1"
    h = NotaryHandler(sink, Numbering())
    h.audit({"n": 1})
    if rotate == "create":
        sink.rename(old)
        sink.touch()
    else:
        shutil.copy(sink, old)
        os.truncate(sink, 0)
    with pytest.raises(HandlerError, match="never rotate a sink"):
        h.audit({"n": 2})
    h.close()
    assert old.read_bytes() == b'{"n":1}\n' and sink.read_bytes() == b""
    with pytest.raises(HandlerError, match="or it was rotated"):
        NotaryHandler(sink, Numbering())


@pytest.mark.parametrize("value", [2**53, -(2**53), float("nan"), float("inf"), "\ud800", {"\udc80": 1}, b"x"])
def test_a_value_rfc8785_cannot_represent_is_a_HandlerError(tmp_path, value):
    sink = tmp_path / "audit.jsonl"
    h = NotaryHandler(sink, Numbering(), mode="fail_open")
    with pytest.raises(HandlerError, match="cannot be written as RFC 8785 JSON"):
        h.attach("test.unrepresentable").info({"value": value})
    h.audit({"n": 1})  # nothing was written: the handler goes on
    h.close()
    assert sink.read_bytes() == b'{"n":1}\n'
