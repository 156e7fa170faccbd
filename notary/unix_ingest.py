"""Local ingest over a unix socket: one digest per line in, one index per line out.

The source is the peer's uid (SO_PEERCRED), mapped to a name by
``[sources.unix.<name>] uid = N`` as configured when each batch of lines
arrives; an unknown uid is told so and disconnected (one answer a line, when
a reload removed it from under an open connection).
Lines that arrive together are submitted together (one durable commit), and
answers come back in order: the entry's index, or ``error: <reason>`` for a
malformed line (nothing is appended for it) and for every line of a batch
larger than ``limits.max_pending_entries``, or ``retry: <reason>`` when the
notary is over its bounds or the store failed to commit them (nothing was
appended).

A line ``lookup <digest>`` is answered ``found`` and the indices of this
source's entries that hold the digest, once every submission accepted before
it has its outcome (``Notary.find_all``): the producer handler asks so before
it sends again what it got no answer for. A run of digest lines between two
lookups is one submission, so a lookup sees the lines before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from notary.entry import encode_run, parse_digest_hex
from notary.errors import FormatError, NotaryError
from notary.sequencer import CommitUnknown, RetryLater, TooLarge

if TYPE_CHECKING:
    from notary.daemon import Notary

MAX_LINE = 256  # a digest line is 65 bytes; anything much longer is not one
READ_CHUNK = 1 << 16


# struct ucred (socket(7)): pid_t pid; uid_t uid; gid_t gid. uid_t and gid_t
# are unsigned: read as signed, a uid from 2**31 up would never match its source.
_UCRED = struct.Struct("iII")


def peer_uid(sock: socket.socket) -> int:
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return uid


class UnixIngest:
    """The listening unix socket; ``close`` stops it and removes its file (Python 3.11's server leaves it)."""

    def __init__(self, server: asyncio.AbstractServer, path: Path):
        self.server = server
        self.path = path
        self._inode = os.stat(path).st_ino

    def close(self) -> None:
        self.server.close()
        # Only the file this server made: another daemon may have bound the path since (its own store
        # is elsewhere, the socket path is not).
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == self._inode:
                self.path.unlink()


async def serve_unix(notary: Notary) -> UnixIngest:
    path = notary.config.unix_socket
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()
    server = await asyncio.start_unix_server(lambda r, w: _handle(notary, r, w), path=str(path))
    os.chmod(path, 0o660)  # who may connect is the socket's group; who they are is their uid
    return UnixIngest(server, path)


async def _handle(notary: Notary, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        uid = peer_uid(writer.get_extra_info("socket"))
        refusal = f"error: uid {uid} is not a configured source\n".encode()
        if uid not in notary.config.unix_peers:
            writer.write(refusal)
            await writer.drain()
            return
        pending = b""
        while True:
            chunk = await reader.read(READ_CHUNK)
            *lines, pending = (pending + chunk).split(b"\n")
            if not chunk and pending:  # the peer closed (or shut down sending) after a line without its newline
                lines.append(pending)
            if lines:  # the lines before a line too long are answered first: the answers stay in step with the lines
                # Looked up for each batch, so that a reload (SIGHUP) that removes or renames
                # the source applies to the connections already open too.
                source = notary.config.unix_peers.get(uid)
                if source is None:
                    writer.write(refusal * len(lines))
                    await writer.drain()
                    return
                writer.write(await _answer(notary, source, lines))
                await writer.drain()
            if len(pending) > MAX_LINE:
                writer.write(b"error: line too long, not a digest; closing\n")
                await writer.drain()
                return
            if not chunk:
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


LOOKUP = b"lookup "


async def _answer(notary: Notary, source: str, lines: list[bytes]) -> bytes:
    """The answers to ``lines``, in order: consecutive digest lines are one submission, lookups run in their place."""
    answers: list[bytes] = []
    start = 0
    while start < len(lines):
        lookup = lines[start].startswith(LOOKUP)
        end = start + 1
        while end < len(lines) and lines[end].startswith(LOOKUP) == lookup:
            end += 1
        answers += await (_lookups if lookup else _submission)(notary, source, lines[start:end])
        start = end
    return b"".join(answers)


def _parse(lines: list[bytes], strip: int = 0) -> tuple[list[bytes], list[int | str]]:
    """The digests of ``lines`` (each past its first ``strip`` bytes), and per line its position in them or an error."""
    digests: list[bytes] = []
    slots: list[int | str] = []
    for line in lines:
        try:
            digest = parse_digest_hex(line[strip:].strip().decode("ascii"))
        except (FormatError, UnicodeDecodeError) as exc:
            slots.append(f"error: {exc}")
            continue
        slots.append(len(digests))
        digests.append(digest)
    return digests, slots


async def _submission(notary: Notary, source: str, lines: list[bytes]) -> list[bytes]:
    digests, slots = _parse(lines)
    refused = None  # the answer of every digest line when the submission is refused
    first = 0
    if digests:
        try:
            first = await notary.submit(encode_run(digests, source))
        except RetryLater as exc:  # over the bounds, or the store failed to commit: nothing was appended
            refused = f"retry: {exc}"
        except (TooLarge, CommitUnknown) as exc:  # retrying never helps, or could append the lines twice
            refused = f"error: {exc}"
    return [f"{s if isinstance(s, str) else refused or first + s}\n".encode() for s in slots]


async def _lookups(notary: Notary, source: str, lines: list[bytes]) -> list[bytes]:
    """``found`` and the indices of this source's entries that hold the digest, after every earlier submission settled."""
    digests, slots = _parse(lines, len(LOOKUP))
    found: list[list[int]] = []
    failed = None
    if digests:
        try:
            found = await notary.find_all(digests, source)
        except NotaryError as exc:  # the store could not be read: the producer must not take it for "not there"
            failed = f"retry: the log could not be searched ({exc})"
    return [(s if isinstance(s, str) else failed or " ".join(["found", *map(str, found[s])])).encode() + b"\n"
            for s in slots]
