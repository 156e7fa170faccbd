"""Seal objects in S3 under Object Lock COMPLIANCE: publish, and read back for audit.

A seal is published once, at ``{prefix}seals/{tree_size:020d}.json``, as the
exact bytes the daemon serialized (this module never parses it), with
``ObjectLockMode=COMPLIANCE``, ``ObjectLockRetainUntilDate`` = now + the
configured retention, and a SHA-256 checksum S3 verifies before storing. Then
the lock is read back; anything but COMPLIANCE until that date is an error.

Never an overwrite: the PUT is conditional (``If-None-Match: *``), and after
it the key must hold exactly one version. An identical object already at the
key is success (a retried publish); a different object, a second version or a
delete marker is an ``IntegrityAlarm``. In a versioned bucket, nobody can
replace a locked version, only add versions on top; ``SealReader`` lists every
version of every seal key, so such additions are visible.

boto3 is blocking: every call runs in a worker thread (``asyncio.to_thread``,
or the reader's own pool). Clients made by ``make_client`` do not retry on
their own unless asked: a publish that fails is retried by the daemon's
durable outbox, and the conditional PUT keeps that retry idempotent. An
audit has no outbox: its client retries (``retries``), and ``SealReader``
keeps ``concurrency`` requests in flight, since an audit makes two requests
a seal version and a busy log seals about once a second.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import hashlib
import hmac
import functools
import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from anchors.errors import (
    BucketNotLockableError,
    IntegrityAlarm,
    LockCheckError,
    S3Error,
    S3UnavailableError,
)

COMPLIANCE = "COMPLIANCE"
SEAL_CONTENT_TYPE = "application/json"
# A seal holds a signed checkpoint, a token and a log2(n) proof: kilobytes.
# Reading back a much larger object at a seal key is itself suspicious.
MAX_SEAL_BYTES = 1024 * 1024

# Errors S3 documents as "slow down and retry", whatever their HTTP status.
_TRANSIENT_CODES = frozenset({"SlowDown", "Throttling", "RequestTimeout"})

T = TypeVar("T")
R = TypeVar("R")

_SEAL_KEY = re.compile(r"seals/([0-9]{20})\.json")  # ASCII digits only: int() takes others too


def seal_key(prefix: str, tree_size: int) -> str:
    """``{prefix}seals/{tree_size:020d}.json`` (DESIGN.md, "Seal object in S3")."""
    if not 0 <= tree_size < 10**20:
        raise ValueError(f"tree size {tree_size} does not fit the 20-digit seal key")
    return f"{prefix}seals/{tree_size:020d}.json"


def make_client(
    endpoint_url: str | None = None,
    region: str | None = None,
    *,
    access_key: str | None = None,
    secret_key: str | None = None,
    timeout: float = 30.0,
    attempts: int = 1,
    connections: int = 10,
):
    """A boto3 S3 client that makes ``attempts`` tries a request (1: no retry; the outbox retries).

    ``connections`` is the client's connection pool, as large as the number
    of requests a caller keeps in flight. Credentials default to boto3's
    chain (environment, shared files, instance role); pass them only when
    they come from a secret file.
    """
    import boto3  # here: a fifth of a second to import, and most commands that import this module never call S3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(
            retries={"total_max_attempts": attempts, "mode": "standard"},  # (botocore's max_attempts counts retries)
            connect_timeout=timeout,
            read_timeout=timeout,
            max_pool_connections=connections,
        ),
    )


@dataclass(frozen=True)
class SealReceipt:
    """Where a seal is and how it is locked, as read back after publishing."""

    key: str
    version_id: str
    checksum_sha256: str  # base64, as S3 reports it
    retain_until: datetime.datetime
    already_present: bool  # True when an identical seal was there before this call


@dataclass(frozen=True)
class LockStatus:
    """A version's retention: ``mode`` is None when the version is not locked at all."""

    mode: str | None
    retain_until: datetime.datetime | None

    def protects_until(self, when: datetime.datetime) -> bool:
        return self.mode == COMPLIANCE and self.retain_until is not None and self.retain_until >= when


@dataclass(frozen=True)
class SealVersion:
    """One version (or delete marker) at a seal key."""

    version_id: str
    last_modified: datetime.datetime
    is_latest: bool
    delete_marker: bool
    size: int | None  # None for a delete marker
    etag: str | None
    lock: LockStatus | None = None  # filled in by SealReader.seals()


@dataclass(frozen=True)
class SealRecord:
    """A seal key and everything S3 holds there, oldest version first."""

    tree_size: int | None  # None: a key under seals/ that is not a seal key (audited as misplaced)
    key: str
    versions: tuple[SealVersion, ...]

    @property
    def tampered(self) -> bool:
        """More than one version, or a delete marker: someone wrote over or hid the seal."""
        return len(self.versions) != 1 or self.versions[0].delete_marker


def _sorted_versions(listing: dict, key: str) -> tuple[SealVersion, ...]:
    return _versions_by_key(listing).get(key, ())


def _versions_by_key(listing: dict) -> dict[str, tuple[SealVersion, ...]]:
    """Every key's versions and delete markers, oldest first (one pass over the listing)."""
    by_key: dict[str, list[SealVersion]] = {}
    for v in listing.get("Versions", ()):
        by_key.setdefault(v["Key"], []).append(
            SealVersion(v["VersionId"], v["LastModified"], v["IsLatest"], False, v["Size"], v["ETag"]))
    for m in listing.get("DeleteMarkers", ()):
        by_key.setdefault(m["Key"], []).append(SealVersion(m["VersionId"], m["LastModified"], m["IsLatest"], True, None, None))
    # Latest last, then by LastModified. S3 gives that to the second and lists
    # each key's versions newest first, so equal times keep the reverse of the
    # listing's order: the oldest first (the original is the oldest version).
    return {key: tuple(sorted(reversed(versions), key=lambda v: (v.is_latest, v.last_modified)))
            for key, versions in by_key.items()}


class _S3:
    """What publisher and reader share: a client, a bucket, a prefix, and error mapping."""

    _executor: ThreadPoolExecutor | None = None  # None: asyncio's default pool

    def __init__(self, client, bucket: str, prefix: str = ""):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    async def _in_thread(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def _call(self, operation: str, **params):
        """Run one boto3 call off the event loop; S3's own refusals stay ``ClientError``."""
        method = getattr(self.client, operation)
        try:
            return await self._in_thread(method, Bucket=self.bucket, **params)
        except BotoCoreError as exc:
            raise S3UnavailableError(f"S3 bucket {self.bucket} could not be reached for {operation} ({exc})") from None

    def _failed(self, operation: str, exc: ClientError) -> S3Error:
        """``S3UnavailableError`` for server-side and throttling errors (retry later), ``S3Error`` otherwise."""
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = error.get("Code", "unknown error")
        transient = status >= 500 or code in _TRANSIENT_CODES
        return (S3UnavailableError if transient else S3Error)(
            f"S3 refused {operation} in bucket {self.bucket}: {code} ({error.get('Message', 'no message')})"
        )

    async def _list_versions(self, prefix: str) -> dict:
        """All pages of ListObjectVersions under ``prefix``, merged."""
        listing: dict = {"Versions": [], "DeleteMarkers": []}
        params = {"Prefix": prefix}
        while True:
            try:
                page = await self._call("list_object_versions", **params)
            except ClientError as exc:
                raise self._failed("ListObjectVersions", exc) from None
            listing["Versions"] += page.get("Versions", [])
            listing["DeleteMarkers"] += page.get("DeleteMarkers", [])
            if not page.get("IsTruncated"):
                return listing
            params = {"Prefix": prefix, "KeyMarker": page["NextKeyMarker"],
                      "VersionIdMarker": page["NextVersionIdMarker"]}

    async def versions(self, key: str) -> tuple[SealVersion, ...]:
        """Every version and delete marker at exactly ``key``, oldest first, latest last."""
        return _sorted_versions(await self._list_versions(key), key)

    async def lock_status(self, key: str, version_id: str) -> LockStatus:
        """The retention S3 reports for one version."""
        try:
            reply = await self._call("get_object_retention", Key=key, VersionId=version_id)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchObjectLockConfiguration", "ObjectLockConfigurationNotFoundError"):
                return LockStatus(None, None)
            raise self._failed("GetObjectRetention", exc) from None
        retention = reply.get("Retention", {})
        until = retention.get("RetainUntilDate")
        return LockStatus(retention.get("Mode"), until.astimezone(datetime.timezone.utc) if until else None)

    async def read(self, key: str, version_id: str) -> bytes:
        """The bytes of one version (refusing more than ``MAX_SEAL_BYTES``)."""
        try:
            reply = await self._call("get_object", Key=key, VersionId=version_id)
        except ClientError as exc:
            raise self._failed("GetObject", exc) from None
        body = reply["Body"]
        try:
            data = await self._in_thread(body.read, MAX_SEAL_BYTES + 1)
        finally:
            body.close()
        if len(data) > MAX_SEAL_BYTES:
            raise IntegrityAlarm(f"the object at {key} version {version_id} is larger than {MAX_SEAL_BYTES} bytes, no seal is")
        return data


class SealPublisher(_S3):
    """Publishes seal objects, COMPLIANCE-locked for ``retention``.

    Make one with ``await SealPublisher.open(client, bucket, prefix=..., retention=...)``,
    which refuses a bucket without Object Lock or versioning.
    """

    def __init__(self, client, bucket: str, *, prefix: str = "", retention: datetime.timedelta):
        if retention <= datetime.timedelta(0):
            raise ValueError(f"retention is {retention}, expected a positive duration")
        super().__init__(client, bucket, prefix)
        self.retention = retention

    @classmethod
    async def open(cls, client, bucket: str, *, prefix: str = "", retention: datetime.timedelta) -> SealPublisher:
        publisher = cls(client, bucket, prefix=prefix, retention=retention)
        await publisher.check_bucket()
        return publisher

    async def check_bucket(self) -> None:
        """Refuse a bucket where a published seal could be deleted or replaced."""
        try:
            versioning = await self._call("get_bucket_versioning")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
                raise BucketNotLockableError(f"S3 bucket {self.bucket} does not exist") from None
            raise self._failed("GetBucketVersioning", exc) from None
        if versioning.get("Status") != "Enabled":
            raise BucketNotLockableError(
                f"S3 bucket {self.bucket} has versioning {versioning.get('Status', 'never enabled')}, "
                "expected Enabled (create it with Object Lock enabled)"
            )
        try:
            lock = await self._call("get_object_lock_configuration")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ObjectLockConfigurationNotFoundError":
                raise BucketNotLockableError(
                    f"S3 bucket {self.bucket} does not have Object Lock enabled, so seals put there could be deleted"
                ) from None
            raise self._failed("GetObjectLockConfiguration", exc) from None
        enabled = lock.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
        if enabled != "Enabled":
            raise BucketNotLockableError(
                f"S3 bucket {self.bucket} has Object Lock {enabled or 'not configured'}, expected Enabled"
            )

    async def seal_sizes_after(self, tree_size: int | None, limit: int = 1000) -> list[int]:
        """Tree sizes of the seal keys past ``tree_size`` (all when None) under the prefix, the first ``limit`` keys.

        Every key counts that holds a version or a delete marker: a hidden
        seal was published all the same.
        """
        params: dict = {"Prefix": f"{self.prefix}seals/", "MaxKeys": limit}
        if tree_size is not None:
            params["KeyMarker"] = seal_key(self.prefix, tree_size)
        try:
            page = await self._call("list_object_versions", **params)
        except ClientError as exc:
            raise self._failed("ListObjectVersions", exc) from None
        keys = {e["Key"] for e in page.get("Versions", [])} | {e["Key"] for e in page.get("DeleteMarkers", [])}
        sizes = (_SEAL_KEY.fullmatch(key[len(self.prefix):]) for key in keys if key.startswith(self.prefix))
        return sorted(n for n in (int(m.group(1)) for m in sizes if m) if tree_size is None or n > tree_size)

    async def publish(self, tree_size: int, seal: bytes) -> SealReceipt:
        """Put ``seal`` (the JSON bytes, published verbatim) as the seal of ``tree_size``.

        Returns the receipt once the lock reads back as COMPLIANCE until
        now + retention. Raises ``IntegrityAlarm`` if the key holds anything
        but this one object, ``LockCheckError`` if the lock is not as asked,
        ``S3UnavailableError`` on transport errors (retry later).
        """
        key = seal_key(self.prefix, tree_size)
        if len(seal) > MAX_SEAL_BYTES:
            raise ValueError(f"seal for tree size {tree_size} has {len(seal)} bytes, more than {MAX_SEAL_BYTES}")
        checksum = base64.b64encode(hashlib.sha256(seal).digest()).decode()
        # S3 keeps retain-until dates to the second; ask for a whole second so
        # that the read-back can be compared exactly.
        retain_until = (datetime.datetime.now(datetime.timezone.utc) + self.retention).replace(microsecond=0)
        try:
            reply = await self._call(
                "put_object",
                Key=key,
                Body=seal,
                ContentType=SEAL_CONTENT_TYPE,
                ChecksumSHA256=checksum,
                ObjectLockMode=COMPLIANCE,
                ObjectLockRetainUntilDate=retain_until,
                IfNoneMatch="*",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return await self._existing(key, seal)
            raise self._failed("PutObject", exc) from None
        if reply.get("ChecksumSHA256") not in (None, checksum):
            raise IntegrityAlarm(f"S3 stored {key} with SHA-256 {reply['ChecksumSHA256']}, expected {checksum}")
        version_id = reply.get("VersionId")
        if not version_id:
            raise BucketNotLockableError(f"S3 bucket {self.bucket} returned no version ID for {key}, so it is not versioned")
        await self._sole_version(key, version_id)
        lock = await self.lock_status(key, version_id)
        if lock.mode != COMPLIANCE or lock.retain_until != retain_until:
            raise LockCheckError(
                f"{key} version {version_id} is locked {lock.mode or 'not at all'} until "
                f"{_iso(lock.retain_until)}, expected {COMPLIANCE} until {_iso(retain_until)}"
            )
        return SealReceipt(key, version_id, checksum, retain_until, already_present=False)

    async def _sole_version(self, key: str, version_id: str) -> None:
        """After our PUT, the key must hold exactly our version (an S3 that ignored If-None-Match would not)."""
        versions = await self.versions(key)
        if [v.version_id for v in versions] != [version_id]:
            raise IntegrityAlarm(
                f"{key} holds {len(versions)} versions or delete markers after publishing, expected only ours ({version_id})"
            )

    async def _existing(self, key: str, seal: bytes) -> SealReceipt:
        """The key was taken: success if it holds exactly this seal, locked; otherwise the alarm."""
        versions = await self.versions(key)
        if len(versions) != 1 or versions[0].delete_marker:
            raise IntegrityAlarm(
                f"{key} already holds {len(versions)} versions or delete markers, expected exactly one seal"
            )
        version = versions[0]
        stored = await self.read(key, version.version_id)
        if not hmac.compare_digest(stored, seal):
            raise IntegrityAlarm(
                f"{key} already holds a different seal (SHA-256 {hashlib.sha256(stored).hexdigest()}, "
                f"ours {hashlib.sha256(seal).hexdigest()})"
            )
        lock = await self.lock_status(key, version.version_id)
        now = datetime.datetime.now(datetime.timezone.utc)
        if not lock.protects_until(now):
            raise LockCheckError(
                f"{key} version {version.version_id} is locked {lock.mode or 'not at all'} until "
                f"{_iso(lock.retain_until)}, expected {COMPLIANCE} in force"
            )
        checksum = base64.b64encode(hashlib.sha256(seal).digest()).decode()
        return SealReceipt(key, version.version_id, checksum, lock.retain_until, already_present=True)


class SealReader(_S3):
    """Reads seals back for audit: every key, every version, every lock.

    With ``concurrency`` above 1, the reader keeps that many requests in
    flight on a thread pool of its own (close it with ``close``); the client
    needs a connection pool as large (``make_client(connections=...)``).
    """

    def __init__(self, client, bucket: str, prefix: str = "", *, concurrency: int = 1):
        super().__init__(client, bucket, prefix)
        if concurrency < 1:
            raise ValueError(f"concurrency is {concurrency}, expected 1 or more")
        self.concurrency = concurrency
        if concurrency > 1:
            self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="seal-reader")

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def each(self, items: Sequence[T], fetch: Callable[[T], Awaitable[R]]) -> list[R]:
        """``fetch`` of every item, ``concurrency`` at a time, in the items' order; the first error cancels the rest."""
        if self.concurrency == 1:
            return [await fetch(item) for item in items]
        slots = asyncio.Semaphore(self.concurrency)

        async def one(item: T) -> R:
            async with slots:
                return await fetch(item)

        tasks = [asyncio.ensure_future(one(item)) for item in items]
        try:
            return await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def seals(self) -> list[SealRecord]:
        """Every seal key under the prefix with all its versions and their locks, by tree size; then every other key under seals/."""
        listing = await self._list_versions(f"{self.prefix}seals/")
        by_key = _versions_by_key(listing)
        sizes = dict(self._seal_keys(listing))
        # Whatever else sits under seals/ comes last, never skipped: a second
        # seal for a tree size at another key is a fork all the same.
        keys = sorted(sizes, key=sizes.__getitem__) + sorted(by_key.keys() - sizes.keys())
        pairs = [(key, v) for key in keys for v in by_key[key]]

        async def locked(pair: tuple[str, SealVersion]) -> SealVersion:
            key, v = pair
            return v if v.delete_marker else dataclasses.replace(v, lock=await self.lock_status(key, v.version_id))

        versions = iter(await self.each(pairs, locked))
        return [SealRecord(sizes.get(key), key, tuple(next(versions) for _ in by_key[key])) for key in keys]

    def _seal_keys(self, listing: dict) -> Iterator[tuple[str, int]]:
        keys = {e["Key"] for e in listing["Versions"]} | {e["Key"] for e in listing["DeleteMarkers"]}
        for key in keys:
            match = _SEAL_KEY.fullmatch(key[len(self.prefix):])
            if match:
                yield key, int(match.group(1))

    async def seal_versions(self, tree_size: int) -> tuple[SealVersion, ...]:
        """Every version at one seal's key; more than one is evidence of tampering."""
        return await self.versions(seal_key(self.prefix, tree_size))


def _iso(when: datetime.datetime | None) -> str:
    return when.isoformat() if when else "never"
