"""A complete local stack for development and tests: real parts, throwaway place.

Under one data directory it creates (once) and starts:

- a SoftHSM2 token with an active ECDSA P-256 key and its keyring;
- the dev TSA (``notary dev-tsa``, openssl-backed) as a subprocess;
- SeaweedFS (``weed mini``) with an Object Lock bucket;
- a producer token, and ``notary.toml`` for the daemon pointing at all of it.

Nothing here is for production: SoftHSM2 keeps keys in files, the dev TSA's
CA lives in the data directory, and SeaweedFS runs with one random identity.

One stack at a time per data directory: ``DIR/stack.lock`` is held (flock)
by the stack's process and inherited by every process it starts, so a second
stack on the same directory is refused in one sentence while anything of the
first still runs. Started from the main thread, the children end with the
stack's process however it ends (PR_SET_PDEATHSIG): a ``kill -9`` of
``make run`` leaves no TSA or SeaweedFS behind to hold the next run's store.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
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


log = logging.getLogger(__name__)


class DevStackError(NotaryError):
    """The development stack could not be brought up."""


def softhsm_module() -> Path:
    for candidate in SOFTHSM_MODULES:
        if Path(candidate).exists():
            return Path(candidate)
    raise DevStackError("SoftHSM2 is not installed (no libsofthsm2.so); install the Debian package softhsm2")


LOCK_WAIT = 20.0  # seconds to wait for a previous stack's processes to end (they get SIGTERM as it dies)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _PortBusy(Exception):
    """A child could not bind the port chosen for it."""


def _read_from(path: Path, offset: int) -> str:
    """A log file's text from ``offset`` on (what one run appended), or ''."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def listen_check(host: str, port: int) -> None:
    """Refuse, in one sentence, an HTTP address that cannot be bound (before a stack takes seconds to start)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        raise DevStackError(f"cannot listen on {host}:{port}: {exc.strerror or exc}"
                            + ("; another `make run`? choose another address with --listen HOST:PORT"
                               if exc.errno == errno.EADDRINUSE else "")) from None


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
    """Write a file only its owner can read, also when it existed before with a wider mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


@dataclass
class DevStack:
    data_dir: Path
    http: tuple[str, int] = ("127.0.0.1", 0)
    max_entries: int = 1000
    max_age: float = 1.0
    limits: dict | None = None  # extra [limits] keys for notary.toml
    lock_wait: float = LOCK_WAIT  # seconds to wait for DIR/stack.lock

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        self._lock_fd: int | None = None  # DIR/stack.lock, held while this stack runs
        self._dev_json: Path | None = None  # the dev.json this stack wrote, removed when it stops
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
        if not self.keyring_path.exists():
            steps = [["generate", "--label=dev-key-1", "--algorithm=ecdsa-p256", f"--name={ORIGIN}"],
                     ["activate", "dev-key-1"]]
        elif self._first_key_pending():
            steps = [["activate", "dev-key-1"]]  # a first start stopped between generate and activate
        else:
            return
        options = [f"--module={softhsm_module()}", f"--token={TOKEN_LABEL}", f"--pin=file:{pin_file}",
                   f"--keyring={self.keyring_path}"]
        for args in steps:
            result = subprocess.run([sys.executable, "-m", "notary.cli", "keys", *args, *options],
                                    env=self.env(), capture_output=True, text=True)
            if result.returncode != 0:
                raise DevStackError(f"notary keys {args[0]} failed: {result.stderr.strip() or result.stdout.strip()}")

    def _first_key_pending(self) -> bool:
        """The keyring holds the generated dev key, never activated, and no key is active."""
        from hsm.keyring import ACTIVE, PENDING, Keyring

        keys = Keyring.load(self.keyring_path).keys()
        return (not any(k.status == ACTIVE for k in keys)
                and any(k.label == "dev-key-1" and k.status == PENDING for k in keys))

    # -- services --------------------------------------------------------------

    def start_tsa(self) -> str:
        """Start (or restart, on the same port) the dev TSA; return its URL.

        A free port is chosen before the TSA binds it, so another process may
        take it in between: on a first start, a port found busy is replaced
        (twice at most).
        """
        chosen = not self.tsa_port
        for attempt in range(3):
            port = self.tsa_port = self.tsa_port or free_port()
            try:
                return self._start_tsa_on(port)
            except _PortBusy:
                if not chosen or attempt == 2:
                    raise DevStackError(f"the dev TSA could not listen on 127.0.0.1:{port}: the port is in use; "
                                        f"see {self.data_dir / 'tsa.log'}") from None
                self.tsa_port = 0
        raise AssertionError("unreachable")

    def _start_tsa_on(self, port: int) -> str:
        from anchors.devprocess import die_with_parent

        log_path = self.data_dir / "tsa.log"
        log = open(log_path, "ab")
        start = log.tell()  # this run's output begins here
        try:
            self.tsa_process = subprocess.Popen(
                die_with_parent([sys.executable, "-m", "notary.cli", "dev-tsa", "--data-dir", str(self.data_dir / "tsa"),
                                 "--listen", f"127.0.0.1:{port}"]),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, pass_fds=self._pass_fds(),
                start_new_session=True)  # Ctrl-C stops the daemon, which then stops the TSA after draining
        finally:
            log.close()
        # Ready when it says so: a connection to the port could reach another process that holds it.
        deadline = time.monotonic() + 30
        while True:
            said = _read_from(log_path, start)
            if "dev TSA listening on" in said:
                break
            if self.tsa_process.poll() is not None:
                self.tsa_process = None
                if "Address already in use" in said:
                    raise _PortBusy
                last = said.strip().splitlines()[-1:] or ["no message"]
                raise DevStackError(f"the dev TSA exited at start ({last[0]}); see {log_path}")
            if time.monotonic() > deadline:
                raise DevStackError(f"the dev TSA did not start listening within 30 s; see {log_path}")
            time.sleep(0.05)
        # The certificates exist once the TSA listens (made before it binds).
        return f"http://127.0.0.1:{port}/"

    def _start_s3(self) -> None:
        """SeaweedFS; its ports are chosen before it binds them, so a port taken meanwhile means new ports."""
        from anchors.devs3 import SeaweedS3
        from anchors.errors import DevS3Error

        for attempt in range(3):
            self.s3 = SeaweedS3(self.data_dir / "s3", pass_fds=self._pass_fds())
            try:
                self.s3.start()
                break
            except DevS3Error as exc:
                self.s3 = None  # start() stopped it
                if attempt == 2 or "Port allocation failed" not in str(exc):
                    raise
        client = self.s3.client()
        names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if BUCKET not in names:
            self.s3.create_bucket(BUCKET, object_lock=True)
        write_secret(self.data_dir / "s3-credentials", f"{self.s3.access_key}:{self.s3.secret_key}\n")

    # -- one stack per data directory -------------------------------------------

    @property
    def lock_path(self) -> Path:
        return self.data_dir / "stack.lock"

    def _pass_fds(self) -> tuple[int, ...]:
        """The lock, for a child to hold as long as it runs."""
        return () if self._lock_fd is None else (self._lock_fd,)

    def _lock(self) -> None:
        """Hold DIR/stack.lock, or refuse: another stack (or what is left of one) uses this directory.

        A stack killed a moment ago leaves children that are still ending (the
        kernel sent them SIGTERM), so a held lock is waited for a little; its
        dev.json, which names them, goes at once.
        """
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + self.lock_wait
        waiting = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise DevStackError(
                        f"{self.data_dir} is in use by another dev stack (started by process {holder or '?'}) or by "
                        "processes it left running; stop it first (Ctrl-C where it runs), or use another "
                        "--data-dir") from None
                if not waiting and holder.isdigit() and not _alive(int(holder)):
                    log.info("waiting for what a stopped dev stack left running under %s to end", self.data_dir)
                    (self.data_dir / "dev.json").unlink(missing_ok=True)
                    waiting = True
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # the lock goes with the last process holding it
            self._lock_fd = None

    def start(self) -> DevStack:
        """Create what is missing and start the TSA and SeaweedFS; on any failure, stop what was started."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            # A dev.json from an earlier run names its ports and S3 keys, which this run replaces:
            # it appears again, complete, once this stack's daemon answers (write_dev_json).
            (self.data_dir / "dev.json").unlink(missing_ok=True)
            self._prepare_hsm()
            self.tsa_url = self.start_tsa()
            self._start_s3()
            token_file = self.data_dir / "producer-token"
            if not token_file.exists():
                write_secret(token_file, secrets.token_urlsafe(32) + "\n")
            self.token = token_file.read_text().strip()
            self.write_config("notary", http=self.http, max_entries=self.max_entries, max_age=self.max_age,
                              limits=self.limits, prefix=PREFIX)
        except BaseException:
            self.stop()
            raise
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
        from anchors.devprocess import die_with_parent

        log = open(log_path, "ab")
        try:
            return subprocess.Popen(
                die_with_parent([sys.executable, *python_args, "-m", "notary.cli", "run", "-c", str(config)]),
                env=self.env() | (env or {}), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                pass_fds=self._pass_fds())
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
        """Write DIR/dev.json (mode 0600: it holds the token and S3 keys) whole: a reader never sees it half written.

        It describes this running stack (URL, token, S3 endpoint and keys, new each run): ``stop()`` removes it, and
        a start removes an earlier run's, so that its presence means "up"."""
        path = self.data_dir / "dev.json"
        tmp = path.with_name(f".dev.json.{os.getpid()}.tmp")
        write_secret(tmp, json.dumps(self.dev_info(url), indent=2) + "\n")
        tmp.replace(path)
        self._dev_json = path
        return path

    def stop_tsa(self) -> None:
        if self.tsa_process is not None:
            stop_process(self.tsa_process, 10)
            self.tsa_process = None

    def stop(self) -> None:
        if self._dev_json is not None:  # it names ports and S3 keys that are about to go
            self._dev_json.unlink(missing_ok=True)
            self._dev_json = None
        try:
            self.stop_tsa()
        finally:
            if self.s3 is not None:
                self.s3.stop()
                self.s3 = None
            self._unlock()

    def __enter__(self) -> DevStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
