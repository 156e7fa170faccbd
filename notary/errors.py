"""The exception hierarchy of the notary package.

Every error a caller is expected to handle is a subclass of ``NotaryError``,
and every message names what is wrong and, where it helps, both sides
("inclusion proof has 3 hashes, expected 4 for index 5 in a tree of 9").
"""


class NotaryError(Exception):
    """Base class of every error the notary package raises on purpose."""


class FormatError(NotaryError, ValueError):
    """Input in one of our documented formats is malformed.

    The only error the parsers (entry, signed note, checkpoint, tlog-proof,
    verifier key, digest) ever raise, whatever the input.
    """


class VerificationError(NotaryError):
    """A well-formed proof or signature does not verify."""


class StoreError(NotaryError):
    """The log store cannot be used: missing, corrupt, or a request it cannot answer."""
