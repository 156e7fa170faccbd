"""The development TSA: its certificates, its serialized openssl, its command."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from anchors.devtsa import DevTsa, nodelay_listener
from anchors.errors import DevTsaError
from anchors.tsa import TimestampClient, TsaEndpoint, load_roots, verify_token


def test_tsa_certificate_has_only_the_critical_timestamping_eku(dev_tsa):
    cert = x509.load_pem_x509_certificate((dev_tsa.tsa.data_dir / "tsa.pem").read_bytes())
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical
    assert list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    [root] = load_roots(dev_tsa.tsa.root_cert_path)
    assert cert.issuer == root.subject
    cert.verify_directly_issued_by(root)


def test_restart_keeps_the_root(tmp_path):
    first = DevTsa(tmp_path).root_cert_path.read_bytes()
    assert DevTsa(tmp_path).root_cert_path.read_bytes() == first


def test_concurrent_queries_get_distinct_serials(dev_tsa):
    """openssl's serial file survives concurrent load because calls are serialized."""
    messages = [f"checkpoint {i}\n".encode() for i in range(24)]

    async def run():
        async with TimestampClient([dev_tsa.endpoint()]) as client:
            return await asyncio.gather(*(client.timestamp(m) for m in messages))

    tokens = asyncio.run(run())
    roots = load_roots(dev_tsa.tsa.root_cert_path)
    for message, token in zip(messages, tokens, strict=True):
        verify_token(token.der, message, roots)
    assert len({t.serial_number for t in tokens}) == len(tokens)


def test_listener_has_nagle_off():
    sock = nodelay_listener("127.0.0.1", 0)
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        sock.close()


def test_notary_dev_tsa_command_serves_verifiable_tokens(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "notary.cli", "dev-tsa", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        banner = proc.stdout.readline()
        assert banner.startswith("dev TSA listening on http://127.0.0.1:"), proc.stderr.read()
        url = banner.split()[4]

        async def run():
            async with TimestampClient([TsaEndpoint(url, load_roots(tmp_path / "root.pem"))]) as client:
                return await client.timestamp(b"checkpoint\n")

        token = asyncio.run(run())
        verify_token(token.der, b"checkpoint\n", load_roots(tmp_path / "root.pem"))
    finally:
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=30)
    assert status == 0


def test_notary_dev_tsa_reports_a_busy_port_in_one_sentence(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "notary.cli", "dev-tsa", "--data-dir", str(tmp_path), "--listen", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60,
        )
    finally:
        busy.close()
    assert done.returncode == 1
    assert done.stderr == f"notary dev-tsa: cannot listen on 127.0.0.1:{port}: Address already in use\n"


def test_dev_tsa_without_openssl_refuses_to_start_in_one_sentence(tmp_path):
    with pytest.raises(DevTsaError, match="is not installed"):
        DevTsa(tmp_path / "a", openssl="no-such-openssl-here")
    empty = tmp_path / "bin"
    empty.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "notary.cli", "dev-tsa", "--data-dir", str(tmp_path / "b"), "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PATH": str(empty)},
    )
    assert done.returncode == 1
    assert done.stderr.startswith("notary dev-tsa: openssl is not installed")
    assert done.stderr.count("\n") == 1
