"""The daemon's configuration: one TOML file, validated whole at start.

Every error names the key and the problem ("batch.max_age: must be a number
of seconds > 0, got 'soon'"). config/notary.example.toml documents every key.
Secrets are never in this file: the HSM PIN comes from a PIN source (file,
environment variable or systemd credential) and HTTP tokens are stored as
their SHA-256.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import math
import os
import re
import stat
import tomllib
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from notary.errors import NotaryError
from notary.note import check_key_name
from notary.entry import check_source


# The source of the key-event entries the daemon appends itself (docs/KEYS.md,
# "In the log"); no producer may be configured under it.
KEY_EVENT_SOURCE = "notary/keyring"

# S3 Object Lock keeps every seal this long, irrevocably (COMPLIANCE mode); a
# longer period is a typo (25570 for 2557), and far longer ones cannot be
# written as a retain-until date at all.
MAX_RETENTION_DAYS = 36500

# A uid is a 32-bit unsigned value, and 2**32 - 1 is (uid_t) -1, never a user.
MAX_UID = 2**32 - 2

# sockaddr_un.sun_path holds 108 bytes on Linux, the terminating NUL included.
MAX_UNIX_PATH_BYTES = 107

# An S3 credentials file holds one "access_key_id:secret_access_key" line.
MAX_CREDENTIALS_BYTES = 4096


class ConfigError(NotaryError):
    """The configuration file is missing, unreadable or invalid."""

    exit_code = 2


@dataclass(frozen=True)
class TsaConfig:
    url: str
    roots: Path
    timeout: float
    policy: str | None


@dataclass(frozen=True)
class S3Config:
    bucket: str
    prefix: str
    retention_days: int
    endpoint: str | None
    region: str | None
    credentials_file: Path | None  # "access_key_id:secret_access_key"; else the boto3 default chain


@dataclass(frozen=True)
class HsmConfig:
    module: Path
    token_label: str
    pin: str  # a PIN source: file:<path>, env:<NAME> or credential:<name>
    keyring: Path


@dataclass(frozen=True)
class Limits:
    max_request_digests: int
    max_request_bytes: int
    max_pending_entries: int  # submitted but not yet durable
    max_unanchored_seals: int  # sealed but not yet timestamped and published
    anchor_overdue: float  # seconds a pending seal may wait before /healthz fails
    max_sealed_waiters: int = 1_000  # ?wait=sealed requests waiting at once
    wait_sealed_timeout: float = 30.0  # seconds a ?wait=sealed request waits for its seal to be anchored


@dataclass(frozen=True)
class Config:
    origin: str
    data_dir: Path
    http_listen: tuple[str, int] | None
    unix_socket: Path | None
    max_entries: int
    max_age: float
    hsm: HsmConfig
    tsas: tuple[TsaConfig, ...]
    s3: S3Config
    limits: Limits
    http_tokens: dict[bytes, str] = field(repr=False)  # SHA-256(token) -> source name
    unix_peers: dict[int, str] = field(default_factory=dict)  # uid -> source name
    shutdown_timeout: float = 30.0

    @property
    def store_path(self) -> Path:
        return self.data_dir / "log.db"

    @property
    def seals_path(self) -> Path:
        return self.data_dir / "seals.db"


def load_config(path: Path | str) -> Config:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"configuration file {path} cannot be read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
    return parse_config(raw, base=path.parent)


class _Section:
    """Typed access to one table of the TOML document, naming keys in errors."""

    def __init__(self, data: Any, name: str, base: Path):
        if not isinstance(data, dict):
            raise ConfigError(f"{name or 'configuration'}: must be a table")
        self.data, self.name, self.base = data, name, base
        self.used: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.name}.{key}" if self.name else key

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., *, check=None, must: str = "",
            secret: bool = False) -> Any:
        """``secret``: a wrong value may be the secret itself (the PIN, the token), so errors do not repeat it."""
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise ConfigError(f"{self._key(key)}: missing")
            return default
        value = self.data[key]
        got = f"got a {type(value).__name__} (not repeated here: it may be a secret)" if secret else f"got {value!r}"
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise ConfigError(f"{self._key(key)}: {must or 'wrong type'}, {got}")
        if not isinstance(value, kind) or (check is not None and not check(value)):
            raise ConfigError(f"{self._key(key)}: {must or 'wrong type'}, {got}")
        # TOML has inf and nan: an infinite timeout or overdue bound would
        # silently switch off what it bounds (max_age = inf never seals by age).
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{self._key(key)}: {must or 'wrong type'} (a finite number), {got}")
        return value

    def path(self, key: str, default: Any = ...) -> Path | None:
        value = self.get(key, str, default, check=bool, must="must be a non-empty path")
        return None if value is None else (self.base / value).resolve() if not Path(value).is_absolute() else Path(value)

    def section(self, key: str, required: bool = True) -> _Section:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise ConfigError(f"{self._key(key)}: missing table")
            return _Section({}, self._key(key), self.base)
        return _Section(self.data[key], self._key(key), self.base)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(f"{self._key(unknown[0])}: unknown key (a typo?)")


def _listen(text: str, key: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT``; an unbracketed IPv6 address is ambiguous (is ``::1:80`` port 80?)."""
    host, sep, port = text.rpartition(":")
    # ASCII digits only: str.isdigit() also accepts '²', which int() refuses.
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{key}: must be HOST:PORT, got {text!r}")
    if host.startswith("[") or host.endswith("]"):
        try:
            if not (host.startswith("[") and host.endswith("]")):
                raise ValueError
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ConfigError(f"{key}: {host!r} is not an IPv6 address in brackets, e.g. '[::1]:8640'") from None
        return host[1:-1], int(port)
    if ":" in host:
        raise ConfigError(f"{key}: write an IPv6 address in brackets, e.g. '[{host}]:{port}', got {text!r}")
    if any(ch.isspace() for ch in host):
        raise ConfigError(f"{key}: the host holds a space, got {text!r}")
    return host, int(port)


def _http_url(value: str) -> bool:
    parts = urllib.parse.urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


# What any S3 store takes as a bucket name (AWS allows fewer: lowercase, 3-63): catches a URL, a path or a
# prefix written where the name belongs, which the store would answer with a less clear error at start.
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")
_REGION = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


def _pin_source(text: str, key: str, base: Path) -> str:
    """A PIN source as hsm.pin.PinSource reads it; a relative file: path is relative to the configuration file."""
    kind, sep, ref = text.partition(":")
    if not ref:
        raise ConfigError(f"{key}: {kind}: names nothing; give the {dict(file='path', env='variable name', credential='credential name')[kind]} after '{kind}:'")
    if kind == "credential" and ("/" in ref or ref in (".", "..")):
        raise ConfigError(f"{key}: credential name {ref!r} is not a file name in $CREDENTIALS_DIRECTORY")
    if kind == "file" and not Path(ref).is_absolute():
        return f"file:{(base / ref).resolve()}"
    return text


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def parse_config(raw: dict, base: Path = Path(".")) -> Config:
    top = _Section(raw, "", base)
    origin = top.get("origin", str, must="must be the log's name, e.g. 'notary.example.com/log1'")
    try:
        check_key_name(origin)
    except NotaryError as exc:
        raise ConfigError(f"origin: {exc}") from None
    data_dir = top.path("data_dir")

    listen = top.section("listen")
    http = listen.get("http", str, None)
    http_listen = _listen(http, "listen.http") if http is not None else None
    unix_socket = listen.path("unix", None)
    if unix_socket is not None and len(os.fsencode(unix_socket)) > MAX_UNIX_PATH_BYTES:
        raise ConfigError(f"listen.unix: {unix_socket} is {len(os.fsencode(unix_socket))} bytes, more than the "
                          f"{MAX_UNIX_PATH_BYTES} a unix socket address can hold; choose a shorter path")
    listen.done()
    if http_listen is None and unix_socket is None:
        raise ConfigError("listen: give listen.http, listen.unix or both")

    batch = top.section("batch")
    max_entries = batch.get("max_entries", int, 100_000, check=lambda v: v > 0, must="must be an integer > 0")
    max_age = float(batch.get("max_age", (int, float), 1.0, check=lambda v: v > 0, must="must be a number of seconds > 0"))
    batch.done()

    h = top.section("hsm")
    hsm = HsmConfig(
        module=h.path("module"),
        token_label=h.get("token_label", str, check=bool, must="must be the token's label"),
        pin=_pin_source(h.get("pin", str, check=lambda v: v.partition(":")[0] in ("file", "env", "credential"),
                              must="must be file:<path>, env:<NAME> or credential:<name> (never the PIN itself)",
                              secret=True), "hsm.pin", base),
        keyring=h.path("keyring"),
    )
    h.done()

    tsas = []
    tsa_list = top.get("tsa", list, check=bool, must="must be a non-empty array of [[tsa]] tables")
    for i, item in enumerate(tsa_list):
        t = _Section(item, f"tsa[{i}]", base)
        url = t.get("url", str, check=_http_url, must="must be an http(s) URL")
        tsas.append(TsaConfig(
            url=url,
            roots=t.path("roots"),
            timeout=float(t.get("timeout", (int, float), 10.0, check=lambda v: v > 0, must="must be seconds > 0")),
            policy=t.get("policy", str, None, check=lambda v: re.fullmatch(r"[0-9]+(\.[0-9]+)+", v), must="must be an OID"),
        ))
        t.done()

    s = top.section("s3")
    s3 = S3Config(
        bucket=s.get("bucket", str, check=_BUCKET.fullmatch,
                     must="must be the bucket's name alone (letters, digits, '.', '-', '_'; no s3://, no path: "
                          "the part of the key before seals/ is s3.prefix)"),
        prefix=s.get("prefix", str, "", check=lambda v: v == "" or v.endswith("/"), must="must be empty or end with '/'"),
        retention_days=s.get("retention_days", int, check=lambda v: 0 < v <= MAX_RETENTION_DAYS,
                             must=f"must be a number of days > 0 and at most {MAX_RETENTION_DAYS} (100 years)"),
        endpoint=s.get("endpoint", str, None, check=_http_url, must="must be an http(s) URL"),
        region=s.get("region", str, None, check=_REGION.fullmatch, must="must be a region name, e.g. 'eu-west-1'"),
        credentials_file=s.path("credentials_file", None),
    )
    s.done()

    lim = top.section("limits", required=False)
    positive = dict(check=lambda v: v > 0, must="must be an integer > 0")
    limits = Limits(
        max_request_digests=lim.get("max_request_digests", int, 10_000, **positive),
        max_request_bytes=lim.get("max_request_bytes", int, 1 << 20, **positive),
        max_pending_entries=lim.get("max_pending_entries", int, 200_000, **positive),
        max_unanchored_seals=lim.get("max_unanchored_seals", int, 1_000, **positive),
        anchor_overdue=float(lim.get("anchor_overdue", (int, float), 300, check=lambda v: v > 0, must="must be seconds > 0")),
        max_sealed_waiters=lim.get("max_sealed_waiters", int, 1_000, **positive),
        wait_sealed_timeout=float(lim.get("wait_sealed_timeout", (int, float), 30, check=lambda v: 0 < v <= 3600,
                                          must="must be seconds > 0 and at most 3600")),
    )
    lim.done()
    if limits.max_request_digests > limits.max_pending_entries:
        raise ConfigError(
            f"limits.max_request_digests ({limits.max_request_digests}) is more than limits.max_pending_entries "
            f"({limits.max_pending_entries}): a request that large could never be accepted; lower the first or raise the second")

    sources = top.section("sources", required=False)
    tokens: dict[bytes, str] = {}
    http_sources = sources.section("http", required=False)
    for name in list(http_sources.data):
        src = http_sources.section(name)
        _check_source_name(name, f"sources.http.{name}")
        digest = src.get("token_sha256", str, check=_SHA256_HEX.fullmatch,
                         must="must be the token's SHA-256 as 64 lowercase hex digits (never the token)", secret=True)
        if bytes.fromhex(digest) in tokens:
            raise ConfigError(f"sources.http.{name}.token_sha256: same token as source {tokens[bytes.fromhex(digest)]!r}")
        tokens[bytes.fromhex(digest)] = name
        src.done()
    peers: dict[int, str] = {}
    unix_sources = sources.section("unix", required=False)
    for name in list(unix_sources.data):
        src = unix_sources.section(name)
        _check_source_name(name, f"sources.unix.{name}")
        uid = src.get("uid", int, check=lambda v: 0 <= v <= MAX_UID, must=f"must be a user id from 0 to {MAX_UID}")
        if uid in peers:
            raise ConfigError(f"sources.unix.{name}.uid: uid {uid} is already source {peers[uid]!r}")
        peers[uid] = name
        src.done()
    sources.done()

    shutdown_timeout = float(top.get("shutdown_timeout", (int, float), 30, check=lambda v: v > 0, must="must be seconds > 0"))
    top.done()
    return Config(
        origin=origin, data_dir=data_dir, http_listen=http_listen, unix_socket=unix_socket,
        max_entries=max_entries, max_age=max_age, hsm=hsm, tsas=tuple(tsas), s3=s3, limits=limits,
        http_tokens=tokens, unix_peers=peers, shutdown_timeout=shutdown_timeout,
    )


# The file's name of each Config field whose name differs; hsm, s3 and limits are tables whose fields are their keys.
_FILE_KEYS = {"http_listen": "listen.http", "unix_socket": "listen.unix", "max_entries": "batch.max_entries",
              "max_age": "batch.max_age", "tsas": "tsa", "http_tokens": "sources.http", "unix_peers": "sources.unix"}


def changed_keys(old: Config, new: Config) -> list[str]:
    """The keys whose values differ between ``old`` and ``new``, named as in the file.

    ``hsm.keyring``, ``limits.max_pending_entries``, ``listen.http``; ``tsa``
    for any change to the ``[[tsa]]`` list; ``sources.http`` and
    ``sources.unix`` for any change to those tables. Names only, never values
    (the PIN source, the token hashes).
    """
    changed = []
    for f in dataclasses.fields(Config):
        before, after = getattr(old, f.name), getattr(new, f.name)
        if before == after:
            continue
        name = _FILE_KEYS.get(f.name, f.name)
        if dataclasses.is_dataclass(before):
            changed += [f"{name}.{g.name}" for g in dataclasses.fields(before)
                        if getattr(before, g.name) != getattr(after, g.name)]
        else:
            changed.append(name)
    return changed


def _check_source_name(name: str, key: str) -> None:
    try:
        check_source(name)
    except NotaryError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    if not name:
        raise ConfigError(f"{key}: a source name must not be empty")
    if name == KEY_EVENT_SOURCE:
        raise ConfigError(f"{key}: {KEY_EVENT_SOURCE!r} is the source of the daemon's own key events; "
                          "a producer under it could pass its entries off as key events")


def read_s3_credentials(path: Path) -> tuple[str, str]:
    """The ``access_key_id:secret_access_key`` in ``s3.credentials_file``, refused if every user can read it."""
    key = "s3.credentials_file"
    try:
        with path.open("rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read(MAX_CREDENTIALS_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{key}: {path} cannot be read: {exc.strerror}") from None
    if mode & stat.S_IROTH:
        raise ConfigError(f"{key}: {path} holds a secret and is readable by every user; restrict it (chmod o-r)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    access, _, secret = text.strip().partition(":")
    if len(data) > MAX_CREDENTIALS_BYTES or not access or not secret or any(ch.isspace() for ch in access + secret):
        raise ConfigError(f"{key}: {path} must hold one line access_key_id:secret_access_key")
    return access, secret


def token_hash(token: str) -> bytes:
    """What the configuration stores for an HTTP token: its SHA-256."""
    return hashlib.sha256(token.encode("utf-8")).digest()
