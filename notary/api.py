"""The HTTP interface: ingest for producers, read-only answers for auditors.

Ingest (``Authorization: Bearer <token>``):
    POST /v1/entries        {"digests": ["<64 hex>", ...]} -> {"entries": [{"index": N}, ...]}
                            ?wait=sealed: answer once the entries are sealed and anchored,
                            with their tlog-proofs (202 with the indices alone if that takes
                            longer than limits.wait_sealed_timeout)
    GET /v1/source          {"source": "<the name entries submitted with this token carry>"}
Auditors (no token):
    GET /checkpoint                         latest signed checkpoint (C2SP text)
    GET /v1/proof?digest=<hex>|index=N[&size=N]   c2sp.org/tlog-proof@v1 text
    GET /v1/consistency?from=M&to=N         {"from", "to", "proof": [base64...]}
    GET /v1/seals/<size>                    the seal JSON and where it lives in S3
    GET /v1/entries?from=A&to=B[&source=S]  entry lines of [A, B) (notary/logbundle.py)
    POST /v1/lookup[?source=S]              {"digests": [...]} -> {"anchored_size", "indices": [[i, ...], ...]}
    GET /v1/range-proof?from=A&to=B[&size=N]   {"from", "to", "size", "checkpoint", "proof": [base64...]}
    GET /metrics, GET /healthz
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import TYPE_CHECKING

from aiohttp import web

from notary import rangeproof
from notary.entry import check_source, entries_from_hex, parse_digest_hex, parse_digest_list
from notary.errors import FormatError, NotaryError
from notary.logbundle import entry_line
from notary.sequencer import CommitUnknown, RetryLater, TooLarge

if TYPE_CHECKING:
    from notary.daemon import Notary

TEXT = "text/plain; charset=utf-8"
MAX_ENTRIES_PER_REQUEST = 1 << 16  # entry lines a GET /v1/entries answers: one store-thread turn of about 0.1 s
MAX_INT = (1 << 63) - 1  # the largest index or size: SQLite's INTEGER, which the stores look them up by


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _int_param(request: web.Request, name: str, default: int | None = None) -> int | None:
    text = request.query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= MAX_INT):
        message = f"{name}: must be an integer from 0 to 2^63-1, got {text[:40]!r}"
        raise web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")
    return int(text)


async def _read_digest_items(request: web.Request, limits) -> tuple[list, None] | tuple[None, tuple[int, str, str | None]]:
    """The items of a ``{"digests": [...]}`` body, not yet checked one by one, or (status, message, metric reason) refusing it."""
    if request.content_length is not None and request.content_length > limits.max_request_bytes:
        return None, (413, f"request body is {request.content_length} bytes, limit {limits.max_request_bytes}", "too_large")
    charset = request.charset
    if charset is not None and charset.lower() != "utf-8":  # JSON is UTF-8 (RFC 8259, section 8.1)
        return None, (400, f"Content-Type: charset must be utf-8, got {charset[:40]!r}", None)
    try:
        text = (await request.read()).decode("utf-8")
    except web.HTTPRequestEntityTooLarge:
        return None, (413, f"request body is larger than the limit of {limits.max_request_bytes} bytes", "too_large")
    except UnicodeDecodeError:
        return None, (400, "body is not UTF-8", None)
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, (400, f"body is not JSON: {exc}", None)
    except ValueError:  # Python refuses integers of more than 4,300 digits
        return None, (400, "body is not JSON this API takes: a number is too long", None)
    except RecursionError:  # the parser recurses once per level of nesting; a request has two
        return None, (400, "body is not JSON this API takes: nested too deeply", None)
    digests = body.get("digests") if isinstance(body, dict) else None
    if not isinstance(digests, list) or not digests:
        return None, (400, 'body must be {"digests": ["<64 hex digits>", ...]} with at least one digest', None)
    if len(digests) > limits.max_request_digests:
        return None, (413, f"{len(digests)} digests in one request, limit {limits.max_request_digests}", "too_large")
    return digests, None


async def _read_digests(request: web.Request, limits) -> tuple[list[bytes], None] | tuple[None, tuple[int, str, str | None]]:
    """The digests of a ``{"digests": [...]}`` body, or (status, message, metric reason) refusing it."""
    items, refused = await _read_digest_items(request, limits)
    if refused is not None:
        return None, refused
    try:
        return parse_digest_list(items), None
    except FormatError as exc:
        return None, (400, f"digests{exc}", "malformed")


def _bearer_source(request: web.Request, tokens: dict[bytes, str]) -> str | None:
    """The source whose token ``Authorization: Bearer <token>`` carries, or None.

    The scheme is case-insensitive (RFC 7235, section 2.1). Header bytes that
    are not UTF-8 reach us surrogate-escaped; encoded back they are the bytes
    sent, whose hash is no configured token's.
    """
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return tokens.get(hashlib.sha256(token.strip().encode("utf-8", "surrogateescape")).digest())


def _source_param(request: web.Request) -> str | None:
    source = request.query.get("source")
    if source is not None:
        try:
            check_source(source)
        except FormatError as exc:
            raise web.HTTPBadRequest(text=json.dumps({"error": f"source: {exc}"}), content_type="application/json")
    return source


def build_app(notary: Notary) -> web.Application:
    cfg = notary.config
    app = web.Application(client_max_size=cfg.limits.max_request_bytes)
    routes = web.RouteTableDef()
    retry_sealing = {"Retry-After": str(max(1, round(cfg.max_age)))}  # with a 425: a seal comes every max_age

    @routes.post("/v1/entries")
    async def submit(request: web.Request) -> web.Response:
        source = _bearer_source(request, notary.config.http_tokens)
        if source is None:
            notary.metrics.inc("notary_ingest_rejected_total", reason="unauthorized")
            return _error(401, "missing or unknown bearer token", **{"WWW-Authenticate": "Bearer"})
        items, refused = await _read_digest_items(request, cfg.limits)
        if refused is None:
            try:
                entries = entries_from_hex(items, source)
            except FormatError as exc:
                refused = (400, f"digests{exc}", "malformed")
        if refused is not None:
            status, message, reason = refused
            if reason is not None:
                notary.metrics.inc("notary_ingest_rejected_total", reason=reason)
            return _error(status, message)
        wait = request.query.get("wait") == "sealed"
        if wait and notary.sealed_waiters >= cfg.limits.max_sealed_waiters:  # refused before anything is appended
            notary.metrics.inc("notary_ingest_rejected_total", reason="waiters")
            return _error(503, f"{notary.sealed_waiters} ?wait=sealed requests are waiting for their seals (limit "
                               f"{cfg.limits.max_sealed_waiters}); nothing was appended: retry later, or submit "
                               "without wait=sealed and fetch the proofs by index once sealed", **retry_sealing)
        try:
            first = await notary.submit(entries)
        except RetryLater as exc:  # over the bounds, or the store failed to commit: nothing was appended
            return _error(503, str(exc), **{"Retry-After": str(exc.retry_after)})
        except TooLarge as exc:  # only with a Config that parse_config would refuse (max_request_digests too high)
            notary.metrics.inc("notary_ingest_rejected_total", reason="too_large")
            return _error(413, str(exc))
        except CommitUnknown as exc:  # neither "appended" nor "retry": the producer must look before resending
            return _error(500, str(exc))
        count = entries.count
        if wait:
            indices = range(first, first + count)
            notary.sealed_waiters += 1
            try:
                await notary.wait_anchored(indices[-1], cfg.limits.wait_sealed_timeout)
                proofs = await notary.tlog_proofs(indices)
            except NotAnchoredBeforeStop as exc:
                # Acknowledged all the same: the indices say so, and a retry would append them twice.
                return web.json_response({"error": f"{exc}; do not submit again: fetch the proofs by index later",
                                          "entries": [{"index": i} for i in indices]},
                                         status=503, headers={"Retry-After": "5"})
            except NotAnchoredInTime as exc:
                # 202, not 503: nothing is wrong with the request, and it must not be sent again.
                return web.json_response({"error": f"{exc}; do not submit again: fetch the proofs by index later",
                                          "entries": [{"index": i} for i in indices]}, status=202)
            finally:
                notary.sealed_waiters -= 1
            return web.json_response({"entries": [{"index": i, "proof": p.format()} for i, p in zip(indices, proofs)]})
        # The hot path's answer, written directly: json.dumps of 1000 small
        # objects costs about 0.7 ms, one %-format of them about 0.1 (the
        # same JSON, compact; the tests parse it).
        body = ('{"entries":[' + '{"index":%d},' * (count - 1) + '{"index":%d}]}') % tuple(range(first, first + count))
        return web.Response(body=body.encode(), content_type="application/json")

    @routes.get("/v1/source")
    async def whoami(request: web.Request) -> web.Response:
        source = _bearer_source(request, notary.config.http_tokens)
        if source is None:
            return _error(401, "missing or unknown bearer token", **{"WWW-Authenticate": "Bearer"})
        return web.json_response({"source": source})

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
            return _error(425, str(exc), **retry_sealing)
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

    @routes.get(r"/v1/seals/{size:[0-9]{1,19}}")  # not \d, which matches every Unicode digit
    async def seal(request: web.Request) -> web.Response:
        size = int(request.match_info["size"])
        record = None if size > MAX_INT else await notary.seals.get(size)
        if record is None:
            return _error(404, f"no seal at tree size {request.match_info['size']}")
        if not record.anchored:
            return _error(425, f"seal {record.tree_size} is not anchored yet", **{"Retry-After": "1"})
        return web.json_response({"seal": json.loads(record.seal_json(cfg.origin)), "s3": record.receipt})

    @routes.get("/v1/entries")
    async def entries(request: web.Request) -> web.Response:
        start, end = _int_param(request, "from"), _int_param(request, "to")
        if start is None or end is None:
            return _error(400, "give from=<index> and to=<index>: the entries [from, to)")
        if not start < end or end - start > MAX_ENTRIES_PER_REQUEST:
            return _error(400, f"from={start} to={end}: need from < to and at most {MAX_ENTRIES_PER_REQUEST} entries a request")
        source = _source_param(request)
        want = None if source is None else source.encode("utf-8")

        def read(s) -> str:
            rows = s.entries(start, end)
            return "".join(entry_line(i, rows.get(i), want, s.leaf_hash) + "\n" for i in range(start, end))

        try:
            text = await notary.writer.run(read)
        except NotaryError as exc:
            return _error(404, str(exc))
        return web.Response(text=text, content_type="text/plain")

    @routes.post("/v1/lookup")
    async def lookup(request: web.Request) -> web.Response:
        digests, refused = await _read_digests(request, cfg.limits)
        if refused is not None:
            return _error(refused[0], refused[1])
        source = _source_param(request)
        anchored = notary.anchorer.latest_anchored

        indices = await notary.find_all(digests, source)
        return web.json_response({"anchored_size": 0 if anchored is None else anchored.tree_size, "indices": indices})

    @routes.get("/v1/range-proof")
    async def range_proof(request: web.Request) -> web.Response:
        start, end, size = _int_param(request, "from"), _int_param(request, "to"), _int_param(request, "size")
        if start is None or end is None:
            return _error(400, "give from=<index> and to=<index>: the span [from, to)")
        seal = notary.anchorer.latest_anchored if size is None else await notary.seals.get(size)
        if size is None and 0 <= start < end <= notary.sequencer.size and (seal is None or end > seal.tree_size):
            return _error(425, f"entries up to {end} are in the log but not covered by an anchored seal yet; "
                               "retry shortly", **retry_sealing)
        if seal is None:
            return _error(404, "there is no anchored seal yet" if size is None else f"there is no seal at tree size {size}")
        if not seal.anchored:
            return _error(425, f"the seal at tree size {size} is not anchored yet; retry shortly", **retry_sealing)
        if not 0 <= start < end <= seal.tree_size:
            return _error(404, f"need 0 <= from < to <= {seal.tree_size} (the anchored seal's size), got from={start} to={end}")
        hashes = await notary.writer.run(lambda s: rangeproof.range_proof(start, end, seal.tree_size, s.subtree_hash))
        return web.json_response({"from": start, "to": end, "size": seal.tree_size,
                                  "checkpoint": seal.checkpoint.decode("utf-8"),
                                  "proof": [base64.b64encode(h).decode() for h in hashes]})

    @routes.get("/metrics")
    async def metrics(request: web.Request) -> web.Response:
        await notary.writer.refresh_status()
        return web.Response(text=notary.metrics_text(), content_type="text/plain", charset="utf-8")

    @routes.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        await notary.writer.refresh_status()
        problems = notary.health_problems()
        if problems:
            return web.json_response({"ok": False, "problems": problems}, status=503)
        return web.json_response({"ok": True})

    app.add_routes(routes)
    return app


class NotYetSealed(NotaryError):
    """The entry exists but no anchored seal covers it yet."""


class NotAnchoredBeforeStop(NotaryError):
    """The daemon stopped (its drain timeout passed) before the entries waited for were anchored."""


class NotAnchoredInTime(NotaryError):
    """``limits.wait_sealed_timeout`` passed before the entries waited for were anchored (they are durable)."""
