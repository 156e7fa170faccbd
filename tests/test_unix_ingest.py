"""The unix socket's answers: one line per line sent, in order (notary/unix_ingest.py, in process)."""

from __future__ import annotations

import asyncio
import os

from tests.inprocess import digest_hex, running


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
