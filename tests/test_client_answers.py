"""The clients and `notary submit`/`status` against answers other than a plain 200: a notary stopping
mid-wait (503 with the acknowledged indices), a wrong port, a proxy's page, and missing input files.

A real local TCP server sends fixed bytes: the daemon's documented answer (notary/api.py) or a stranger's.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import pytest

from examples.fintech import quarterly
from notary.cli import main
from notary.client import AcknowledgedNotSealedError, AsyncHttpClient, ClientError, HttpClient
from tests.support import SoftwareSigner

# What api.py answers a ?wait=sealed request whose entries were not anchored before the daemon stopped.
STOPPED = json.dumps({"error": "stopping before entries 7..8 were anchored; do not submit again: fetch the proofs "
                      "by index later", "entries": [{"index": 7}, {"index": 8}]}).encode()


def http(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


@pytest.fixture
def answering():
    """``answering(reply)``: the URL of a server that answers every request with these bytes."""
    servers = []

    def start(reply: bytes) -> str:
        srv = socket.create_server(("127.0.0.1", 0))
        servers.append(srv)

        def loop():
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:  # closed at the end of the test
                    return
                with conn:
                    conn.recv(1 << 16)
                    conn.sendall(reply)

        threading.Thread(target=loop, daemon=True).start()
        return f"http://127.0.0.1:{srv.getsockname()[1]}"

    yield start
    for srv in servers:
        srv.close()


def test_wait_sealed_503_carries_the_acknowledged_indices(answering):
    url = answering(http("503 Service Unavailable", STOPPED))
    with pytest.raises(AcknowledgedNotSealedError, match="do not submit again") as err:
        HttpClient(url).submit([bytes(32), bytes(32)], wait_sealed=True)
    assert err.value.indices == [7, 8]

    async def submit():
        async with AsyncHttpClient(url) as client:
            await client.submit([bytes(32), bytes(32)], wait_sealed=True)

    with pytest.raises(AcknowledgedNotSealedError) as err:
        asyncio.run(submit())
    assert err.value.indices == [7, 8]
    # An ordinary 503 (back-pressure: nothing appended) stays a plain ClientError.
    busy = answering(http("503 Service Unavailable", b'{"error": "over max_unanchored_seals"}'))
    with pytest.raises(ClientError, match="over max_unanchored_seals") as err:
        HttpClient(busy).submit([bytes(32)])
    assert not isinstance(err.value, AcknowledgedNotSealedError)


def test_notary_submit_wait_sealed_lists_the_acknowledged_records_and_says_not_to_resubmit(answering, tmp_path,
                                                                                           capsys):
    log = tmp_path / "a.log"
    log.write_text("one\ntwo\n")
    assert main(["submit", "--url", answering(http("503 Service Unavailable", STOPPED)), "--wait-sealed",
                 str(log)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{log}:1\tindex 7\t(acknowledged, not sealed)",
                                f"{log}:2\tindex 8\t(acknowledged, not sealed)"]
    assert "do not submit them again" in err and "notary proof --index" in err and len(err.splitlines()) == 1


def test_quarterly_run_reports_a_manifest_acknowledged_but_not_sealed_as_in_the_log(answering, tmp_path,
                                                                                      monkeypatch, capsys):
    out = tmp_path / "pack"
    out.mkdir()
    (out / "SHA256SUMS").write_text("x  report.html\n")
    (tmp_path / "token").write_text("t\n")
    monkeypatch.setattr(quarterly, "notary", lambda *args: 0)  # the evidence and verify-pack steps passed
    stopped = json.dumps({"error": "stopping; do not submit again", "entries": [{"index": 41}]}).encode()
    code = quarterly.main(["--from", "2026-07-01", "--to", "2026-09-30", "--out", str(out),
                           "--notary-url", answering(http("503 Service Unavailable", stopped)),
                           "--token-file", str(tmp_path / "token")])
    err = capsys.readouterr().err
    assert code == quarterly.EX_TEMPFAIL
    assert "log entry 41" in err and "Do not run this again" in err and "not notarized" not in err
    assert (tmp_path / "pack.tlog-index").read_text() == "41\n"


@pytest.mark.parametrize("reply, said", [
    (b"SSH-2.0-OpenSSH_9.2\r\n", "did not answer in HTTP"),  # a wrong port
    (http("200 OK", b"<html></html>", "text/html"), "not the notary's JSON"),  # a proxy's page
    (http("502 Bad Gateway", b"<html></html>", "text/html"), "HTTP 502"),
])
@pytest.mark.parametrize("command", ["submit", "status"])
def test_an_answer_that_is_not_the_notarys_is_one_sentence(answering, tmp_path, capsys, reply, said, command):
    log = tmp_path / "a.log"
    log.write_text("a\n")
    args = [command, "--url", answering(reply)] + ([str(log)] if command == "submit" else [])
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"notary {command}: ") and said in err and len(err.splitlines()) == 1


def test_missing_input_files_are_one_sentence(tmp_path, capsys):
    assert main(["submit", str(tmp_path / "missing.log")]) == 1
    assert capsys.readouterr().err == f"notary submit: cannot read {tmp_path / 'missing.log'}: No such file or directory\n"
    for command in (["submit", "--digest", "00" * 32], ["status"], ["proof", "--index", "0"]):
        assert main([*command, "--dev-json", str(tmp_path / "dev.json")]) == 1
        assert "--dev-json" in capsys.readouterr().err
    (tmp_path / "dev.json").write_text("<html>")
    assert main(["status", "--dev-json", str(tmp_path / "dev.json")]) == 1
    assert "is not a dev stack's dev.json" in capsys.readouterr().err
    assert main(["status", "--token-file", str(tmp_path / "token")]) == 1
    assert "--token-file" in capsys.readouterr().err


def test_offline_commands_refuse_a_dev_json_that_is_not_an_object_and_an_absurd_retention(tmp_path, capsys):
    dev = tmp_path / "dev.json"
    dev.write_text("[1]")
    proof = tmp_path / "p.tlog-proof"
    proof.write_text("c2sp.org/tlog-proof@v1\n")
    log = tmp_path / "a.log"
    log.write_text("a\n")
    for command in (["verify", str(proof)], ["audit"], ["verify-log", str(log), "--source", "s"]):
        assert main([*command, "--dev-json", str(dev)]) == 2, command
        err = capsys.readouterr().err
        assert "is not a dev stack's dev.json" in err and "Traceback" not in err, err
    # Far beyond 100 years a seal's required lock end passes the year 9999 (it was an OverflowError traceback).
    vkey = str(SoftwareSigner.ed25519(b"\x07" * 32).verifier("log.example/a"))
    for days in ("3000000", "-1"):
        assert main(["audit", "--min-retention-days", days, "--vkey", vkey]) == 2
        assert "--min-retention-days is" in capsys.readouterr().err
