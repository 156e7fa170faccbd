"""RFC 6962 §2.1 written as the RFC states it, recursively over a list of entries.

An independent reference for tests only: it shares no code with notary/merkle.py
(not even the hash helpers), and it is deliberately the naive recursion, with a
memo on (start, end) so that every pair up to a few hundred leaves stays quick.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache


class ReferenceTree:
    def __init__(self, entries: list[bytes]):
        self.entries = list(entries)
        self._mth = lru_cache(maxsize=None)(self._mth_uncached)

    def _mth_uncached(self, start: int, end: int) -> bytes:
        n = end - start
        if n == 0:
            return hashlib.sha256(b"").digest()
        if n == 1:
            return hashlib.sha256(b"\x00" + self.entries[start]).digest()
        k = 1
        while k * 2 < n:
            k *= 2
        return hashlib.sha256(b"\x01" + self._mth(start, start + k) + self._mth(start + k, end)).digest()

    def root(self, size: int) -> bytes:
        return self._mth(0, size)

    def root_range(self, start: int, end: int) -> bytes:
        """MTH(D[start:end])."""
        return self._mth(start, end)

    def path(self, m: int, size: int) -> list[bytes]:
        """PATH(m, D[size]) of RFC 6962 §2.1.1."""
        return self._path(m, 0, size)

    def _path(self, m: int, start: int, end: int) -> list[bytes]:
        n = end - start
        if n == 1:
            return []
        k = 1
        while k * 2 < n:
            k *= 2
        if m < k:
            return self._path(m, start, start + k) + [self._mth(start + k, end)]
        return self._path(m - k, start + k, end) + [self._mth(start, start + k)]

    def proof(self, m: int, size: int) -> list[bytes]:
        """PROOF(m, D[size]) of RFC 6962 §2.1.2."""
        if m == 0 or m == size:
            return []
        return self._subproof(m, 0, size, True)

    def _subproof(self, m: int, start: int, end: int, b: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if b else [self._mth(start, end)]
        k = 1
        while k * 2 < n:
            k *= 2
        if m <= k:
            return self._subproof(m, start, start + k, b) + [self._mth(start + k, end)]
        return self._subproof(m - k, start + k, end, False) + [self._mth(start, start + k)]
