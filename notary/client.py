"""A small synchronous client for the daemon: submit digests, fetch proofs and checkpoints.

HTTP (``HttpClient``) or the local unix socket (``submit_unix``). Records are
hashed on the client: the notary only ever sees digests. How a log file is
hashed is fixed in ``line_digests`` (docs/FORMATS.md, "Records").
"""

from __future__ import annotations

import hashlib
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from notary.errors import NotaryError


class ClientError(NotaryError):
    """The notary refused a request or could not be reached."""


def record_digest(record: bytes) -> bytes:
    return hashlib.sha256(record).digest()


def line_digests(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, SHA-256 of the line) for each line of a log file.

    One line is one record: its bytes without the line terminator ("\\n", or
    "\\r\\n"). Empty lines are records too, so that deleting one shows.
    """
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if line.endswith(b"\n"):
                line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
            yield number, record_digest(line)


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

    def _ok(self, status: int, body: bytes, what: str) -> bytes:
        if status == 200:
            return body
        try:
            message = json.loads(body)["error"]
        except (ValueError, KeyError, TypeError):
            message = body[:200].decode("utf-8", "replace")
        raise ClientError(f"{what}: HTTP {status}: {message}")

    def submit(self, digests: Sequence[bytes], *, wait_sealed: bool = False) -> list[dict]:
        body = json.dumps({"digests": [d.hex() for d in digests]}).encode()
        path = "/v1/entries" + ("?wait=sealed" if wait_sealed else "")
        return json.loads(self._ok(*self._request("POST", path, body), "submit"))["entries"]

    def proof(self, *, digest: bytes | None = None, index: int | None = None, size: int | None = None) -> str:
        query = f"digest={digest.hex()}" if digest is not None else f"index={index}"
        if size is not None:
            query += f"&size={size}"
        return self._ok(*self._request("GET", f"/v1/proof?{query}"), "proof").decode("utf-8")

    def checkpoint(self) -> str:
        return self._ok(*self._request("GET", "/checkpoint"), "checkpoint").decode("utf-8")

    def healthz(self) -> tuple[int, dict]:
        status, body = self._request("GET", "/healthz")
        return status, json.loads(body)

    def metrics(self) -> str:
        return self._ok(*self._request("GET", "/metrics"), "metrics").decode("utf-8")


def submit_unix(path: Path, digests: Sequence[bytes], timeout: float = 60.0) -> list[int]:
    """Submit over the unix socket; return the indices in order."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(b"".join(d.hex().encode() + b"\n" for d in digests))
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := sock.recv(1 << 16):
                data += chunk
    except OSError as exc:
        raise ClientError(f"notary socket {path} cannot be used: {exc.strerror or exc}") from None
    answers = data.decode("utf-8", "replace").splitlines()
    if len(answers) != len(digests) or not all(a.isdigit() for a in answers):
        bad = next((a for a in answers if not a.isdigit()), "connection closed early")
        raise ClientError(f"notary socket {path}: {bad}")
    return [int(a) for a in answers]
