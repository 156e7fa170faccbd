"""The systemd notify protocol (sd_notify(3)): READY=1, WATCHDOG=1, STOPPING=1, STATUS=.

A datagram to the unix socket named by $NOTIFY_SOCKET (a leading '@' means
the abstract namespace). Without $NOTIFY_SOCKET nothing is sent, so the
daemon runs the same outside systemd.
"""

from __future__ import annotations

import asyncio
import os
import socket


def notify(*fields: str) -> bool:
    """Send the fields as one message; return whether a notify socket was there."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall("\n".join(fields).encode("utf-8"))
    return True


def watchdog_interval() -> float | None:
    """Half of $WATCHDOG_USEC in seconds (systemd's advice), if the watchdog is on for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


async def watchdog_loop(stop: asyncio.Event) -> None:
    """Ping the watchdog while the event loop is alive and responsive."""
    interval = watchdog_interval()
    if interval is None:
        return
    while not stop.is_set():
        notify("WATCHDOG=1")
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except TimeoutError:
            pass
