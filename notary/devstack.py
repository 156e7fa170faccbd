"""A complete local stack for development and tests: real parts, throwaway place.

Under one data directory it creates (once) and starts:

- a SoftHSM2 token with an active ECDSA P-256 key and its keyring;
- the dev TSA (``notary dev-tsa``, openssl-backed) as a subprocess;
- SeaweedFS (``weed mini``) with an Object Lock bucket;
- a producer token, and ``notary.toml`` for the daemon pointing at all of it.

Nothing here is for production: SoftHSM2 keeps keys in files, the dev TSA's
CA lives in the data directory, and SeaweedFS runs with one random identity.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from notary.config import token_hash
from notary.errors import NotaryError

ORIGIN = "dev.notary.localhost/log"
TOKEN_LABEL = "notary-dev"
BUCKET = "notary-dev-seals"
PREFIX = "dev/"
PRODUCER = "dev-producer"
SOFTHSM_MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
                   "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so")


class DevStackError(NotaryError):
    """The development stack could not be brought up."""


def softhsm_module() -> Path:
    for candidate in SOFTHSM_MODULES:
        if Path(candidate).exists():
            return Path(candidate)
    raise DevStackError("SoftHSM2 is not installed (no libsofthsm2.so); install the Debian package softhsm2")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_answering(url: str, process: subprocess.Popen, log_path: Path, timeout: float = 60, *,
                   healthy: bool = False) -> None:
    """Wait until the daemon at ``url`` answers ``/healthz`` (with 200 if ``healthy``).

    Raises ``DevStackError`` naming its log if the process exits or time runs out.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise DevStackError(f"the daemon exited with status {process.returncode} at start; see {log_path}")
        try:
            urllib.request.urlopen(url + "/healthz", timeout=2).close()
            return
        except urllib.error.HTTPError:
            if not healthy:
                return  # answering, if not healthy yet (no seal anchored)
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise DevStackError(f"the daemon did not answer {url}/healthz within {timeout:g} s; see {log_path}")
        time.sleep(0.05)


def write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


@dataclass
class DevStack:
    data_dir: Path
    http: tuple[str, int] = ("127.0.0.1", 0)
    max_entries: int = 1000
    max_age: float = 1.0
    limits: dict | None = None  # extra [limits] keys for notary.toml

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        self.tsa_process: subprocess.Popen | None = None
        self.tsa_port = 0
        self.tsa_url = ""
        self.s3 = None
        self.token = ""
        self.config_path = self.data_dir / "notary.toml"

    # -- files made once ------------------------------------------------------

    @property
    def softhsm_conf(self) -> Path:
        return self.data_dir / "hsm" / "softhsm2.conf"

    @property
    def keyring_path(self) -> Path:
        return self.data_dir / "keyring.json"

    def env(self) -> dict[str, str]:
        """The environment a daemon process of this stack needs (SoftHSM2's configuration)."""
        return dict(os.environ, SOFTHSM2_CONF=str(self.softhsm_conf))

    def _prepare_hsm(self) -> None:
        """A token with one active ECDSA key, and its keyring. PKCS#11 runs only in child processes:
        SoftHSM2 reads its configuration once per process, so this process stays free to use another."""
        from hsm.devtoken import init_dev_token

        hsm_dir = self.data_dir / "hsm"
        (hsm_dir / "tokens").mkdir(parents=True, exist_ok=True)
        if not self.softhsm_conf.exists():
            self.softhsm_conf.write_text(
                "# SoftHSM2 token of a merkle-notary dev stack (development only)\n"
                f"directories.tokendir = {hsm_dir / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
            )
        pin_file = hsm_dir / "user.pin"
        if not any((hsm_dir / "tokens").iterdir()):
            init_dev_token(self.softhsm_conf, TOKEN_LABEL, pin_file)
        if self.keyring_path.exists():
            return
        options = [f"--module={softhsm_module()}", f"--token={TOKEN_LABEL}", f"--pin=file:{pin_file}",
                   f"--keyring={self.keyring_path}"]
        for args in (["generate", "--label=dev-key-1", "--algorithm=ecdsa-p256", f"--name={ORIGIN}"],
                     ["activate", "dev-key-1"]):
            result = subprocess.run([sys.executable, "-m", "notary.cli", "keys", *args, *options],
                                    env=self.env(), capture_output=True, text=True)
            if result.returncode != 0:
                raise DevStackError(f"notary keys {args[0]} failed: {result.stderr.strip() or result.stdout.strip()}")

    # -- services --------------------------------------------------------------

    def start_tsa(self) -> str:
        """Start (or restart, on the same port) the dev TSA; return its URL."""
        port = self.tsa_port = self.tsa_port or free_port()
        log = open(self.data_dir / "tsa.log", "ab")
        try:
            self.tsa_process = subprocess.Popen(
                [sys.executable, "-m", "notary.cli", "dev-tsa", "--data-dir", str(self.data_dir / "tsa"),
                 "--listen", f"127.0.0.1:{port}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)  # Ctrl-C stops the daemon, which then stops the TSA after draining
        finally:
            log.close()
        deadline = time.monotonic() + 30
        while True:
            if self.tsa_process.poll() is not None:
                raise DevStackError(f"the dev TSA exited at start; see {self.data_dir / 'tsa.log'}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise DevStackError("the dev TSA did not start listening within 30 s") from None
                time.sleep(0.1)
        # The certificates exist once the TSA listens (made before it binds).
        return f"http://127.0.0.1:{port}/"

    def _start_s3(self) -> None:
        from anchors.devs3 import SeaweedS3

        self.s3 = SeaweedS3(self.data_dir / "s3")
        self.s3.start()
        client = self.s3.client()
        names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if BUCKET not in names:
            self.s3.create_bucket(BUCKET, object_lock=True)
        write_secret(self.data_dir / "s3-credentials", f"{self.s3.access_key}:{self.s3.secret_key}\n")

    def start(self) -> DevStack:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._prepare_hsm()
            self.tsa_url = self.start_tsa()
            self._start_s3()
        except BaseException:
            self.stop()
            raise
        token_file = self.data_dir / "producer-token"
        if not token_file.exists():
            write_secret(token_file, secrets.token_urlsafe(32) + "\n")
        self.token = token_file.read_text().strip()
        self.write_config("notary", http=self.http, max_entries=self.max_entries, max_age=self.max_age,
                          limits=self.limits, prefix=PREFIX)
        return self

    def write_config(self, name: str, *, http: tuple[str, int], max_entries: int = 1000, max_age: float = 1.0,
                     limits: dict | None = None, prefix: str | None = None, shutdown_timeout: float = 10) -> Path:
        """Write ``DIR/<name>.toml`` for a daemon of this stack: its own data directory, socket and S3 prefix."""
        host, port = http
        limits_text = "".join(f"{k} = {v!r}\n" for k, v in (limits or {}).items())
        path = self.data_dir / f"{name}.toml"
        path.write_text(f"""# Generated by the merkle-notary dev stack (development only).
origin = "{ORIGIN}"
data_dir = "{self.data_dir / name}"
shutdown_timeout = {shutdown_timeout}

[listen]
http = "{host}:{port}"
unix = "{self.data_dir / (name + '.sock')}"

[batch]
max_entries = {max_entries}
max_age = {max_age}

[hsm]
module = "{softhsm_module()}"
token_label = "{TOKEN_LABEL}"
pin = "file:{self.data_dir / 'hsm' / 'user.pin'}"
keyring = "{self.keyring_path}"

[[tsa]]
url = "{self.tsa_url}"
roots = "{self.data_dir / 'tsa' / 'root.pem'}"
timeout = 5

[s3]
bucket = "{BUCKET}"
prefix = "{prefix if prefix is not None else name + '/'}"
retention_days = 1
endpoint = "{self.s3.endpoint_url}"
region = "us-east-1"
credentials_file = "{self.data_dir / 's3-credentials'}"

[limits]
{limits_text}
[sources.http.{PRODUCER}]
token_sha256 = "{token_hash(self.token).hex()}"

[sources.unix.local-user]
uid = {os.getuid()}
""")
        return path

    def start_daemon(self, config: Path, log_path: Path, *, python_args: Sequence[str] = (),
                     env: dict[str, str] | None = None) -> subprocess.Popen:
        """``notary run -c config`` as a child of this stack, its output appended to ``log_path``."""
        log = open(log_path, "ab")
        try:
            return subprocess.Popen(
                [sys.executable, *python_args, "-m", "notary.cli", "run", "-c", str(config)],
                env=self.env() | (env or {}), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()

    def dev_info(self, url: str) -> dict:
        """What dev.json holds: enough to submit, prove and verify against this stack."""
        from hsm.keyring import Keyring

        from notary.note import VerifierKey

        keyring = Keyring.load(self.keyring_path)
        vkeys = [str(VerifierKey(keyring.name, k.algorithm.sig_type, k.public_key)) for k in keyring.keys()]
        return {
            "url": url,
            "token": self.token,
            "origin": ORIGIN,
            "vkeys": vkeys,
            "tsa_roots": str(self.data_dir / "tsa" / "root.pem"),
            "unix_socket": str(self.data_dir / "notary.sock"),
            "s3": {"endpoint": self.s3.endpoint_url, "bucket": BUCKET, "prefix": PREFIX,
                   "access_key": self.s3.access_key, "secret_key": self.s3.secret_key},
        }

    def write_dev_json(self, url: str) -> Path:
        path = self.data_dir / "dev.json"
        write_secret(path, json.dumps(self.dev_info(url), indent=2) + "\n")
        return path

    def stop_tsa(self) -> None:
        if self.tsa_process is not None:
            stop_process(self.tsa_process, 10)
            self.tsa_process = None

    def stop(self) -> None:
        self.stop_tsa()
        if self.s3 is not None:
            self.s3.stop()
            self.s3 = None

    def __enter__(self) -> DevStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
