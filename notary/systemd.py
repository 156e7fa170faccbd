"""The systemd notify protocol (sd_notify(3)): READY=1, WATCHDOG=1, STOPPING=1, STATUS=.

A datagram to the unix socket named by $NOTIFY_SOCKET (a leading '@' means
the abstract namespace). Without $NOTIFY_SOCKET nothing is sent, so the
daemon runs the same outside systemd. As sd_notify(3), a message that cannot
be sent is reported, never raised: the daemon serves on, and a missed
WATCHDOG=1 is sent again at the next interval.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

log = logging.getLogger("notary.systemd")


def notify(*fields: str) -> bool:
    """Send the fields as one message; return whether it reached a notify socket."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode("utf-8"))
    except OSError as exc:  # the socket is gone (systemd re-executing, a container without it)
        log.warning("cannot notify systemd at %s (%s): %s", os.environ.get("NOTIFY_SOCKET"),
                    " ".join(f.partition("=")[0] for f in fields), exc.strerror or exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Half of $WATCHDOG_USEC in seconds (systemd's advice), if the watchdog is on for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    # As sd_watchdog_enabled(3): 0 is not an interval (it would ping in a busy loop).
    if not usec or not (usec.isascii() and usec.isdigit()) or int(usec) == 0 or (pid and pid != str(os.getpid())):
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
