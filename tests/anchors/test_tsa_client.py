"""The RFC 3161 client against real TSAs: the dev TSA, a rogue one, and real bad answers.

Every bad response here is produced for real: a second dev TSA with its own
CA and the same names; the real dev TSA answering a query we rewrote on the
way (other imprint, other nonce, no policy); a replayed earlier response; a
rejection built with asn1crypto; a TSA that accepts connections but never
answers; a port where nothing listens.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
import subprocess

import pytest
import rfc3161_client
from asn1crypto import core, tsp
from cryptography import x509

from anchors.devs3 import free_ports
from anchors.devtsa import DEV_POLICY_OID
from anchors.errors import (
    AllTsasFailedError,
    ImprintMismatchError,
    NonceMismatchError,
    PolicyMismatchError,
    TsaRejectedError,
    TsaUnavailableError,
    UntrustedTsaError,
)
from anchors.tsa import TimestampClient, TsaEndpoint, build_request, load_roots, verify_token

# A signed checkpoint as the daemon would timestamp it (C2SP signed note).
CHECKPOINT = "example.com/log\n42\nqUzhJ1f3Yp0Z2Pm2Js0x2Gf6yQn9zq1U0Qm3aFzS4oM=\n\n\u2014 example.com/log AAAAAQ==\n".encode()


def timestamp(*endpoints: TsaEndpoint, message: bytes = CHECKPOINT):
    async def run():
        async with TimestampClient(endpoints) as client:
            return await client.timestamp(message)

    return asyncio.run(run())


def rewriting_tsa(tsa_app, forward, upstream: str, rewrite) -> str:
    """A TSA URL that passes each query through ``rewrite(TimeStampReq)`` to ``upstream``."""

    async def answer(query: bytes) -> bytes:
        request = tsp.TimeStampReq.load(query)
        rewrite(request)
        return await forward(upstream, request.dump(force=True))

    return tsa_app(answer)


def test_dev_tsa_token_verifies_under_our_client_and_openssl(dev_tsa, tmp_path):
    token = timestamp(dev_tsa.endpoint(policy=DEV_POLICY_OID))
    assert token.policy == DEV_POLICY_OID

    (tmp_path / "checkpoint").write_bytes(CHECKPOINT)
    (tmp_path / "token.der").write_bytes(token.der)
    verified = subprocess.run(
        ["openssl", "ts", "-verify", "-data", str(tmp_path / "checkpoint"),
         "-in", str(tmp_path / "token.der"), "-token_in", "-CAfile", str(dev_tsa.tsa.root_cert_path)],
        capture_output=True, text=True,
    )
    assert verified.returncode == 0, verified.stderr
    assert "Verification: OK" in verified.stdout

    # The stored token alone (no nonce) verifies over the checkpoint, and only over it.
    assert verify_token(token.der, CHECKPOINT, load_roots(dev_tsa.tsa.root_cert_path)).der == token.der
    with pytest.raises(ImprintMismatchError):
        verify_token(token.der, CHECKPOINT + b"x", load_roots(dev_tsa.tsa.root_cert_path))


def test_token_is_kept_byte_for_byte(dev_tsa, tsa_app, forward):
    responses: list[bytes] = []

    async def recording(query: bytes) -> bytes:
        responses.append(await forward(dev_tsa.url, query))
        return responses[-1]

    url = tsa_app(recording)
    token = timestamp(TsaEndpoint(url, load_roots(dev_tsa.tsa.root_cert_path)))
    [response] = responses
    assert token.der == rfc3161_client.decode_timestamp_response(response).time_stamp_token()
    assert response.endswith(token.der)


def test_token_from_untrusted_ca_with_same_names_is_refused(dev_tsa, rogue_tsa):
    ours = x509.load_pem_x509_certificate((dev_tsa.tsa.data_dir / "tsa.pem").read_bytes())
    theirs = x509.load_pem_x509_certificate((rogue_tsa.tsa.data_dir / "tsa.pem").read_bytes())
    assert (ours.subject, ours.issuer) == (theirs.subject, theirs.issuer)
    assert ours.public_key() != theirs.public_key()

    with pytest.raises(UntrustedTsaError, match="not signed by a TSA the configured roots trust"):
        timestamp(TsaEndpoint(rogue_tsa.url, load_roots(dev_tsa.tsa.root_cert_path)))


def test_token_over_another_imprint_is_refused(dev_tsa, tsa_app, forward):
    def other_imprint(request):
        request["message_imprint"]["hashed_message"] = hashlib.sha256(b"another checkpoint").digest()

    url = rewriting_tsa(tsa_app, forward, dev_tsa.url, other_imprint)
    with pytest.raises(ImprintMismatchError, match="the token time-stamps .* digest .*, expected SHA-256 digest"):
        timestamp(TsaEndpoint(url, load_roots(dev_tsa.tsa.root_cert_path)))


def test_token_with_another_nonce_is_refused(dev_tsa, tsa_app, forward):
    def other_nonce(request):
        request["nonce"] = request["nonce"].native + 1

    url = rewriting_tsa(tsa_app, forward, dev_tsa.url, other_nonce)
    with pytest.raises(NonceMismatchError, match="the token's nonce is \\d+, expected \\d+"):
        timestamp(TsaEndpoint(url, load_roots(dev_tsa.tsa.root_cert_path)))


def test_replayed_token_is_refused(dev_tsa, tsa_app, forward):
    first: list[bytes] = []

    async def replaying(query: bytes) -> bytes:
        if not first:
            first.append(await forward(dev_tsa.url, query))
        return first[0]

    endpoint = TsaEndpoint(tsa_app(replaying), load_roots(dev_tsa.tsa.root_cert_path))
    timestamp(endpoint)  # the genuine answer to the first request
    with pytest.raises(NonceMismatchError, match="replayed or foreign token"):
        timestamp(endpoint)  # same message, new nonce, old answer


def test_token_under_another_policy_is_refused(dev_tsa, tsa_app, forward):
    def drop_policy(request):
        request["req_policy"] = None

    url = rewriting_tsa(tsa_app, forward, dev_tsa.url, drop_policy)
    with pytest.raises(PolicyMismatchError, match=f"issued under policy {DEV_POLICY_OID}, expected 1.3.6.1.4.1.99999.1"):
        timestamp(TsaEndpoint(url, load_roots(dev_tsa.tsa.root_cert_path), policy="1.3.6.1.4.1.99999.1"))


class _StatusOnlyResp(core.Sequence):
    """A TimeStampResp without a token, as RFC 3161 §2.4.2 sends with a failure."""

    _fields = [("status", tsp.PKIStatusInfo)]


def test_rejection_status_is_refused(dev_tsa, tsa_app):
    rejection = _StatusOnlyResp({"status": {
        "status": "rejection",
        "status_string": ["the hash algorithm is not supported"],
        "fail_info": {"bad_alg"},
    }}).dump()

    async def rejecting(query: bytes) -> bytes:
        return rejection

    url = tsa_app(rejecting)
    with pytest.raises(TsaRejectedError, match="refused to time-stamp: status rejection, failure bad_alg, "
                                               "'the hash algorithm is not supported'"):
        timestamp(TsaEndpoint(url, load_roots(dev_tsa.tsa.root_cert_path)))


def test_unknown_policy_request_is_reported_as_the_tsas_rejection(dev_tsa):
    with pytest.raises(TsaRejectedError, match="unaccepted_policy"):
        timestamp(dev_tsa.endpoint(policy="1.3.6.1.4.1.99999.1"))


@pytest.fixture
def silent_tsa():
    """A URL whose server accepts the connection and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    sock.close()


def test_silent_tsa_times_out_with_a_clear_error(dev_tsa, silent_tsa):
    roots = load_roots(dev_tsa.tsa.root_cert_path)
    with pytest.raises(TsaUnavailableError, match=f"TSA {silent_tsa} did not answer within 0.3 s"):
        timestamp(TsaEndpoint(silent_tsa, roots, timeout=0.3))


def test_failover_tries_the_next_tsa(dev_tsa, rogue_tsa, silent_tsa):
    roots = load_roots(dev_tsa.tsa.root_cert_path)
    [closed_port] = free_ports(1)
    refused = f"http://127.0.0.1:{closed_port}/"
    token = timestamp(
        TsaEndpoint(silent_tsa, roots, timeout=0.3),
        TsaEndpoint(refused, roots),
        TsaEndpoint(rogue_tsa.url, roots),
        dev_tsa.endpoint(),
    )
    assert verify_token(token.der, CHECKPOINT, roots).serial_number == token.serial_number

    with pytest.raises(AllTsasFailedError) as failed:
        timestamp(TsaEndpoint(silent_tsa, roots, timeout=0.3), TsaEndpoint(refused, roots))
    assert [url for url, _ in failed.value.errors] == [silent_tsa, refused]
    assert failed.value.unavailable_only
    assert "could not be reached" in str(failed.value)


def test_all_tsas_failing_with_a_bad_token_is_not_just_unavailability(dev_tsa, rogue_tsa, silent_tsa):
    roots = load_roots(dev_tsa.tsa.root_cert_path)
    with pytest.raises(AllTsasFailedError) as failed:
        timestamp(TsaEndpoint(silent_tsa, roots, timeout=0.3), TsaEndpoint(rogue_tsa.url, roots))
    assert not failed.value.unavailable_only
    assert isinstance(failed.value.errors[1][1], UntrustedTsaError)


def test_request_is_what_openssl_reads_as_sha256_with_nonce_and_cert_request(tmp_path):
    digest = hashlib.sha256(CHECKPOINT).digest()
    (tmp_path / "query.der").write_bytes(build_request(digest, 0x4000_0000_0000_0001, "1.3.6.1.4.1.99999.1"))
    shown = subprocess.run(["openssl", "ts", "-query", "-in", str(tmp_path / "query.der"), "-text"],
                           capture_output=True, text=True, check=True).stdout
    assert "Hash Algorithm: sha256" in shown
    dump_rows = re.findall(r"^\s+[0-9a-f]{4} - ((?:[0-9a-f]{2}[ -]){15}[0-9a-f]{2})", shown, re.MULTILINE)
    assert bytes.fromhex("".join(dump_rows).replace("-", " ")) == digest
    assert "Policy OID: 1.3.6.1.4.1.99999.1" in shown
    assert "Nonce: 0x4000000000000001" in shown
    assert "Certificate required: yes" in shown


def test_a_damaged_stored_token_is_a_tsa_error_never_another_exception(dev_tsa):
    """``notary audit`` reads tokens anyone with write access to the bucket may have made: each must end in a finding."""
    import random

    from anchors.errors import TsaError

    token = timestamp(dev_tsa.endpoint())
    roots = load_roots(dev_tsa.tsa.root_cert_path)
    rng = random.Random(1)
    refused = 0
    for _ in range(400):
        damaged = bytearray(token.der)
        if rng.random() < 0.5:
            for _ in range(rng.randint(1, 4)):
                damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        else:
            damaged = damaged[: rng.randrange(len(damaged))]
        try:
            verify_token(bytes(damaged), CHECKPOINT, roots)
        except TsaError:
            refused += 1
    assert refused >= 390  # (a flipped bit in an unsigned, unchecked field may leave a token valid)
