"""Fixtures for the anchors tests: real dev TSAs, real SeaweedFS, all on 127.0.0.1.

Servers run on one event loop in a background thread for the session, so a
test drives its client with ``asyncio.run`` in the main thread while the TSA
answers from the other loop. SeaweedFS starts once per session.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from anchors.devs3 import SeaweedS3
from anchors.devtsa import QUERY_CONTENT_TYPE, REPLY_CONTENT_TYPE, DevTsa, RunningServer, serve
from anchors.tsa import TsaEndpoint, load_roots



class BackgroundLoop:
    """An asyncio loop in a daemon thread; ``run(coro)`` waits for its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-servers", daemon=True)
        self._thread.start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@dataclass
class Tsa:
    """A dev TSA serving on the background loop."""

    tsa: DevTsa
    server: RunningServer

    @property
    def url(self) -> str:
        return self.server.url

    def endpoint(self, **options) -> TsaEndpoint:
        """An endpoint for this TSA, trusting this TSA's own root."""
        return TsaEndpoint(self.url, load_roots(self.tsa.root_cert_path), **options)


@pytest.fixture(scope="session")
def servers():
    loop = BackgroundLoop()
    running: list[RunningServer] = []

    def start(app: web.Application) -> RunningServer:
        server = loop.run(serve(app))
        running.append(server)
        return server

    yield start
    for server in running:
        loop.run(server.close())
    loop.close()


def _dev_tsa(servers, data_dir: Path) -> Tsa:
    tsa = DevTsa(data_dir)
    return Tsa(tsa, servers(tsa.app()))


@pytest.fixture(scope="session")
def dev_tsa(servers, tmp_path_factory) -> Tsa:
    return _dev_tsa(servers, tmp_path_factory.mktemp("dev-tsa"))


@pytest.fixture(scope="session")
def rogue_tsa(servers, tmp_path_factory) -> Tsa:
    """A second dev TSA: same subject names as ``dev_tsa``, its own CA and keys."""
    return _dev_tsa(servers, tmp_path_factory.mktemp("rogue-tsa"))


@pytest.fixture(scope="session")
def tsa_app(servers) -> Callable[[Callable], str]:
    """Serve a handler ``async (query: bytes) -> reply bytes`` as a TSA; returns its URL."""

    def start(answer) -> str:
        async def handle(request: web.Request) -> web.Response:
            reply = await answer(await request.read())
            return web.Response(body=reply, content_type=REPLY_CONTENT_TYPE)

        app = web.Application()
        app.router.add_post("/", handle)
        return servers(app).url

    return start


@pytest.fixture(scope="session")
def forward():
    """``await forward(url, query)``: a real TSA's reply to ``query``, unchanged."""

    async def send(url: str, query: bytes) -> bytes:
        async with ClientSession() as session:
            async with session.post(url, data=query, headers={"Content-Type": QUERY_CONTENT_TYPE}) as resp:
                assert resp.status == 200
                return await resp.read()

    return send


@pytest.fixture(scope="session")
def seaweed():
    with SeaweedS3() as s3:
        yield s3


@pytest.fixture
def bucket(seaweed) -> str:
    """A fresh bucket with Object Lock (and therefore versioning) enabled."""
    name = "seals-" + secrets.token_hex(4)
    seaweed.create_bucket(name)
    return name


@pytest.fixture
def s3(seaweed):
    """A plain boto3 client, as an operator or a tamperer would use."""
    return seaweed.client()
