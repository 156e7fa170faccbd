"""Sealing and anchoring: batches become signed checkpoints, then timestamped, published seals.

Sealer: a batch closes when ``max_entries`` entries are unsealed or the oldest
unsealed entry is ``max_age`` old. Its tree head becomes a checkpoint signed by
every active key, after checking it is consistent with the previous seal (a
log never signs two inconsistent checkpoints). The seal is stored durably
before anything leaves the host.

Anchorer: a durable outbox. Each stored seal, in tree-size order, gets an
RFC 3161 token over the signed checkpoint bytes, then its JSON is published
to S3 under COMPLIANCE lock. A TSA or S3 outage delays this with backoff; it
never drops a seal, and ingest is only throttled (``Overloaded``) once
``max_unanchored_seals`` wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from notary import merkle
from notary.checkpoint import Checkpoint, parse_signed_checkpoint, sign_checkpoint
from anchors.errors import IntegrityAlarm
from notary.errors import StoreError, VerificationError
from notary.note import NoteSigner, VerifierKey, verify_note
from notary.seals import Seal, SealDB, iso, utc_now
from notary.sequencer import LogWriter, Sequencer

log = logging.getLogger("notary.sealer")

BACKOFF_START = 0.5  # seconds before the first retry of a failed anchoring step
BACKOFF_MAX = 30.0


class Timestamper(Protocol):
    async def timestamp(self, message: bytes) -> Any: ...  # returns an object with .der


class Publisher(Protocol):
    async def publish(self, tree_size: int, seal: bytes) -> Any: ...  # returns a receipt

    async def seal_sizes_after(self, tree_size: int | None) -> list[int]: ...  # seals already in the bucket


class InconsistentStoreError(StoreError):
    """The store disagrees with a checkpoint this log already signed: refuse to seal."""

    exit_code = 3


class BucketAheadError(InconsistentStoreError):
    """The bucket holds seals past this host's newest: sealing on would fork the log."""


async def check_bucket_not_ahead(seals: SealDB, publisher: Publisher, bucket: str) -> None:
    """Refuse to run when the bucket holds a seal past the newest in ``seals``.

    The seals database is written before anything is published, so after a
    crash it is never behind the bucket. It is behind when it (with the log
    store) was restored from an older backup, or when another notary writes
    under the same prefix: sealing on would sign tree sizes and roots that
    contradict seals already locked in the bucket.
    """
    last = await seals.latest()
    ahead = await publisher.seal_sizes_after(None if last is None else last.tree_size)
    if not ahead:
        return
    mine = "no seals" if last is None else f"seals up to tree size {last.tree_size}"
    raise BucketAheadError(
        f"S3 bucket {bucket} already holds the seal of tree size {ahead[0]}"
        f"{f' (and {len(ahead) - 1} more)' if len(ahead) > 1 else ''}, but this host's seals database has {mine}: "
        "the data directory is older than what this log published (restored from an old backup?), or another "
        "notary writes under the same prefix. Sealing on would fork the log, so the notary refuses to start. "
        "Restore the newest log.db and seals.db; if the entries past that seal are lost, this log cannot go on: "
        "start a new log (another origin and prefix) and keep this bucket as the old log's evidence "
        "(docs/OPERATIONS.md, \"Running the daemon\", step 1)")


async def check_store_against_last_seal(writer: LogWriter, seals: SealDB) -> Seal | None:
    """Refuse to run on a store that is truncated or altered relative to the last signed checkpoint."""
    last = await seals.latest()
    if last is None:
        return None
    size = writer.store.size
    if size < last.tree_size:
        raise InconsistentStoreError(
            f"log store {writer.store.path} has {size} entries, but checkpoint {last.tree_size} was already "
            "signed: the store was truncated or replaced; restore it from backup, never re-seal"
        )
    root = await writer.run(lambda s: s.tree_hash(last.tree_size))
    if root != last.root_hash:
        raise InconsistentStoreError(
            f"log store {writer.store.path} gives root {root.hex()} at size {last.tree_size}, but the signed "
            f"checkpoint says {last.root_hash.hex()}: the store was altered; restore it from backup, never re-seal"
        )
    return last


class Sealer:
    def __init__(self, *, origin: str, writer: LogWriter, sequencer: Sequencer, seals: SealDB,
                 signers: Callable[[], Sequence[NoteSigner]], max_entries: int, max_age: float):
        self.origin = origin
        self._writer, self._sequencer, self._seals = writer, sequencer, seals
        self._signers = signers
        self.max_entries, self.max_age = max_entries, max_age
        self.latest: Seal | None = None
        self._first_unsealed_at: float | None = None
        self._wakeup = asyncio.Event()
        self.sealed = asyncio.Condition()  # notified after every new seal
        self.failures = 0
        self.last_error: str | None = None
        self.on_seal: Callable[[Seal], None] = lambda seal: None
        sequencer.on_commit = self._on_commit

    def _on_commit(self, size: int) -> None:
        if self._first_unsealed_at is None:
            self._first_unsealed_at = time.monotonic()
        if size - self.sealed_size >= self.max_entries:
            self._wakeup.set()

    def resigned(self, seal: Seal) -> None:
        """The anchorer signed ``seal`` again: if it is the latest, serve its new checkpoint (``GET /checkpoint``)."""
        if self.latest is not None and self.latest.tree_size == seal.tree_size:
            self.latest = seal

    @property
    def sealed_size(self) -> int:
        return 0 if self.latest is None else self.latest.tree_size

    async def start(self) -> None:
        self.latest = await check_store_against_last_seal(self._writer, self._seals)
        if self._sequencer.size > self.sealed_size:
            self._first_unsealed_at = time.monotonic()

    async def run(self, stopping: asyncio.Event) -> None:
        """Seal batches until ``stopping`` is set; then seal what is left, once."""
        while not stopping.is_set():
            timeout = self.max_age
            if self._first_unsealed_at is not None:
                timeout = max(0.0, self._first_unsealed_at + self.max_age - time.monotonic())
            self._wakeup.clear()
            if self._sequencer.size - self.sealed_size >= self.max_entries:
                # A batch that filled up before this turn (the key events appended at start-up, commits
                # during the last seal) woke nobody: seal it now, not max_age later.
                timeout = 0.0
            waiter = asyncio.ensure_future(self._wakeup.wait())
            stopper = asyncio.ensure_future(stopping.wait())
            await asyncio.wait([waiter, stopper], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            try:
                await self.seal_now()
                self.last_error = None
            except Exception as exc:  # an HSM hiccup must not end sealing: log, retry at the next turn
                if getattr(exc, "restart_needed", False):
                    # The signer's session is gone for good (hsm.errors.SessionLostError): retrying here
                    # would fail forever while entries pile up unsealed. Ending this loop ends the daemon
                    # (notary.daemon.serve), and systemd starts it again with a new session.
                    raise
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("sealing tree size %d failed, retrying: %s", self._sequencer.size, exc)
                await _wait_any(stopping, timeout=min(BACKOFF_MAX, self.max_age * 2 ** min(self.failures, 6)))
        await self.seal_now()

    async def seal_now(self) -> Seal | None:
        size = self._sequencer.size
        if size <= self.sealed_size:
            return None
        # The signers of this tree size, read with it: a key is made a signer only once its key events are
        # committed (notary.daemon._reload), so a key signs only trees that hold its activation.
        signers = list(self._signers())
        prev = self.latest
        prev_size = self.sealed_size
        root, proof = await self._writer.run(
            lambda s: (s.tree_hash(size), s.consistency_proof(prev_size, size)))
        if prev is not None:
            # Never sign a checkpoint inconsistent with one already signed.
            merkle.verify_consistency(prev_size, size, prev.root_hash, root, proof)
        signed = await sign_checkpoint(Checkpoint(self.origin, size, root), signers)
        # A seal becomes permanent under Object Lock: never store one whose
        # signatures a verifier would reject (a faulty HSM or a wrong key).
        trusted = [VerifierKey(self.origin, s.sig_type, s.public_key) for s in signers]
        if len(verify_note(signed.note, trusted)) != len(trusted):
            raise VerificationError(f"checkpoint {size} is not signed by every active key; not sealing")
        seal = Seal(tree_size=size, root_hash=root, checkpoint=signed.encode(), previous_tree_size=prev_size,
                    consistency_proof=tuple(proof), sealed_at=iso(utc_now()))
        await self._seals.add(seal)
        self.latest = seal
        self._first_unsealed_at = time.monotonic() if self._sequencer.size > size else None
        log.info("sealed tree size %d (root %s)", size, root.hex())
        self.on_seal(seal)
        async with self.sealed:
            self.sealed.notify_all()
        return seal


def _signers_of(checkpoint: bytes, trusted: Sequence[VerifierKey]) -> int:
    """How many of ``trusted`` signed ``checkpoint`` (0 when none did, or one of their signatures is bad)."""
    try:
        return len(verify_note(parse_signed_checkpoint(checkpoint).note, trusted))
    except VerificationError:
        return 0


class Anchorer:
    """The outbox: each stored seal, in order, is timestamped and then published.

    A seal waits here signed by the keys that were active when it was made.
    Auditors trust a key between its activation and its retirement, judged at
    the token's time, so a seal none of whose keys is active *now* (every one
    retired while it waited: the daemon stopped, or the TSA down, through a
    rotation) is signed again with the active keys first. Nothing has left
    the host yet: same tree size, same root, only the signature lines change.
    A seal that an active key signed keeps its signatures: a key activated
    while it waited does not sign it, for its tree does not hold the key's
    activation (a key's events are logged before it signs; notary.daemon).
    """

    def __init__(self, *, origin: str, seals: SealDB, timestamper: Timestamper, publisher: Publisher,
                 bucket: str, signers: Callable[[], Sequence[NoteSigner]] = lambda: ()):
        self.origin = origin
        self._signers = signers
        self.on_resign: Callable[[Seal], None] = lambda seal: None  # a seal's checkpoint was signed again
        self._seals = seals
        self._tsa, self._s3 = timestamper, publisher
        self.bucket = bucket
        self._wakeup = asyncio.Event()
        self.anchored = asyncio.Condition()
        self.latest_anchored: Seal | None = None
        self.unanchored = 0
        self.oldest_unanchored_at: float | None = None  # monotonic time it was sealed
        self.failures = 0
        self.last_error: str | None = None
        self.integrity_alarms = 0

    def poke(self, seal: Seal | None = None) -> None:
        if seal is not None:
            self.unanchored += 1
            if self.oldest_unanchored_at is None:
                self.oldest_unanchored_at = time.monotonic()
        self._wakeup.set()

    async def start(self) -> None:
        await check_bucket_not_ahead(self._seals, self._s3, self.bucket)
        self.latest_anchored = await self._seals.latest(anchored=True)
        pending = await self._seals.unanchored()
        self.unanchored = len(pending)
        self.oldest_unanchored_at = time.monotonic() if pending else None
        if pending:
            log.info("recovered %d sealed checkpoints waiting in the anchor outbox (tree sizes %d..%d)",
                     len(pending), pending[0].tree_size, pending[-1].tree_size)

    async def run(self, stopping: asyncio.Event, drain_deadline: Callable[[], float | None]) -> None:
        """Anchor stored seals in order; after ``stopping``, drain until the deadline."""
        backoff = BACKOFF_START
        while True:
            pending = await self._seals.unanchored()
            self.unanchored = len(pending)
            if not pending:
                self.oldest_unanchored_at = None
                if stopping.is_set():
                    return
                self._wakeup.clear()
                await _wait_any(self._wakeup, stopping)
                continue
            deadline = drain_deadline()
            if deadline is not None and time.monotonic() >= deadline:
                log.warning("shutdown: %d seals are not anchored yet; they stay in the outbox for the next start",
                            len(pending))
                return
            try:
                for seal in pending:
                    await self.anchor(seal)
                    self.unanchored -= 1
                    backoff = BACKOFF_START
                self.oldest_unanchored_at = None
            except Exception as exc:  # an outage of the TSA or S3: retry later, never drop
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, IntegrityAlarm):
                    self.integrity_alarms += 1
                    log.critical("INTEGRITY ALARM while anchoring: %s", exc)
                else:
                    log.warning("anchoring failed, retrying in %.1fs: %s", backoff, exc)
                if stopping.is_set():
                    await asyncio.sleep(min(backoff, max(0.0, (deadline or 0.0) - time.monotonic())))
                else:
                    await _wait_any(stopping, timeout=backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    async def _signed_now(self, seal: Seal) -> Seal:
        """``seal``, signed again by the active keys when none of them has signed it (class docstring)."""
        signers = list(self._signers())
        trusted = [VerifierKey(self.origin, s.sig_type, s.public_key) for s in signers]
        if not trusted or _signers_of(seal.checkpoint, trusted) > 0:
            return seal
        signed = await sign_checkpoint(Checkpoint(self.origin, seal.tree_size, seal.root_hash), signers)
        if _signers_of(signed.encode(), trusted) != len(trusted):
            raise VerificationError(f"checkpoint {seal.tree_size} is not signed by every active key; not anchoring")
        log.warning("seal of tree size %d was signed only by keys that are no longer active; signed again with "
                    "the %d active keys before it is timestamped", seal.tree_size, len(trusted))
        seal = await self._seals.set_checkpoint(seal, signed.encode())
        self.on_resign(seal)
        return seal

    async def anchor(self, seal: Seal) -> Seal:
        if seal.timestamp_token is None:
            seal = await self._signed_now(seal)
            token = await self._tsa.timestamp(seal.checkpoint)
            seal = await self._seals.set_token(seal, token.der)
        receipt = await self._s3.publish(seal.tree_size, seal.seal_json(self.origin))
        seal = await self._seals.set_receipt(seal, {
            "bucket": self.bucket,
            "key": receipt.key,
            "version_id": receipt.version_id,
            "lock_mode": "COMPLIANCE",
            "retain_until": iso(receipt.retain_until),
            "checksum_sha256": receipt.checksum_sha256,
        })
        self.latest_anchored = seal
        log.info("anchored tree size %d at s3://%s/%s", seal.tree_size, self.bucket, receipt.key)
        async with self.anchored:
            self.anchored.notify_all()
        return seal


async def _wait_any(*events: asyncio.Event, timeout: float | None = None) -> None:
    tasks = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
