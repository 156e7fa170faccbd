"""Producers' side of the notary: clients (sync and asyncio, HTTP and unix socket) and the audit handler.

``from notary.client import HttpClient, submit_unix, line_digests`` keeps
working: the synchronous client lives in ``notary.client.sync``.
"""

from typing import Any

from notary.client.sync import (AcknowledgedNotSealedError, ClientError, HttpClient, UnixClient, line_digests,
                               record_digest, submit_unix)

# The asyncio client brings in aiohttp (a third of a second to import), and
# only producers use the logging handler: both are loaded on first use, so
# that a command that needs only the synchronous client (``notary submit``,
# ``notary verify``) starts fast.
_LAZY = {"AsyncHttpClient": "notary.client.aio", "submit_unix_async": "notary.client.aio",
         "HandlerError": "notary.client.handler", "NotAcknowledgedError": "notary.client.handler",
         "NotaryHandler": "notary.client.handler", "Receipt": "notary.client.handler",
         "Transport": "notary.client.handler", "canonical_line": "notary.client.handler"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'notary.client' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

__all__ = [
    "AcknowledgedNotSealedError", "AsyncHttpClient", "ClientError", "HandlerError", "HttpClient", "NotAcknowledgedError", "NotaryHandler",
    "Receipt", "Transport", "UnixClient", "canonical_line", "line_digests", "record_digest", "submit_unix",
    "submit_unix_async",
]
