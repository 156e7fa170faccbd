"""The unix socket's answers: one line per line sent, in order (notary/unix_ingest.py, in process)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3

import pytest

from notary.entry import Entry
from tests.inprocess import UNIX_SOURCE, auth, digest_hex, running


async def exchange(path, data: bytes) -> list[str]:
    """Send ``data``, end the sending side (SHUT_WR), and return every answer line until the notary closes."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(data)
    writer.write_eof()
    answer = await reader.read()
    writer.close()
    return answer.decode().splitlines()


def lines(*numbers: int) -> bytes:
    return "".join(digest_hex(i) + "\n" for i in numbers).encode()


def test_more_lines_at_once_than_may_wait_are_errors_not_retries(tmp_path):
    async def main():
        async with running(tmp_path, unix_uid=os.getuid(), max_request_digests=2, max_pending_entries=2) as (notary, _):
            answers = await exchange(tmp_path / "s.sock", lines(1, 2, 3))
            assert answers == ["error: 3 entries in one submission, more than may wait to be written at once "
                               "(limits.max_pending_entries, 2); send fewer at a time"] * 3
            assert notary.sequencer.size == 0
            assert await exchange(tmp_path / "s.sock", lines(1, 2)) == ["0", "1"]

    asyncio.run(main())


@pytest.mark.slow  # two commits, each failing after SQLite's 5 s busy timeout
def test_a_failed_commit_is_answered_retry_on_both_protocols_and_appends_nothing(tmp_path):
    """Another process holds log.db's write lock past SQLite's busy timeout (5 s): an operator's shell, a backup tool."""
    async def main():
        async with running(tmp_path, unix_uid=os.getuid()) as (notary, client):
            other = sqlite3.connect(tmp_path / "data" / "log.db", isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
            try:
                http = asyncio.ensure_future(client.post("/v1/entries", json={"digests": [digest_hex(3)]}, headers=auth()))
                answers = await asyncio.wait_for(exchange(tmp_path / "s.sock", lines(1, 2)), 30)
                r = await http
            finally:
                other.rollback()
                other.close()
            assert len(answers) == 2 and all(a.startswith("retry: the log store did not commit the entries (") for a in answers)
            assert r.status == 503 and r.headers["Retry-After"] == "5"
            error = (await r.json())["error"]
            assert error.startswith("the log store did not commit the entries (") and "nothing was appended" in error
            assert notary.sequencer.size == 0
            # The operator sees it: a counter, and /healthz failing until a commit succeeds again.
            metrics = (await (await client.get("/metrics")).text()).splitlines()
            failures = next(float(m.split()[1]) for m in metrics if m.startswith("notary_commit_failures_total "))
            assert failures >= 1  # one commit, or two: the requests may share one
            r = await client.get("/healthz")
            assert r.status == 503 and "committing entries to the log store is failing" in await r.text()
            assert await exchange(tmp_path / "s.sock", lines(1, 2)) == ["0", "1"]
            assert (await client.get("/healthz")).status == 200

    asyncio.run(main())


def test_a_last_line_without_its_newline_is_answered_at_the_end(tmp_path):
    async def main():
        async with running(tmp_path, unix_uid=os.getuid()) as (notary, _):
            assert await exchange(tmp_path / "s.sock", lines(1) + digest_hex(2).encode()) == ["0", "1"]
            assert await exchange(tmp_path / "s.sock", lines(3) + b"not-a-digest") == [
                "2", "error: digest 'not-a-digest' is not 64 hex digits"]

    asyncio.run(main())


def test_the_lines_before_a_line_too_long_are_answered_before_the_connection_closes(tmp_path):
    async def main():
        async with running(tmp_path, unix_uid=os.getuid()) as (notary, _):
            answers = await exchange(tmp_path / "s.sock", lines(1, 2) + b"x" * 300)
            assert answers == ["0", "1", "error: line too long, not a digest; closing"]
            assert notary.sequencer.size == 2

    asyncio.run(main())


def test_a_reload_that_removes_or_renames_the_source_applies_to_an_open_connection(tmp_path):
    async def main():
        uid = os.getuid()
        async with running(tmp_path, unix_uid=uid) as (notary, _):
            reader, writer = await asyncio.open_unix_connection(str(tmp_path / "s.sock"))

            async def send(*numbers: int) -> list[str]:
                writer.write(lines(*numbers))
                return [(await reader.readline()).decode().rstrip("\n") for _ in numbers]

            def reload(unix_peers: dict[int, str]) -> None:  # what SIGHUP does to the sources (notary/daemon.py, _reload)
                notary.config = dataclasses.replace(notary.config, unix_peers=unix_peers)

            assert await send(1) == ["0"]
            reload({uid: "renamed"})
            assert await send(2) == ["1"]
            assert await notary.writer.run(lambda s: [s.entry(i) for i in (0, 1)]) == [
                Entry(bytes.fromhex(digest_hex(1)), UNIX_SOURCE).encode(), Entry(bytes.fromhex(digest_hex(2)), "renamed").encode()]
            reload({})
            assert await send(3, 4) == [f"error: uid {uid} is not a configured source"] * 2
            assert await reader.read() == b""  # and closed
            writer.close()
            assert notary.sequencer.size == 2

    asyncio.run(main())


def test_peer_uid_reads_uid_t_unsigned():
    """struct ucred's uid is a uid_t: a uid from 2**31 up (valid, up to 2**32 - 2) must match its configured source."""
    import socket
    import struct

    from notary.unix_ingest import peer_uid

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert peer_uid(a) == os.getuid()  # the real SO_PEERCRED

    class Credentials:  # what the kernel hands back for a peer of uid 3,000,000,000
        def getsockopt(self, level, option, size):
            return struct.pack("iII", 4242, 3_000_000_000, 3_000_000_000)[:size]

    assert peer_uid(Credentials()) == 3_000_000_000


def test_the_socket_file_is_removed_at_stop_unless_another_server_took_the_path(tmp_path):
    async def main():
        async with running(tmp_path, unix_uid=os.getuid()) as (notary, _):
            path = notary.config.unix_socket
            assert path.is_socket()
        assert not path.exists()  # a producer finds no socket, rather than one nobody listens on

        async with running(tmp_path, unix_uid=os.getuid()) as (notary, _):
            path.unlink()  # another server binds the path meanwhile (an operator's restart, another instance)
            other = await asyncio.start_unix_server(lambda r, w: w.close(), path=str(path))
        assert path.is_socket()  # not ours: left alone
        other.close()

    asyncio.run(main())


def test_lookup_lines_answer_in_their_place_with_this_sources_entries_only(tmp_path):
    async def main():
        async with running(tmp_path, unix_uid=os.getuid()) as (notary, client):
            r = await client.post("/v1/entries", json={"digests": [digest_hex(1)]}, headers=auth())  # another source
            assert (await r.json())["entries"] == [{"index": 0}]
            sent = (lines(1) + f"lookup {digest_hex(1)}\nlookup {digest_hex(9)}\nlookup xyz\n".encode()
                    + lines(1) + f"lookup {digest_hex(1).upper()}\n".encode())
            answers = await exchange(tmp_path / "s.sock", sent)
            # The lookup after the first digest line sees its commit; the HTTP source's entry 0 is not this source's.
            assert answers == ["1", "found 1", "found", "error: digest 'xyz' is not 64 hex digits", "2", "found 1 2"]
            assert notary.sequencer.size == 3

    asyncio.run(main())
