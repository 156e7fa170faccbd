"""notary.systemd: sd_notify(3) datagrams, abstract socket names, and a notify socket that is gone."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from notary import systemd


def test_notify_reaches_an_abstract_socket(monkeypatch):
    name = f"merkle-notary-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(10)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.notify("READY=1", "STATUS=serving") is True
        assert listener.recv(4096) == b"READY=1\nSTATUS=serving"


def test_a_notify_socket_that_is_gone_is_reported_not_raised(monkeypatch, tmp_path, caplog):
    """sd_notify(3) returns an error; it never takes the daemon down (READY=1 is sent after start-up)."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert systemd.notify("READY=1") is False
    assert "cannot notify systemd" in caplog.text and "READY" in caplog.text
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dead:  # bound, then closed: refused
        dead.bind(str(tmp_path / "closed.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "closed.sock"))
    assert systemd.notify("WATCHDOG=1") is False


def test_the_watchdog_keeps_pinging_after_a_ping_failed(monkeypatch, tmp_path):
    """A ping lost while the socket was away does not end the loop: the next one reaches systemd."""
    path = tmp_path / "notify.sock"
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "20000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)

    async def scenario() -> bytes:
        stop = asyncio.Event()
        loop_task = asyncio.create_task(systemd.watchdog_loop(stop))
        await asyncio.sleep(0.05)  # pings while nothing listens
        assert not loop_task.done(), loop_task.exception() if loop_task.done() else None
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
            listener.bind(str(path))
            listener.setblocking(False)
            message = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(listener, 4096), timeout=30)
        stop.set()
        await loop_task
        return message

    assert asyncio.run(scenario()) == b"WATCHDOG=1"


@pytest.mark.parametrize("usec,pid,expected", [
    ("30000000", None, 15.0),
    ("0", None, None),  # sd_watchdog_enabled(3): not an interval
    ("\u00b2", None, None),
    ("30000000", "1", None),  # meant for another process
])
def test_watchdog_interval(monkeypatch, usec, pid, expected):
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is None:
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_PID", pid)
    assert systemd.watchdog_interval() == expected
