"""Producers' side of the notary: clients (sync and asyncio, HTTP and unix socket) and the audit handler.

``from notary.client import HttpClient, submit_unix, line_digests`` keeps
working: the synchronous client lives in ``notary.client.sync``.
"""

from notary.client.aio import AsyncHttpClient, submit_unix_async
from notary.client.handler import (HandlerError, NotAcknowledgedError, NotaryHandler, Receipt, Transport,
                                   canonical_line)
from notary.client.sync import ClientError, HttpClient, UnixClient, line_digests, record_digest, submit_unix

__all__ = [
    "AsyncHttpClient", "ClientError", "HandlerError", "HttpClient", "NotAcknowledgedError", "NotaryHandler",
    "Receipt", "Transport", "UnixClient", "canonical_line", "line_digests", "record_digest", "submit_unix",
    "submit_unix_async",
]
