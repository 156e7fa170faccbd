"""A real dev stack (SoftHSM2 token, dev TSA, SeaweedFS) shared by the daemon tests,
and a handle on a daemon process (``notary run -c``) that a test can start,
stop, kill -9 and restart."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from notary.client import HttpClient
from notary.devstack import DevStack, DevStackError, free_port, wait_answering
from notary.note import parse_verifier_key


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    # Short path: unix socket paths are limited to 108 bytes.
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"nt-{os.getpid()}"
    with DevStack(base) as s:
        yield s
    import shutil

    shutil.rmtree(base, ignore_errors=True)


class Daemon:
    def __init__(self, stack: DevStack, name: str, **config):
        self.stack = stack
        self.name = name
        self.port = free_port()
        self.config_path = stack.write_config(name, http=("127.0.0.1", self.port), **config)
        self.data_dir = stack.data_dir / name
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = stack.data_dir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    @property
    def socket(self) -> Path:
        return self.stack.data_dir / f"{self.name}.sock"

    def client(self) -> HttpClient:
        return HttpClient(self.url, self.stack.token, timeout=30)

    def vkeys(self):
        return [parse_verifier_key(k) for k in self.stack.dev_info(self.url)["vkeys"]]

    def start(self, wait: bool = True, **env: str) -> Daemon:
        self.process = self.stack.start_daemon(self.config_path, self.log_path, env=env)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        try:
            wait_answering(self.url, self.process, self.log_path, timeout)
        except DevStackError as exc:
            raise AssertionError(f"{exc}:\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 60) -> int:
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self.process = None
        return code

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None

    def wait_anchored(self, size: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            metrics = self.client().metrics()
            anchored = next(int(float(line.split()[1])) for line in metrics.splitlines() if line.startswith("notary_anchored_tree_size "))
            if anchored >= size:
                return
            time.sleep(0.1)
        raise AssertionError(f"tree size {size} not anchored within {timeout}s:\n{self.log_tail()}")


@pytest.fixture
def daemon_factory(stack):
    started: list[Daemon] = []

    def make(name: str, **config) -> Daemon:
        d = Daemon(stack, name, **config)
        started.append(d)
        return d

    yield make
    for d in started:
        if d.process is not None:
            d.kill()
