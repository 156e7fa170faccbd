"""Notary daemons for the examples: a dev stack (notary.devstack) and ``notary run`` processes on 127.0.0.1.

Each daemon gets its own data directory, S3 prefix and HTTP sources: one
bearer token per source name, so that every entry says which producer
submitted it (docs/FORMATS.md, "Entry"). Development only, like the stack.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from notary.config import token_hash
from notary.devstack import DevStack, DevStackError, free_port, stop_process, wait_answering, write_secret

READY_TIMEOUT = 60  # seconds: SoftHSM2 login and the S3 bucket check come before the HTTP listener
STOP_TIMEOUT = 60  # seconds: SIGTERM seals and anchors what is sequenced before the daemon exits


@dataclass
class Notary:
    """One ``notary run -c`` process and the tokens of its HTTP sources."""

    name: str
    url: str
    tokens: dict[str, str]  # source name -> bearer token
    token_files: dict[str, Path]  # source name -> file holding its token (mode 0600)
    dev_json: Path  # URL, verifier keys, TSA roots, S3 settings: what `notary verify-log --dev-json` reads
    process: subprocess.Popen | None = field(default=None, repr=False)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, STOP_TIMEOUT)
            self.process = None


def example_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """An example's command line: its docstring's first paragraph, and --workdir."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=doc.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="where the example's files and notaries live (default: a new "
                        "directory under /tmp, kept for inspection)")
    return parser


def make_workdir(given: Path | None, prefix: str) -> Path:
    workdir = (given or Path(tempfile.mkdtemp(prefix=prefix))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


class ExampleStack:
    """``with ExampleStack(base) as stack: notary = stack.notary("central", ["host-a"])``; everything stops on exit."""

    def __init__(self, base: Path, max_age: float = 0.2):
        self.base = Path(base)
        self.max_age = max_age
        self.dev = DevStack(self.base / "stack")
        self.notaries: list[Notary] = []

    def __enter__(self) -> ExampleStack:
        self.dev.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for notary in self.notaries:
            notary.stop()
        self.dev.stop()

    def notary(self, name: str, sources: Iterable[str]) -> Notary:
        """Start a daemon whose HTTP sources are ``sources``, each with a fresh token; wait until it answers."""
        port = free_port()
        config = self.dev.write_config(name, http=("127.0.0.1", port), max_age=self.max_age)
        tokens = {source: secrets.token_urlsafe(32) for source in sources}
        token_files = {source: self.base / f"{name}.{source}.token" for source in sources}
        with open(config, "a") as f:
            for source, token in tokens.items():
                f.write(f'\n[sources.http.{source}]\ntoken_sha256 = "{token_hash(token).hex()}"\n')
                write_secret(token_files[source], token + "\n")
        url = f"http://127.0.0.1:{port}"
        dev_json = self.base / f"{name}.dev.json"
        write_secret(dev_json, json.dumps(self.dev.dev_info(url), indent=2) + "\n")
        log = self.base / f"{name}.log"
        process = self.dev.start_daemon(config, log)
        notary = Notary(name, url, tokens, token_files, dev_json, process)
        self.notaries.append(notary)
        wait_answering(url, process, log, READY_TIMEOUT)
        return notary


def wait_anchored(client, index: int, timeout: float = 60) -> None:
    """Return once an anchored seal covers log index ``index`` (``client``: a notary.client.HttpClient)."""
    deadline = time.monotonic() + timeout
    while client.anchored_size() <= index:
        if time.monotonic() > deadline:
            raise DevStackError(f"no anchored seal covers index {index} after {timeout} s")
        time.sleep(0.1)
