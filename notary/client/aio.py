"""The asyncio client: the same requests as ``notary.client.sync``, over aiohttp or the unix socket.

Request encoding and answer decoding are the synchronous client's
(``submit_request``, ``proof_path``, ``answer_body``, ``submit_answer``,
``health_answer``, ``unix_indices``), so
both clients read the notary's answers the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from notary.client.sync import (ClientError, answer_body, health_answer, proof_path, submit_answer, submit_request,
                                unix_indices, unix_request)


class AsyncHttpClient:
    """``async with AsyncHttpClient(url, token) as client: await client.submit([...])``.

    One aiohttp session per client, opened on first use and closed by
    ``close()`` (or leaving the ``async with`` block).
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AsyncHttpClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            async with self._session.request(method, self.url + path, data=body, headers=headers) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise ClientError(f"notary at {self.url} cannot be reached: {reason}") from None

    async def submit(self, digests: Sequence[bytes], *, wait_sealed: bool = False) -> list[dict]:
        path, body = submit_request(digests, wait_sealed)
        return submit_answer(*await self._request("POST", path, body))

    async def proof(self, *, digest: bytes | None = None, index: int | None = None, size: int | None = None) -> str:
        return answer_body(*await self._request("GET", proof_path(digest, index, size)), "proof").decode("utf-8")

    async def checkpoint(self) -> str:
        return answer_body(*await self._request("GET", "/checkpoint"), "checkpoint").decode("utf-8")

    async def healthz(self) -> tuple[int, dict]:
        return health_answer(*await self._request("GET", "/healthz"))

    async def metrics(self) -> str:
        return answer_body(*await self._request("GET", "/metrics"), "metrics").decode("utf-8")


async def submit_unix_async(path: Path, digests: Sequence[bytes], timeout: float = 60.0) -> list[int]:
    """Submit over the unix socket from asyncio; return the indices in order."""

    async def exchange() -> bytes:
        reader, writer = await asyncio.open_unix_connection(str(path))
        try:
            writer.write(unix_request(digests))
            await writer.drain()
            writer.write_eof()
            return await reader.read()
        finally:
            writer.close()

    try:
        data = await asyncio.wait_for(exchange(), timeout)
    except asyncio.TimeoutError:
        raise ClientError(f"notary socket {path}: no answer within {timeout} s") from None
    except OSError as exc:
        raise ClientError(f"notary socket {path} cannot be used: {exc.strerror or exc}") from None
    return unix_indices(path, data, len(digests))
