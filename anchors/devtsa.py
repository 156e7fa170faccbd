"""A local RFC 3161 Time-Stamping Authority for development and tests.

An HTTP server (RFC 3161 §3.4: POST ``application/timestamp-query``, answer
``application/timestamp-reply``) that hands each query to ``openssl ts -reply``.
On first start it creates, in its data directory, a root CA and a TSA
certificate signed by it, both ECDSA P-256 (the curve the HSM signs with, and
what every current TSA client verifies); the TSA certificate carries the
critical extendedKeyUsage id-kp-timeStamping that RFC 3161 §2.3 requires.

Two measured facts shape it:
- ``openssl ts -reply`` increments a serial file without locking, so
  concurrent calls corrupt it: one call at a time (an ``asyncio.Lock``).
- With Nagle's algorithm on, a client that sends headers and body in two
  segments waits for the delayed ACK: about 17 requests/s. The listening
  socket is created with TCP_NODELAY (accepted sockets inherit it on Linux,
  and aiohttp sets it on every connection as well).

This is not a production TSA: its keys sit unencrypted in the data directory.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from anchors.errors import DevTsaError

QUERY_CONTENT_TYPE = "application/timestamp-query"
REPLY_CONTENT_TYPE = "application/timestamp-reply"

# The policy the dev TSA issues tokens under. 2.999 is the ITU-T X.660
# "example" arc, which no real TSA uses, so a dev token can never pass for a
# production one under a configured policy check.
DEV_POLICY_OID = "2.999.3161.1"

# A timestamp query is about a hundred bytes; refuse anything absurd before
# handing it to openssl.
MAX_QUERY_BYTES = 16 * 1024

ROOT_NAME = "merkle-notary development TSA root"
TSA_NAME = "merkle-notary development TSA"
CERT_VALIDITY = datetime.timedelta(days=3650)

# Files in the data directory. TSA_CONFIG is written last: its presence means
# the directory is complete.
ROOT_CERT = "root.pem"
TSA_CERT = "tsa.pem"
TSA_KEY = "tsa.key"
TSA_CONFIG = "tsa.cnf"
SERIAL = "serial"


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "merkle-notary development"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _openssl_config(data_dir: Path) -> str:
    """The ``[tsa]`` section of openssl's ts(1) configuration (see ``man ts``)."""
    return f"""\
[ tsa ]
default_tsa = dev_tsa

[ dev_tsa ]
dir = {data_dir}
serial = $dir/{SERIAL}
signer_cert = $dir/{TSA_CERT}
signer_key = $dir/{TSA_KEY}
signer_digest = sha256
default_policy = {DEV_POLICY_OID}
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = no
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


def _key_usage(**enabled: bool) -> x509.KeyUsage:
    """A KeyUsage with only the named bits set."""
    bits = dict.fromkeys(
        ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
         "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"),
        False,
    )
    bits.update(enabled)
    return x509.KeyUsage(**bits)


def _certificate(subject, public_key, issuer, issuer_key, *extensions) -> x509.Certificate:
    """A certificate valid from yesterday for CERT_VALIDITY, with (extension, critical) pairs."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + CERT_VALIDITY)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def create_materials(data_dir: Path) -> None:
    """Create the root CA, the TSA certificate and openssl's configuration, once.

    A directory that already holds the configuration is left untouched, so a
    restarted dev TSA keeps its root (and the tokens it issued keep verifying).
    The root's private key is never written: it signs the TSA certificate and
    is gone, so nobody can mint a second TSA under this root.
    """
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        if not (data_dir / TSA_CONFIG).exists():
            _create(data_dir)
    except OSError as exc:
        raise DevTsaError(f"cannot create the dev TSA's files in {data_dir}: {exc.strerror or exc}") from None


def _create(data_dir: Path) -> None:
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    root = _certificate(
        _name(ROOT_NAME), root_key.public_key(), _name(ROOT_NAME), root_key,
        (x509.BasicConstraints(ca=True, path_length=0), True),
        (_key_usage(key_cert_sign=True, crl_sign=True), True),
        (root_ski, False),
    )
    tsa_key = ec.generate_private_key(ec.SECP256R1())
    tsa = _certificate(
        _name(TSA_NAME), tsa_key.public_key(), root.subject, root_key,
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (_key_usage(digital_signature=True, content_commitment=True), True),
        # RFC 3161 §2.3: the TSA's certificate MUST contain exactly this one
        # extended key usage, marked critical.
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), True),
        (x509.SubjectKeyIdentifier.from_public_key(tsa_key.public_key()), False),
        (x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski), False),
    )

    _write_private(data_dir / TSA_KEY, _key_pem(tsa_key))
    (data_dir / ROOT_CERT).write_bytes(root.public_bytes(serialization.Encoding.PEM))
    (data_dir / TSA_CERT).write_bytes(tsa.public_bytes(serialization.Encoding.PEM))
    config = data_dir / TSA_CONFIG
    tmp = config.with_suffix(".tmp")
    tmp.write_text(_openssl_config(data_dir.resolve()))
    tmp.replace(config)


class DevTsa:
    """The dev TSA's signing side: its data directory and a serialized ``openssl ts -reply``."""

    def __init__(self, data_dir: Path | str, *, openssl: str = "openssl"):
        self.data_dir = Path(data_dir)
        # Checked here, not at the first query: without openssl every query would fail while the TSA looked up.
        found = shutil.which(openssl)
        if found is None:
            raise DevTsaError(f"{openssl} is not installed (the dev TSA signs with `openssl ts -reply`); "
                              "install the Debian package openssl")
        self._openssl = found
        self._lock = asyncio.Lock()
        create_materials(self.data_dir)

    @property
    def root_cert_path(self) -> Path:
        """The PEM root certificate a client must trust to verify this TSA's tokens."""
        return self.data_dir / ROOT_CERT

    async def reply(self, query: bytes) -> bytes:
        """Answer one DER TimeStampReq with a DER TimeStampResp, as ``openssl ts -reply`` does.

        openssl answers a malformed query with a rejection (status 2,
        badDataFormat), which is the RFC 3161 §2.4.2 behaviour we want to serve.
        """
        async with self._lock:
            try:
                proc = await asyncio.create_subprocess_exec(
                    self._openssl, "ts", "-reply",
                    "-config", str(self.data_dir / TSA_CONFIG),
                    "-queryfile", "/dev/stdin", "-out", "/dev/stdout",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
            except OSError as exc:
                raise DevTsaError(f"cannot run {self._openssl}: {exc.strerror or exc}") from None
            out, err = await proc.communicate(query)
        if proc.returncode != 0 or not out:
            reason = err.decode(errors="replace").strip().splitlines()
            raise DevTsaError(
                f"openssl ts -reply failed with exit status {proc.returncode}: "
                f"{reason[-1] if reason else 'no message'}"
            )
        return out

    def app(self) -> web.Application:
        """The aiohttp application serving RFC 3161 over HTTP at ``/``."""
        app = web.Application(client_max_size=MAX_QUERY_BYTES)
        app.router.add_post("/", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        if request.content_type != QUERY_CONTENT_TYPE:
            return web.Response(status=415, text=f"expected Content-Type {QUERY_CONTENT_TYPE}\n")
        query = await request.read()
        try:
            reply = await self.reply(query)
        except DevTsaError as exc:
            return web.Response(status=500, text=f"{exc}\n")
        return web.Response(body=reply, content_type=REPLY_CONTENT_TYPE)


def nodelay_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket with TCP_NODELAY set (port 0 picks a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class RunningServer:
    """An aiohttp application listening on a socket; ``await close()`` stops it."""

    url: str
    runner: web.AppRunner

    async def close(self) -> None:
        await self.runner.cleanup()


async def serve(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Serve ``app`` over HTTP on host:port (0 = a free port) with Nagle off."""
    try:
        sock = nodelay_listener(host, port)
    except OSError as exc:
        raise DevTsaError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return RunningServer(url=f"http://{shown}:{bound_port}/", runner=runner)


async def serve_until_cancelled(data_dir: Path | str, host: str, port: int, *, announce=print) -> None:
    """Run a dev TSA until the task is cancelled (the ``notary dev-tsa`` command)."""
    tsa = DevTsa(data_dir)
    server = await serve(tsa.app(), host, port)
    announce(f"dev TSA listening on {server.url} (root certificate: {tsa.root_cert_path})")
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()
