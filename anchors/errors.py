"""The exception hierarchy of the anchors package.

Every error a caller is expected to handle is a subclass of ``AnchorError``;
each message is one sentence naming what is wrong and, where it helps, both
sides ("the token's nonce is 5, expected 7"). The daemon matches the classes:
``TsaUnavailableError`` and ``S3UnavailableError`` mean "retry later", every
other class means someone must look.
"""

from __future__ import annotations


class AnchorError(Exception):
    """Base class of every error the anchors package raises on purpose."""


# --- RFC 3161 time-stamping ---------------------------------------------------


class TsaError(AnchorError):
    """A timestamp could not be obtained or does not verify."""


class TsaUnavailableError(TsaError):
    """A TSA did not answer in time, refused the connection or answered HTTP non-200."""


class TsaResponseError(TsaError):
    """A TSA answered, but not with a timestamp we can accept (malformed response)."""


class TsaRejectedError(TsaResponseError):
    """The TSA answered with a PKIStatus other than granted (RFC 3161 §2.4.2)."""


class UntrustedTsaError(TsaResponseError):
    """The token's signature does not chain to a configured root, or its signer lacks the critical timeStamping EKU."""


class ImprintMismatchError(TsaResponseError):
    """The token time-stamps a different message than the one we sent."""


class NonceMismatchError(TsaResponseError):
    """The token's nonce is not the one in our request (a replayed or foreign token)."""


class PolicyMismatchError(TsaResponseError):
    """The token was issued under another TSA policy than the configured one."""


class AllTsasFailedError(TsaError):
    """Every configured TSA failed; ``errors`` holds ``(url, error)`` per TSA, in the order tried."""

    def __init__(self, errors: list[tuple[str, TsaError]]):
        self.errors = errors
        detail = "; ".join(str(err) for _, err in errors)
        super().__init__(f"none of the {len(errors)} configured TSAs issued a valid timestamp ({detail})")

    @property
    def unavailable_only(self) -> bool:
        """True when every TSA was merely unreachable (retry later), none answered wrongly."""
        return all(isinstance(err, TsaUnavailableError) for _, err in self.errors)


# --- S3 Object Lock publication -------------------------------------------------


class S3Error(AnchorError):
    """The seal could not be published to or read from S3."""


class S3UnavailableError(S3Error):
    """S3 could not be reached or answered with an error that says nothing about the seal."""


class BucketNotLockableError(S3Error):
    """The bucket does not have Object Lock and versioning enabled, so a seal put there could be withdrawn."""


class IntegrityAlarm(S3Error):
    """A different object, a second version or a delete marker exists at a seal's key: evidence of tampering."""


class LockCheckError(S3Error):
    """A seal's object-lock retention, read back, is not COMPLIANCE until the expected date."""


# --- the development TSA and S3 ------------------------------------------------------


class DevTsaError(AnchorError):
    """The development TSA could not create its keys or sign a reply."""


class DevS3Error(AnchorError):
    """The development SeaweedFS could not be found or started."""
