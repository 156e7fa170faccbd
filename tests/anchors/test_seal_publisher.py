"""Seal publication and read-back against a real SeaweedFS with Object Lock.

SeaweedFS enforces COMPLIANCE retention (moto does not); every lock claim
here is what the real server did. Tamper attempts use boto3 directly, as an
operator holding the bucket's credentials would.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import json
import urllib.request
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from anchors.devs3 import SeaweedS3
from anchors.errors import BucketNotLockableError, IntegrityAlarm
from anchors.s3 import COMPLIANCE, SealPublisher, SealReader, seal_key

RETENTION = datetime.timedelta(days=1)
PREFIX = "example.com/log/"


def seal_bytes(tree_size: int, root: str = "qUzhJ1f3Yp0Z2Pm2Js0x2Gf6yQn9zq1U0Qm3aFzS4oM=") -> bytes:
    """A seal as the daemon serializes it; its fields do not matter to the publisher."""
    return json.dumps({"format": "notary-seal/v1", "origin": "example.com/log",
                       "tree_size": tree_size, "root_hash": root}, sort_keys=True).encode()


def publish(s3, bucket: str, tree_size: int, seal: bytes):
    async def run():
        publisher = await SealPublisher.open(s3, bucket, prefix=PREFIX, retention=RETENTION)
        return await publisher.publish(tree_size, seal)

    return asyncio.run(run())


def reader_seals(s3, bucket: str):
    return asyncio.run(SealReader(s3, bucket, prefix=PREFIX).seals())


def test_published_seal_reads_back_compliance_locked(s3, bucket):
    before = datetime.datetime.now(datetime.timezone.utc)
    receipt = publish(s3, bucket, 7, seal_bytes(7))
    assert receipt.key == "example.com/log/seals/00000000000000000007.json" == seal_key(PREFIX, 7)
    assert not receipt.already_present
    assert before + RETENTION - datetime.timedelta(seconds=1) <= receipt.retain_until

    retention = s3.get_object_retention(Bucket=bucket, Key=receipt.key, VersionId=receipt.version_id)["Retention"]
    assert retention["Mode"] == COMPLIANCE
    assert retention["RetainUntilDate"] == receipt.retain_until
    stored = s3.get_object(Bucket=bucket, Key=receipt.key, VersionId=receipt.version_id, ChecksumMode="ENABLED")
    assert stored["Body"].read() == seal_bytes(7)
    assert stored["ChecksumSHA256"] == receipt.checksum_sha256

    [record] = reader_seals(s3, bucket)
    assert (record.tree_size, record.key, record.tampered) == (7, receipt.key, False)
    [version] = record.versions
    assert version.lock.mode == COMPLIANCE and version.lock.retain_until == receipt.retain_until


def test_deleting_the_locked_version_is_refused(s3, bucket):
    receipt = publish(s3, bucket, 1, seal_bytes(1))
    for bypass in (False, True):
        with pytest.raises(ClientError) as refused:
            s3.delete_object(Bucket=bucket, Key=receipt.key, VersionId=receipt.version_id,
                             BypassGovernanceRetention=bypass)
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert s3.get_object(Bucket=bucket, Key=receipt.key, VersionId=receipt.version_id)["Body"].read() == seal_bytes(1)


def test_shortening_compliance_retention_is_refused(s3, bucket):
    receipt = publish(s3, bucket, 2, seal_bytes(2))
    attempts = [
        {"Mode": COMPLIANCE, "RetainUntilDate": receipt.retain_until - datetime.timedelta(hours=1)},
        {"Mode": "GOVERNANCE", "RetainUntilDate": receipt.retain_until},
    ]
    for retention in attempts:
        with pytest.raises(ClientError) as refused:
            s3.put_object_retention(Bucket=bucket, Key=receipt.key, VersionId=receipt.version_id,
                                    Retention=retention, BypassGovernanceRetention=True)
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
    after = s3.get_object_retention(Bucket=bucket, Key=receipt.key, VersionId=receipt.version_id)["Retention"]
    assert (after["Mode"], after["RetainUntilDate"]) == (COMPLIANCE, receipt.retain_until)


def test_a_body_that_does_not_match_its_checksum_is_not_stored(s3, bucket):
    key = seal_key(PREFIX, 8)
    wrong = base64.b64encode(hashlib.sha256(b"something else").digest()).decode()
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=bucket, Key=key, Body=seal_bytes(8), ChecksumSHA256=wrong,
                      ObjectLockMode=COMPLIANCE, ObjectLockRetainUntilDate=datetime.datetime.now(datetime.timezone.utc) + RETENTION)
    assert refused.value.response["Error"]["Code"] == "BadDigest"
    assert reader_seals(s3, bucket) == []


def test_versioning_cannot_be_suspended_on_a_lock_bucket(s3, bucket):
    with pytest.raises(ClientError) as refused:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    assert refused.value.response["Error"]["Code"] == "InvalidBucketState"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"


def test_writing_the_key_again_adds_a_version_the_reader_reports(s3, bucket):
    receipt = publish(s3, bucket, 3, seal_bytes(3))
    forged = seal_bytes(3, root="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    s3.put_object(Bucket=bucket, Key=receipt.key, Body=forged, ChecksumAlgorithm="SHA256")

    [record] = reader_seals(s3, bucket)
    assert record.tampered
    original, overwrite = record.versions
    assert original.version_id == receipt.version_id and not original.is_latest
    assert original.lock.mode == COMPLIANCE
    assert overwrite.is_latest and overwrite.lock.mode is None
    assert s3.get_object(Bucket=bucket, Key=receipt.key, VersionId=receipt.version_id)["Body"].read() == seal_bytes(3)
    assert s3.get_object(Bucket=bucket, Key=receipt.key)["Body"].read() == forged

    # Publishing the genuine seal again now sounds the alarm rather than succeeding.
    with pytest.raises(IntegrityAlarm, match="already holds 2 versions or delete markers"):
        publish(s3, bucket, 3, seal_bytes(3))


def test_hiding_a_seal_behind_a_delete_marker_is_reported(s3, bucket):
    receipt = publish(s3, bucket, 4, seal_bytes(4))
    s3.delete_object(Bucket=bucket, Key=receipt.key)  # no version: S3 adds a delete marker

    [record] = reader_seals(s3, bucket)
    assert record.tampered
    assert [v.delete_marker for v in record.versions] == [False, True]
    assert s3.get_object(Bucket=bucket, Key=receipt.key, VersionId=receipt.version_id)["Body"].read() == seal_bytes(4)


def test_publishing_the_identical_seal_twice_is_success(s3, bucket):
    first = publish(s3, bucket, 5, seal_bytes(5))
    again = publish(s3, bucket, 5, seal_bytes(5))
    assert again.already_present
    assert (again.key, again.version_id, again.retain_until) == (first.key, first.version_id, first.retain_until)
    [record] = reader_seals(s3, bucket)
    assert len(record.versions) == 1


def test_a_different_seal_at_the_same_key_is_an_integrity_alarm_never_an_overwrite(s3, bucket):
    first = publish(s3, bucket, 6, seal_bytes(6))
    other = seal_bytes(6, root="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    with pytest.raises(IntegrityAlarm, match=f"already holds a different seal .*ours {hashlib.sha256(other).hexdigest()}"):
        publish(s3, bucket, 6, other)
    [record] = reader_seals(s3, bucket)
    assert [v.version_id for v in record.versions] == [first.version_id]
    assert s3.get_object(Bucket=bucket, Key=first.key)["Body"].read() == seal_bytes(6)


def test_reader_lists_seals_by_tree_size_under_its_prefix(s3, bucket):
    for size in (10, 2, 300):
        publish(s3, bucket, size, seal_bytes(size))
    s3.put_object(Bucket=bucket, Key="other-log/seals/00000000000000000001.json", Body=b"{}",
                  ChecksumAlgorithm="SHA256")
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}notes.txt", Body=b"not a seal", ChecksumAlgorithm="SHA256")
    records = reader_seals(s3, bucket)
    assert [r.tree_size for r in records] == [2, 10, 300]
    assert not any(r.tampered for r in records)


def test_bucket_without_object_lock_is_refused_at_start(seaweed, s3):
    seaweed.create_bucket("plain-bucket", object_lock=False)
    with pytest.raises(BucketNotLockableError, match="plain-bucket has versioning never enabled"):
        publish(s3, "plain-bucket", 1, seal_bytes(1))

    seaweed.create_bucket("versioned-bucket", object_lock=False)
    s3.put_bucket_versioning(Bucket="versioned-bucket", VersioningConfiguration={"Status": "Enabled"})
    with pytest.raises(BucketNotLockableError, match="versioned-bucket does not have Object Lock enabled"):
        publish(s3, "versioned-bucket", 1, seal_bytes(1))

    with pytest.raises(BucketNotLockableError, match="no-such-bucket does not exist"):
        publish(s3, "no-such-bucket", 1, seal_bytes(1))


def test_seaweedfs_stops_and_leaves_nothing_behind():
    with SeaweedS3() as server:
        data_dir = server.data_dir
        ports = list(server.ports.values())
        proc = server.process
        sockets = [p for port in ports for p in Path("/tmp").glob(f"seaweedfs-*-{port}.sock")]
        assert sockets  # weed made its unix sockets under /tmp ...
    assert proc.poll() is not None
    assert not data_dir.exists()
    assert not [p for p in sockets if p.exists()]  # ... and stop() removed them


def test_limitation_seaweedfs_filer_api_bypasses_object_lock(seaweed, s3, bucket):
    """Documents a limit, not a guarantee: SeaweedFS enforces Object Lock in its
    S3 gateway only. Its filer HTTP API (unauthenticated by default) deletes a
    COMPLIANCE-locked version outright, so dev SeaweedFS proves our S3 calls,
    not the immutability of the storage behind it (docs/OPERATIONS.md). The
    reader then no longer lists the seal: only comparing against the
    checkpoints the log signed reveals the gap. If this test starts failing,
    SeaweedFS changed and the documentation should say so."""
    receipt = publish(s3, bucket, 9, seal_bytes(9))
    filer = seaweed.ports["filer.port"]
    path = f"/buckets/{bucket}/{receipt.key}.versions/v_{receipt.version_id}"
    request = urllib.request.Request(f"http://127.0.0.1:{filer}{path}", method="DELETE")
    with urllib.request.urlopen(request) as answer:
        assert answer.status == 204
    with pytest.raises(ClientError) as gone:
        s3.get_object(Bucket=bucket, Key=receipt.key, VersionId=receipt.version_id)
    assert gone.value.response["Error"]["Code"] == "NoSuchVersion"
    assert reader_seals(s3, bucket) == []


def test_seal_sizes_after_a_tree_size_start_past_it_in_tree_size_order(s3, bucket):
    """What the daemon asks at start: seals in the bucket past its own newest (S3 lists from KeyMarker on)."""
    for size in (1, 2, 3, 10, 200):
        publish(s3, bucket, size, seal_bytes(size))
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}seals/7.json", Body=b"not at a seal key")

    async def after(size, limit=1000):
        publisher = await SealPublisher.open(s3, bucket, prefix=PREFIX, retention=RETENTION)
        return await publisher.seal_sizes_after(size, limit)

    assert asyncio.run(after(None)) == [1, 2, 3, 10, 200]
    assert asyncio.run(after(2)) == [3, 10, 200]
    assert asyncio.run(after(2, limit=2)) == [3, 10]  # the listing starts past the marker, not at the first key
    assert asyncio.run(after(200)) == []
    assert asyncio.run(after(5)) == [10, 200]  # a size with no seal of its own
