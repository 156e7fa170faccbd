"""The real ``Notary`` and HTTP app in this process, without an HSM, TSA or S3.

For tests of the API's answers (tests/test_api_input.py, tests/test_unix_ingest.py):
the log store, its writer process, the sequencer, sealer and anchorer are the
real ones; the signer is a software key, and the TSA and S3 are fakes a test
can make fail. Starting one takes well under a second, where a daemon on the
dev stack (tests/daemon) takes several.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

from aiohttp.test_utils import TestClient, TestServer

from notary.api import build_app
from notary.config import Config, HsmConfig, Limits, S3Config, TsaConfig
from notary.daemon import Notary
from notary.unix_ingest import serve_unix
from tests.support import SoftwareSigner

ORIGIN = "inprocess.example/log"
TOKEN = "inprocess-token"
SOURCE = "producer"  # the source of TOKEN
UNIX_SOURCE = "local-user"  # the source of the test's own uid on the unix socket


class FakeTSA:
    def __init__(self):
        self.fail = False

    async def timestamp(self, message: bytes):
        if self.fail:
            raise RuntimeError("TSA down (injected)")
        return SimpleNamespace(der=b"\x30\x00")

    async def close(self) -> None:
        pass


class FakeS3:
    async def publish(self, tree_size: int, seal: bytes):
        return SimpleNamespace(key=f"seals/{tree_size:020d}.json", version_id="v1", checksum_sha256="x",
                               retain_until=datetime.datetime.now(datetime.UTC))

    async def seal_sizes_after(self, tree_size: int | None) -> list[int]:
        return []  # a fresh bucket: never ahead of the data directory


def make_config(tmp: Path, *, max_age: float = 0.2, unix_uid: int | None = None, **limits) -> Config:
    """A configuration like parse_config's, with ``limits`` overriding the defaults (unchecked: a test may break a rule).

    The unix socket is ``tmp/s.sock``; ``unix_uid`` is the uid of source UNIX_SOURCE on it.
    """
    values = dict(max_request_digests=10_000, max_request_bytes=1 << 20, max_pending_entries=200_000,
                  max_unanchored_seals=1_000, anchor_overdue=300.0)
    values.update(limits)
    return Config(
        origin=ORIGIN, data_dir=tmp / "data", http_listen=("127.0.0.1", 0), unix_socket=tmp / "s.sock",
        max_entries=100_000, max_age=max_age,
        hsm=HsmConfig(Path("/unused"), "unused", "file:/unused", Path("/unused")),
        tsas=(TsaConfig("http://unused", Path("/unused"), 1.0, None),),
        s3=S3Config("bucket", "", 1, None, None, None), limits=Limits(**values),
        http_tokens={hashlib.sha256(TOKEN.encode()).digest(): SOURCE},
        unix_peers={} if unix_uid is None else {unix_uid: UNIX_SOURCE},
    )


@contextlib.asynccontextmanager
async def running(tmp: Path, **config) -> AsyncIterator[tuple[Notary, TestClient]]:
    """A started Notary (``notary.fake_tsa`` can be made to fail), its unix socket, and an HTTP client on its app."""
    tsa = FakeTSA()
    notary = Notary(make_config(tmp, **config), signers=[SoftwareSigner.ed25519(b"\x01" * 32)],
                    timestamper=tsa, publisher=FakeS3())
    notary.fake_tsa = tsa
    await notary.start()
    unix = await serve_unix(notary)
    client = TestClient(TestServer(build_app(notary)))
    await client.start_server()
    try:
        yield notary, client
    finally:
        await client.close()
        unix.close()
        await notary.stop(timeout=2)


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def digest_hex(i: int) -> str:
    return hashlib.sha256(f"inprocess-{i}".encode()).hexdigest()
