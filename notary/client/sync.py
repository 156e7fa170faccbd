"""The synchronous client: submit digests, fetch proofs and checkpoints.

HTTP (``HttpClient``) or the local unix socket (``submit_unix``). Records are
hashed on the client: the notary only ever sees digests. How a log file is
hashed is fixed in ``line_digests`` (docs/FORMATS.md, "Records"). The request
encoding and the answer decoding here are shared with ``notary.client.aio``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from notary.errors import NotaryError


class ClientError(NotaryError):
    """The notary refused a request or could not be reached."""


class AcknowledgedNotSealedError(ClientError):
    """``?wait=sealed``: the notary acknowledged the entries, durably, but they were not anchored.

    It stopped first (HTTP 503), or ``limits.wait_sealed_timeout`` passed
    first (HTTP 202: the TSA or S3 is slow or down).

    ``indices`` are their log indices, in the order of the digests. Do not
    submit them again (they would be in the log twice): fetch their proofs by
    index once the notary is back (docs/OPERATIONS.md, SIGTERM).
    """

    def __init__(self, message: str, indices: list[int]):
        self.indices = indices
        super().__init__(message)


def record_digest(record: bytes) -> bytes:
    return hashlib.sha256(record).digest()


def line_digests(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, SHA-256 of the line) for each line of a log file.

    One line is one record: its bytes without the line terminator ("\\n", or
    "\\r\\n"). Empty lines are records too, so that deleting one shows.
    """
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):  # a binary file splits on "\n" only: a lone "\r" is in a record
            yield number, record_digest(line_record(line))


def line_record(line: bytes) -> bytes:
    """The record one line holds: its bytes without the terminator ("\\n", or "\\r\\n"), if it has one."""
    if line.endswith(b"\n"):
        return line[:-2] if line.endswith(b"\r\n") else line[:-1]
    return line


def submit_request(digests: Sequence[bytes], wait_sealed: bool) -> tuple[str, bytes]:
    """The path and JSON body of ``POST /v1/entries`` (docs/OPERATIONS.md, "HTTP API")."""
    body = json.dumps({"digests": [d.hex() for d in digests]}).encode()
    return "/v1/entries" + ("?wait=sealed" if wait_sealed else ""), body


def proof_path(digest: bytes | None, index: int | None, size: int | None) -> str:
    if (digest is None) == (index is None):
        raise ValueError("a proof is asked for by digest or by index, exactly one of them")
    query = f"digest={digest.hex()}" if digest is not None else f"index={index}"
    if size is not None:
        query += f"&size={size}"
    return f"/v1/proof?{query}"


def answer_body(status: int, body: bytes, what: str) -> bytes:
    """The body of a 200 answer; otherwise a ClientError with the notary's own message."""
    if status == 200:
        return body
    try:
        message = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        message = body[:200].decode("utf-8", "replace")
    raise ClientError(f"{what}: HTTP {status}: {message}")


def json_answer(body: bytes, what: str) -> dict:
    """The JSON object of a notary's answer; anything else (a proxy's HTML page, another service) is a ClientError."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ClientError(f"{what}: the answer is not the notary's JSON, is the URL the notary's? "
                          f"It begins {body[:80]!r}")
    return parsed


def submit_answer(status: int, body: bytes) -> list[dict]:
    """The entries of a ``POST /v1/entries`` answer: ``[{"index": N, ...}, ...]``.

    A 503 or a 202 that lists entries (``?wait=sealed``, and the notary
    stopping or its wait running out) is an AcknowledgedNotSealedError
    carrying their indices.
    """
    if status in (503, 202):
        try:
            parsed = json.loads(body)
            indices = [e["index"] for e in parsed["entries"]]
            message = parsed["error"]
        except (ValueError, KeyError, TypeError):
            pass  # an ordinary 503 (back-pressure): answer_body says it
        else:
            if all(isinstance(i, int) for i in indices):
                raise AcknowledgedNotSealedError(f"submit: HTTP {status}: {message}", indices)
    entries = json_answer(answer_body(status, body, "submit"), "submit").get("entries")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("index"), int)
                                                for e in entries):
        raise ClientError(f"submit: the answer's entries are not a list of indices: {body[:80]!r}")
    return entries


def health_answer(status: int, body: bytes) -> tuple[int, dict]:
    """``GET /healthz``: (status, its JSON), whatever the status; not the notary's JSON is a ClientError."""
    return status, json_answer(body, f"healthz: HTTP {status}")


def unix_request(digests: Sequence[bytes]) -> bytes:
    """One digest, 64 hex digits, per line (docs/OPERATIONS.md, "Unix socket")."""
    return b"".join(d.hex().encode() + b"\n" for d in digests)


def unix_indices(path: Path, data: bytes, expected: int) -> list[int]:
    """The indices from the socket's answer lines, or the first `error:`/`retry:` line as a ClientError."""
    answers = data.decode("utf-8", "replace").splitlines()
    if len(answers) != expected or not all(a.isdigit() for a in answers):
        bad = next((a for a in answers if not a.isdigit()), "connection closed early")
        raise ClientError(f"notary socket {path}: {bad}")
    return [int(a) for a in answers]


def committed_run(hits: Sequence[Sequence[int]], after: int) -> list[int]:
    """The longest run ``i, i+1, ...`` past ``after`` with ``i + k`` among ``hits[k]`` (each digest's indices of one source).

    The first entry past ``after`` that holds the first digest starts the run:
    no line after the spool's first has been acknowledged, so nothing of this
    source past ``after`` is a later line's.
    """
    if not hits:
        return []
    starts = [i for i in hits[0] if isinstance(i, int) and i > after]
    if not starts:
        return []
    run = [min(starts)]
    while len(run) < len(hits) and run[0] + len(run) in hits[len(run)]:
        run.append(run[0] + len(run))
    return run


class HttpClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(f"notary at {self.url} cannot be reached: {reason}") from None
        except http.client.HTTPException as exc:  # something answered, but not in HTTP (a wrong port)
            raise ClientError(f"notary at {self.url} did not answer in HTTP: {type(exc).__name__} "
                              f"{str(exc)[:80]!r}") from None
        except ValueError as exc:  # urllib's word for a URL it cannot use
            raise ClientError(f"notary URL {self.url!r}: {exc}") from None

    def submit(self, digests: Sequence[bytes], *, wait_sealed: bool = False) -> list[dict]:
        path, body = submit_request(digests, wait_sealed)
        return submit_answer(*self._request("POST", path, body))

    def submit_indices(self, digests: Sequence[bytes]) -> list[int]:
        """Submit and return only the indices, in order (the handler's transport interface)."""
        return [e["index"] for e in self.submit(digests)]

    def source(self) -> str:
        """The source name this client's token submits as (``GET /v1/source``)."""
        answer = json_answer(answer_body(*self._request("GET", "/v1/source"), "source"), "source")
        if not isinstance(answer.get("source"), str):
            raise ClientError(f"source: the answer names no source: {str(answer)[:80]!r}")
        return answer["source"]

    def committed_prefix(self, digests: Sequence[bytes], after: int) -> list[int]:
        """The indices of the longest first part of ``digests`` already in the log as one run of this token's source.

        The run is looked for past index ``after`` (the producer's last
        acknowledged entry): a submission whose answer was lost is in the log
        there, in order, or not at all (a commit is all or nothing). The
        handler asks before submitting again, so that the log holds each line
        once (notary/client/handler.py).
        """
        if not digests:
            return []
        hits = self.lookup(digests, source=self.source())["indices"]
        if not isinstance(hits, list) or len(hits) != len(digests):
            raise ClientError(f"lookup: the answer has {len(hits) if isinstance(hits, list) else 'no'} index lists "
                              f"for {len(digests)} digests")
        return committed_run(hits, after)

    def proof(self, *, digest: bytes | None = None, index: int | None = None, size: int | None = None) -> str:
        return answer_body(*self._request("GET", proof_path(digest, index, size)), "proof").decode("utf-8")

    def checkpoint(self) -> str:
        return answer_body(*self._request("GET", "/checkpoint"), "checkpoint").decode("utf-8")

    def lookup(self, digests: Sequence[bytes], source: str | None = None) -> dict:
        """``{"anchored_size": N, "indices": [[index, ...] per digest]}``."""
        _, body = submit_request(digests, wait_sealed=False)  # the same {"digests": [...]} body
        path = "/v1/lookup" + _query(source=source)
        return json_answer(answer_body(*self._request("POST", path, body), "lookup"), "lookup")

    def anchored_size(self) -> int:
        """The tree size of the latest anchored seal (0: none yet), as ``POST /v1/lookup`` reports it."""
        return self.lookup([bytes(32)])["anchored_size"]  # any digest will do: the size comes with every answer

    def entries(self, start: int, end: int, source: str | None = None) -> str:
        """Entry lines of [start, end) (notary/logbundle.py)."""
        path = "/v1/entries" + _query(**{"from": start, "to": end, "source": source})
        return answer_body(*self._request("GET", path), "entries").decode("utf-8")

    def range_proof(self, start: int, end: int, size: int | None = None) -> dict:
        path = "/v1/range-proof" + _query(**{"from": start, "to": end, "size": size})
        return json_answer(answer_body(*self._request("GET", path), "range proof"), "range proof")

    def seal(self, size: int) -> dict:
        """``GET /v1/seals/<size>``: ``{"seal": <the seal JSON, parsed>, "s3": <where it is locked>}``."""
        return json_answer(answer_body(*self._request("GET", f"/v1/seals/{size}"), f"seal {size}"), f"seal {size}")

    def healthz(self) -> tuple[int, dict]:
        return health_answer(*self._request("GET", "/healthz"))

    def metrics(self) -> str:
        return answer_body(*self._request("GET", "/metrics"), "metrics").decode("utf-8")


def _query(**params: object) -> str:
    given = {k: v for k, v in params.items() if v is not None}
    return "?" + urllib.parse.urlencode(given) if given else ""


def _unix_exchange(path: Path, request: bytes, timeout: float) -> bytes:
    """Send ``request`` over the unix socket, end the sending side, and return everything the notary answers."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := sock.recv(1 << 16):
                data += chunk
    except OSError as exc:
        raise ClientError(f"notary socket {path} cannot be used: {exc.strerror or exc}") from None
    return data


def submit_unix(path: Path, digests: Sequence[bytes], timeout: float = 60.0) -> list[int]:
    """Submit over the unix socket; return the indices in order."""
    return unix_indices(path, _unix_exchange(path, unix_request(digests), timeout), len(digests))


class UnixClient:
    """The unix socket as a transport for ``NotaryHandler`` (same interface as ``HttpClient.submit_indices``)."""

    def __init__(self, path: Path | str, timeout: float = 60.0):
        self.path = Path(path)
        self.timeout = timeout

    def submit_indices(self, digests: Sequence[bytes]) -> list[int]:
        return submit_unix(self.path, digests, self.timeout)

    def lookup(self, digests: Sequence[bytes]) -> list[list[int]]:
        """For each digest, the indices of this peer's source's entries that hold it, in log order.

        The notary answers once every submission it accepted before has
        committed or failed (``lookup <digest>`` lines; docs/PRODUCERS.md).
        """
        data = _unix_exchange(self.path, b"".join(b"lookup " + d.hex().encode() + b"\n" for d in digests), self.timeout)
        answers = data.decode("utf-8", "replace").splitlines()
        found = []
        for answer in answers:
            words = answer.split(" ")
            if words[0] != "found" or not all(w.isdigit() for w in words[1:]):
                raise ClientError(f"notary socket {self.path}: {answer}")
            found.append([int(w) for w in words[1:]])
        if len(found) != len(digests):
            raise ClientError(f"notary socket {self.path}: connection closed early ({len(found)} of "
                              f"{len(digests)} lookups answered)")
        return found

    def committed_prefix(self, digests: Sequence[bytes], after: int) -> list[int]:
        """As ``HttpClient.committed_prefix``: the source is this peer's, as the notary maps its uid."""
        return committed_run(self.lookup(digests), after) if digests else []
