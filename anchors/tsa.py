"""RFC 3161 time-stamping: build a request, verify a response, keep the token.

``TimestampClient.timestamp(message)`` asks the configured TSAs, in priority
order, to time-stamp SHA-256(message) and returns the first token that
verifies: status granted, signature chaining to that TSA's configured roots
with a signer holding the critical id-kp-timeStamping EKU, our nonce, our
imprint, and the configured policy (verification by ``rfc3161-client``; the
request is built with ``asn1crypto`` so that the imprint is exactly the digest
we give). The token (a DER ``TimeStampToken``, RFC 3161 §2.4.2) is kept byte
for byte as the TSA sent it; ``openssl ts -verify`` accepts it
(tests/anchors/test_tsa_client.py).

Verification is pure (``verify_response``, ``verify_token``); only the client
does I/O. Tokens are never accepted from a TSA that fails a check: the client
moves on to the next TSA instead.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import rfc3161_client
from asn1crypto import cms
from asn1crypto import core as asn1
from asn1crypto import tsp
from cryptography import x509

from anchors.errors import (
    AllTsasFailedError,
    ImprintMismatchError,
    NonceMismatchError,
    PolicyMismatchError,
    TsaError,
    TsaRejectedError,
    TsaResponseError,
    TsaUnavailableError,
    UntrustedTsaError,
)

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

QUERY_CONTENT_TYPE = "application/timestamp-query"
SHA256_OID = "2.16.840.1.101.3.4.2.1"
DEFAULT_TIMEOUT = 10.0  # seconds per request, connection included

# A TimeStampResp with a certificate chain is a few kilobytes; stop reading
# well before a hostile or broken server could exhaust memory.
MAX_RESPONSE_BYTES = 256 * 1024


@dataclass(frozen=True)
class TimestampToken:
    """A verified RFC 3161 token and what it says.

    ``der`` is the DER TimeStampToken (a CMS ContentInfo) exactly as the TSA
    sent it; the other fields are read from it for logs and metrics.
    """

    der: bytes
    gen_time: datetime.datetime
    serial_number: int
    policy: str
    tsa: str = ""  # the signing certificate's subject (RFC 4514), for verdicts people read


@dataclass(frozen=True)
class TsaEndpoint:
    """One TSA: its URL, the roots its tokens must chain to, its policy if pinned."""

    url: str
    roots: tuple[x509.Certificate, ...]
    policy: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        if not self.roots:
            raise ValueError(f"TSA {self.url} has no root certificate configured")
        if not self.timeout > 0:
            raise ValueError(f"TSA {self.url} has timeout {self.timeout}, expected a positive number of seconds")


def load_roots(path: Path | str) -> tuple[x509.Certificate, ...]:
    """Every certificate in a PEM file (a TSA's trusted roots)."""
    return tuple(x509.load_pem_x509_certificates(Path(path).read_bytes()))


def build_request(digest: bytes, nonce: int, policy: str | None = None) -> bytes:
    """DER TimeStampReq (RFC 3161 §2.4.1) for a SHA-256 digest, certReq true."""
    if len(digest) != 32:
        raise ValueError(f"SHA-256 digest has {len(digest)} bytes, expected 32")
    fields = {
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": "sha256"}, "hashed_message": digest},
        "nonce": nonce,
        # certReq: the TSA must include its certificate, so that a verifier
        # needs nothing but the root.
        "cert_req": True,
    }
    if policy is not None:
        fields["req_policy"] = policy
    return tsp.TimeStampReq(fields).dump()


def new_nonce() -> int:
    """A random positive 64-bit nonce (RFC 3161 §2.4.1: large random number)."""
    return secrets.randbits(63) | (1 << 62)


def verify_response(
    response: bytes,
    digest: bytes,
    roots: Sequence[x509.Certificate],
    *,
    nonce: int | None,
    policy: str | None = None,
) -> TimestampToken:
    """Verify a DER TimeStampResp for ``digest`` and return its token.

    Checks, in this order, each failure with its own error class: status
    granted (``TsaRejectedError``); signature chaining to ``roots`` with a
    critical timeStamping EKU (``UntrustedTsaError``); imprint = SHA-256
    ``digest`` (``ImprintMismatchError``); ``nonce`` unless None, for stored
    tokens (``NonceMismatchError``); ``policy`` unless None
    (``PolicyMismatchError``).
    """
    try:
        parsed = _TimeStampResp.load(response, strict=True)
        status = parsed["status"]["status"].native
        token = parsed["time_stamp_token"]
    except ValueError as exc:
        raise TsaResponseError(f"the TSA response is not a DER TimeStampResp ({_one_line(exc)})") from None
    if status != "granted":
        raise TsaRejectedError(f"the TSA refused to time-stamp: {_describe_status(parsed['status'])}")
    if isinstance(token, asn1.Void):
        raise TsaResponseError("the TSA response has status granted but carries no token")
    try:
        decoded = rfc3161_client.decode_timestamp_response(response)
    except ValueError as exc:
        raise TsaResponseError(f"the TSA response's token cannot be decoded ({_one_line(exc)})") from None

    try:
        return _verified(decoded, token, digest, roots, nonce, policy)
    except ValueError as exc:  # rfc3161-client parses some fields only when they are read
        raise TsaResponseError(f"the token is malformed ({_one_line(exc)})") from None


def _verified(decoded, token, digest: bytes, roots: Sequence[x509.Certificate], nonce: int | None,
              policy: str | None) -> TimestampToken:
    builder = rfc3161_client.VerifierBuilder(roots=list(roots))
    if nonce is not None:
        builder = builder.nonce(nonce)
    if policy is not None:
        builder = builder.policy_id(x509.ObjectIdentifier(policy))
    try:
        builder.build().verify(decoded, digest)
    except rfc3161_client.VerificationError as exc:
        _raise_if_untrusted(decoded, roots)
        _check_fields(decoded.tst_info, digest, nonce, policy)
        raise TsaResponseError(f"the token does not verify ({_one_line(exc)})") from None
    # rfc3161-client compares the imprint's bytes but not its algorithm.
    _check_fields(decoded.tst_info, digest, nonce, policy)

    info = decoded.tst_info
    return TimestampToken(
        der=token.dump(),
        gen_time=info.gen_time,
        serial_number=info.serial_number,
        policy=info.policy.dotted_string,
        tsa=_signer_subject(decoded.signed_data),
    )


def _signer_subject(signed_data) -> str:
    """The subject of the embedded certificate named by the signer info (issuer and serial, RFC 5652 §5.3)."""
    for signer in signed_data.signer_infos:
        for der in signed_data.certificates:
            cert = x509.load_der_x509_certificate(der)
            if cert.issuer == signer.issuer and cert.serial_number == signer.serial_number:
                return cert.subject.rfc4514_string()
    return "an unnamed TSA"


def verify_token(
    token: bytes,
    message: bytes,
    roots: Sequence[x509.Certificate],
    *,
    policy: str | None = None,
) -> TimestampToken:
    """Verify a stored DER TimeStampToken over ``message`` (no nonce to check).

    What an auditor runs on a seal's ``timestamp_token`` and signed checkpoint.
    """
    try:
        content = cms.ContentInfo.load(token, strict=True)
    except ValueError as exc:
        raise TsaResponseError(f"the timestamp token is not a DER ContentInfo ({exc})") from None
    response = _TimeStampResp({"status": {"status": "granted"}, "time_stamp_token": content}).dump()
    return verify_response(response, hashlib.sha256(message).digest(), roots, nonce=None, policy=policy)


class _TimeStampResp(asn1.Sequence):
    """RFC 3161 §2.4.2 TimeStampResp; asn1crypto's own omits OPTIONAL on the token."""

    _fields = [
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


def _one_line(exc: Exception) -> str:
    """The gist of a library's error: openssl's verify reason if present, else its first line."""
    text = str(exc)
    found = re.search(r'Verify error: ([^"]+)"', text)
    return found.group(1) if found else text.strip().splitlines()[0]


def _describe_status(status_info: tsp.PKIStatusInfo) -> str:
    parts = [f"status {status_info['status'].native}"]
    fail_info = status_info["fail_info"]
    if not isinstance(fail_info, asn1.Void) and fail_info.native:
        parts.append("failure " + ", ".join(sorted(fail_info.native)))
    text = status_info["status_string"]
    if not isinstance(text, asn1.Void) and text.native:
        parts.append(repr(" ".join(text.native)))
    return ", ".join(parts)


def _raise_if_untrusted(decoded, roots: Sequence[x509.Certificate]) -> None:
    """Raise ``UntrustedTsaError`` if the token fails even with no expectations set.

    Checking chain, signature and EKU against the token's own imprint first
    means a forged token is reported as untrusted, whatever else it claims.
    """
    trust_only = rfc3161_client.VerifierBuilder(roots=list(roots)).build()
    try:
        trust_only.verify(decoded, decoded.tst_info.message_imprint.message)
    except rfc3161_client.VerificationError as why:
        raise UntrustedTsaError(
            f"the token is not signed by a TSA the configured roots trust ({_one_line(why)})"
        ) from None


def _check_fields(info, digest: bytes, nonce: int | None, policy: str | None) -> None:
    imprint = info.message_imprint
    if imprint.hash_algorithm.dotted_string != SHA256_OID or not hmac.compare_digest(imprint.message, digest):
        raise ImprintMismatchError(
            f"the token time-stamps {imprint.hash_algorithm.dotted_string} digest "
            f"{imprint.message.hex()}, expected SHA-256 digest {digest.hex()}"
        )
    if nonce is not None and info.nonce != nonce:
        raise NonceMismatchError(f"the token's nonce is {info.nonce}, expected {nonce} (a replayed or foreign token)")
    if policy is not None and info.policy.dotted_string != policy:
        raise PolicyMismatchError(f"the token was issued under policy {info.policy.dotted_string}, expected {policy}")


class TimestampClient:
    """Asks TSAs for timestamps over HTTP, in priority order, with failover.

    Use as ``async with TimestampClient(endpoints) as client: token = await
    client.timestamp(signed_checkpoint)``. One aiohttp session serves every
    request; it ignores proxy settings from the environment.
    """

    def __init__(self, endpoints: Sequence[TsaEndpoint]):
        if not endpoints:
            raise ValueError("no TSA configured")
        self.endpoints = tuple(endpoints)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> TimestampClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def timestamp(self, message: bytes) -> TimestampToken:
        """A verified token over SHA-256(message) from the first TSA that gives one.

        Raises the TSA's own ``TsaError`` when one TSA is configured, and
        ``AllTsasFailedError`` (carrying every TSA's error) when several are.
        """
        digest = hashlib.sha256(message).digest()
        errors: list[tuple[str, TsaError]] = []
        for endpoint in self.endpoints:
            try:
                return await self._timestamp_at(endpoint, digest)
            except TsaError as exc:
                log.warning("TSA %s failed: %s", endpoint.url, exc)
                errors.append((endpoint.url, exc))
        if len(errors) == 1:
            raise errors[0][1]
        raise AllTsasFailedError(errors)

    async def _timestamp_at(self, endpoint: TsaEndpoint, digest: bytes) -> TimestampToken:
        nonce = new_nonce()
        query = build_request(digest, nonce, endpoint.policy)
        response = await self._post(endpoint, query)
        try:
            return verify_response(response, digest, endpoint.roots, nonce=nonce, policy=endpoint.policy)
        except TsaError as exc:
            raise type(exc)(f"TSA {endpoint.url}: {exc}") from None

    async def _post(self, endpoint: TsaEndpoint, query: bytes) -> bytes:
        import aiohttp  # here: verifying a token (notary verify, audit) needs no HTTP client

        if self._session is None:
            self._session = aiohttp.ClientSession(trust_env=False)
        try:
            async with asyncio.timeout(endpoint.timeout):
                async with self._session.post(
                    endpoint.url, data=query, headers={"Content-Type": QUERY_CONTENT_TYPE}
                ) as resp:
                    if resp.status != 200:
                        raise TsaUnavailableError(f"TSA {endpoint.url} answered HTTP {resp.status} {resp.reason}")
                    body = bytearray()
                    async for chunk in resp.content.iter_chunked(64 * 1024):
                        body += chunk
                        if len(body) > MAX_RESPONSE_BYTES:
                            raise TsaResponseError(
                                f"TSA {endpoint.url} sent more than {MAX_RESPONSE_BYTES} bytes, "
                                "too many for a timestamp response"
                            )
                    return bytes(body)
        except TimeoutError:
            raise TsaUnavailableError(f"TSA {endpoint.url} did not answer within {endpoint.timeout:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise TsaUnavailableError(f"TSA {endpoint.url} could not be reached ({exc})") from None
