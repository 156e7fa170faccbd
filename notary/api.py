"""The HTTP interface: ingest for producers, read-only answers for auditors.

Ingest (``Authorization: Bearer <token>``):
    POST /v1/entries        {"digests": ["<64 hex>", ...]} -> {"entries": [{"index": N}, ...]}
                            ?wait=sealed: answer once the entries are sealed and anchored,
                            with their tlog-proofs
Auditors (no token):
    GET /checkpoint                         latest signed checkpoint (C2SP text)
    GET /v1/proof?digest=<hex>|index=N[&size=N]   c2sp.org/tlog-proof@v1 text
    GET /v1/consistency?from=M&to=N         {"from", "to", "proof": [base64...]}
    GET /v1/seals/<size>                    the seal JSON and where it lives in S3
    GET /metrics, GET /healthz
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from typing import TYPE_CHECKING

from aiohttp import web

from notary.checkpoint import parse_signed_checkpoint
from notary.entry import encode_entries, parse_digest_hex
from notary.errors import FormatError, NotaryError
from notary.sequencer import Overloaded
from notary.tlogproof import TlogProof

if TYPE_CHECKING:
    from notary.daemon import Notary

TEXT = "text/plain; charset=utf-8"


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _int_param(request: web.Request, name: str, default: int | None = None) -> int | None:
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"{name}: must be a non-negative integer, got {text[:40]!r}"}),
                                 content_type="application/json")
    return int(text)


def build_app(notary: Notary) -> web.Application:
    cfg = notary.config
    app = web.Application(client_max_size=cfg.limits.max_request_bytes)
    routes = web.RouteTableDef()

    @routes.post("/v1/entries")
    async def submit(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        source = notary.config.http_tokens.get(hashlib.sha256(token.encode()).digest()) if scheme == "Bearer" else None
        if source is None:
            notary.metrics.inc("notary_ingest_rejected_total", reason="unauthorized")
            return _error(401, "missing or unknown bearer token", **{"WWW-Authenticate": "Bearer"})
        if request.content_length is not None and request.content_length > cfg.limits.max_request_bytes:
            notary.metrics.inc("notary_ingest_rejected_total", reason="too_large")
            return _error(413, f"request body is {request.content_length} bytes, limit {cfg.limits.max_request_bytes}")
        try:
            body = await request.json()
        except web.HTTPRequestEntityTooLarge:
            notary.metrics.inc("notary_ingest_rejected_total", reason="too_large")
            return _error(413, f"request body is larger than the limit of {cfg.limits.max_request_bytes} bytes")
        except (ValueError, UnicodeDecodeError):
            return _error(400, "body is not JSON")
        digests = body.get("digests") if isinstance(body, dict) else None
        if not isinstance(digests, list) or not digests:
            return _error(400, 'body must be {"digests": ["<64 hex digits>", ...]} with at least one digest')
        if len(digests) > cfg.limits.max_request_digests:
            notary.metrics.inc("notary_ingest_rejected_total", reason="too_large")
            return _error(413, f"{len(digests)} digests in one request, limit {cfg.limits.max_request_digests}")
        parsed = []
        for i, d in enumerate(digests):
            try:
                if not isinstance(d, str):
                    raise FormatError(f"digest {d!r} is not a string")
                parsed.append(parse_digest_hex(d))
            except FormatError as exc:
                notary.metrics.inc("notary_ingest_rejected_total", reason="malformed")
                return _error(400, f"digests[{i}]: {exc}")
        entries = encode_entries(parsed, source)
        try:
            first = await notary.submit(entries)
        except Overloaded as exc:
            return _error(503, str(exc), **{"Retry-After": str(exc.retry_after)})
        indices = list(range(first, first + len(entries)))
        if request.query.get("wait") == "sealed":
            await notary.wait_anchored(indices[-1])
            proofs = [(await notary.tlog_proof(i)).format() for i in indices]
            return web.json_response({"entries": [{"index": i, "proof": p} for i, p in zip(indices, proofs)]})
        return web.json_response({"entries": [{"index": i} for i in indices]})

    @routes.get("/checkpoint")
    async def checkpoint(request: web.Request) -> web.Response:
        seal = notary.sealer.latest
        if seal is None:
            return _error(404, "nothing has been sealed yet")
        return web.Response(body=seal.checkpoint, content_type="text/plain", charset="utf-8")

    @routes.get("/v1/proof")
    async def proof(request: web.Request) -> web.Response:
        size = _int_param(request, "size")
        if "digest" in request.query:
            try:
                digest = parse_digest_hex(request.query["digest"])
            except FormatError as exc:
                return _error(400, f"digest: {exc}")
            indices = await notary.find(digest)
            if not indices:
                return _error(404, f"digest {digest.hex()} is not in the log")
            index = indices[0]
        else:
            index = _int_param(request, "index")
            if index is None:
                return _error(400, "give digest=<64 hex digits> or index=<n>")
            if index >= notary.sequencer.size:
                return _error(404, f"index {index} is not in the log, which has {notary.sequencer.size} entries")
        try:
            tp = await notary.tlog_proof(index, size)
        except NotYetSealed as exc:
            return _error(425, str(exc), **{"Retry-After": str(max(1, round(cfg.max_age)))})
        except NotaryError as exc:
            return _error(404, str(exc))
        return web.Response(text=tp.format(), content_type="text/plain")

    @routes.get("/v1/consistency")
    async def consistency(request: web.Request) -> web.Response:
        old, new = _int_param(request, "from"), _int_param(request, "to")
        if old is None or new is None:
            return _error(400, "give from=<size> and to=<size>")
        latest = notary.sealer.sealed_size
        if not 0 <= old <= new <= latest:
            return _error(404, f"need 0 <= from <= to <= {latest} (the latest sealed size), got from={old} to={new}")
        hashes = await notary.writer.run(lambda s: s.consistency_proof(old, new))
        return web.json_response({"from": old, "to": new, "proof": [base64.b64encode(h).decode() for h in hashes]})

    @routes.get(r"/v1/seals/{size:\d{1,19}}")
    async def seal(request: web.Request) -> web.Response:
        record = await notary.seals.get(int(request.match_info["size"]))
        if record is None:
            return _error(404, f"no seal at tree size {request.match_info['size']}")
        if not record.anchored:
            return _error(425, f"seal {record.tree_size} is not anchored yet", **{"Retry-After": "1"})
        return web.json_response({"seal": json.loads(record.seal_json(cfg.origin)), "s3": record.receipt})

    @routes.get("/metrics")
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=notary.metrics_text(), content_type="text/plain", charset="utf-8")

    @routes.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        problems = notary.health_problems()
        if problems:
            return web.json_response({"ok": False, "problems": problems}, status=503)
        return web.json_response({"ok": True})

    app.add_routes(routes)
    return app


class NotYetSealed(NotaryError):
    """The entry exists but no anchored seal covers it yet."""
