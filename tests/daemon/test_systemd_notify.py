"""The systemd notify protocol against a real NOTIFY_SOCKET listener: READY=1 only once serving,
WATCHDOG=1 while alive, STOPPING=1 on SIGTERM, and SIGHUP reloads the sources."""

from __future__ import annotations

import hashlib
import re
import socket
import time
import urllib.request

from notary.client import ClientError, HttpClient
from notary.config import token_hash


def receive_until(sock: socket.socket, pattern: str, timeout: float = 60) -> list[str]:
    """Datagrams received until one contains ``pattern``."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if pattern in got[-1]:
            return got
    raise AssertionError(f"no {pattern!r} in {got}")


def test_notify_ready_watchdog_stopping(daemon_factory, tmp_path):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        d = daemon_factory("sd", max_age=0.2)
        d.start(wait=False, NOTIFY_SOCKET=str(path), WATCHDOG_USEC="300000")
        messages = receive_until(listener, "READY=1")
        # READY=1 comes only when the daemon serves: the store is recovered, the HSM session open.
        with urllib.request.urlopen(d.url + "/healthz", timeout=5) as resp:
            assert resp.status == 200
        assert any(m.startswith("READY=1") and "STATUS=serving dev.notary.localhost/log" in m for m in messages)
        receive_until(listener, "WATCHDOG=1", timeout=2)
        receive_until(listener, "WATCHDOG=1", timeout=2)  # and again, while alive
        d.client().submit([hashlib.sha256(b"sd").digest()])
        d.process.send_signal(15)
        receive_until(listener, "STOPPING=1", timeout=10)
        assert d.process.wait(60) == 0
        d.process = None
        assert "sealed tree size" in d.log_tail(5) or "anchored tree size" in d.log_tail(5)


def test_sighup_reloads_sources(daemon_factory, stack):
    d = daemon_factory("hup", max_age=0.2).start()
    newcomer = HttpClient(d.url, "token-of-a-new-service", timeout=10)
    try:
        newcomer.submit([hashlib.sha256(b"hup").digest()])
        raise AssertionError("an unknown token was accepted")
    except ClientError as exc:
        assert "HTTP 401" in str(exc)
    text = d.config_path.read_text()
    text += f'\n[sources.http.new-service]\ntoken_sha256 = "{token_hash("token-of-a-new-service").hex()}"\n'
    d.config_path.write_text(text)
    d.process.send_signal(1)  # SIGHUP
    deadline = time.monotonic() + 20
    while "reloaded:" not in d.log_tail(5) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert re.search(r"reloaded: 3 sources, 1 active keys", d.log_tail(5)), d.log_tail(5)
    answer = newcomer.submit([hashlib.sha256(b"hup").digest()])
    assert answer[0]["index"] >= 0
    assert d.stop() == 0


def test_key_rotation_through_sighup(daemon_factory, stack):
    """Generate and activate a second key, HUP: new seals carry both signatures and the key events are in the log.
    Checkpoints sealed before still verify with the old key alone."""
    import subprocess
    import sys

    from notary.checkpoint import verify_signed_checkpoint
    from notary.entry import parse_entry
    from notary.tlogproof import parse_tlog_proof

    d = daemon_factory("rot", max_age=0.2).start()
    client = d.client()
    before = client.submit([hashlib.sha256(b"rot-before").digest()], wait_sealed=True)[0]
    old_keys = d.vkeys()
    assert len(old_keys) == 1
    hsm = ["--token=notary-dev", f"--pin=file:{stack.data_dir / 'hsm' / 'user.pin'}", f"--keyring={stack.keyring_path}"]
    run = lambda *args: subprocess.run([sys.executable, "-m", "notary.cli", "keys", *args], env=stack.env(),  # noqa: E731
                                       capture_output=True, text=True, check=True)
    run("generate", "--label=dev-key-2", *hsm)
    run("activate", "dev-key-2", *hsm)
    d.process.send_signal(1)
    deadline = time.monotonic() + 20
    while "reloaded:" not in d.log_tail(5) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "2 active keys, 2 new key events logged" in d.log_tail(5), d.log_tail(5)

    after = client.submit([hashlib.sha256(b"rot-after").digest()], wait_sealed=True)[0]
    new_keys = d.vkeys()
    proof = parse_tlog_proof(after["proof"])
    assert len(proof.signed.note.signatures) == 2  # the overlap: both keys sign
    _, signed_by = verify_signed_checkpoint(proof.signed.encode(), new_keys)
    assert len(signed_by) == 2
    # The old proof still verifies with the key that signed it.
    verify_signed_checkpoint(parse_tlog_proof(before["proof"]).signed.encode(), old_keys)
    # The key events are entries of the log itself, from the keyring's source.
    sources = [parse_entry(parse_tlog_proof(client.proof(index=i)).entry).source
               for i in range(after["index"] - 2, after["index"])]
    assert sources == ["notary/keyring", "notary/keyring"]
    assert d.stop() == 0


def test_sigterm_seals_and_anchors_what_was_accepted(daemon_factory):
    d = daemon_factory("term", max_age=30, max_entries=100000).start()  # no batch would close on its own
    index = d.client().submit([hashlib.sha256(b"term").digest()])[0]["index"]
    assert d.stop() == 0
    import sqlite3

    db = sqlite3.connect(d.data_dir / "seals.db")
    rows = db.execute("SELECT tree_size, receipt IS NOT NULL FROM seals ORDER BY tree_size DESC LIMIT 1").fetchall()
    db.close()
    assert rows == [(index + 1, 1)], f"last seal and whether it is anchored: {rows}"
