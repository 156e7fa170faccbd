"""Evidence packs without a daemon or S3: a real log (``LogStore``), Ed25519-signed checkpoints, RFC 3161 tokens
from the dev TSA (``openssl ts -reply``, stamped when asked), an audit of the seals as S3 would hold them
(``audit_seals``, COMPLIANCE locks ten years out) and the pack (``build_pack``), closed by a seal stamped after
its period (``SealedLog.period_seals``)."""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography import x509

from anchors.devtsa import DevTsa
from anchors.s3 import LockStatus, SealVersion, seal_key
from anchors.tsa import build_request, load_roots, new_nonce, verify_response
from hsm.algorithms import key_id_for
from hsm.keyring import Keyring
from notary.audit import AuditReport, StoredSeal, StoredVersion, audit_seals
from notary.checkpoint import Checkpoint, sign_checkpoint
from notary.entry import Entry
from notary.evidence import MANIFEST, PACK_JSON, Period, build_pack, manifest, pages, verify_contents
from notary.sealobject import canonical_json
from notary.seals import Seal
from notary.store import LogStore
from notary.trust import TrustedKeys
from tests.support import SoftwareSigner

ORIGIN = "example.com/log"
KEY = SoftwareSigner.ed25519(bytes([7] * 32))
UTC = datetime.UTC
KEY_ACTIVE_SINCE = datetime.datetime(2020, 1, 2, tzinfo=UTC)
HOUR = datetime.timedelta(hours=1)


def next_second() -> datetime.datetime:
    """The next whole UTC second, once it has passed: tokens stamped before it are timestamped before it (the dev
    TSA's times are whole seconds), tokens stamped from now on at or after it."""
    now = datetime.datetime.now(UTC)
    boundary = now.replace(microsecond=0) + datetime.timedelta(seconds=1)
    time.sleep((boundary - now).total_seconds() + 0.1)
    return boundary


def keyring() -> Keyring:
    ring = Keyring(ORIGIN).generate(key_id_for(KEY.public_key), "k", "ed25519", KEY.public_key,
                                    now=KEY_ACTIVE_SINCE - datetime.timedelta(days=1))
    return ring.activate("k", now=KEY_ACTIVE_SINCE)


class SealedLog:
    """A log of ``size`` entries and a dev TSA: checkpoints, tokens and seals of any tree size."""

    def __init__(self, directory: Path, size: int):
        self.tsa = DevTsa(directory / "tsa")
        self.store = LogStore(directory / "log.db", create=True)
        self.store.append_entries([Entry(hashlib.sha256(i.to_bytes(8, "big")).digest(), "src").encode()
                                   for i in range(size)])

    @property
    def roots_pem(self) -> bytes:
        return self.tsa.root_cert_path.read_bytes()

    def checkpoint(self, size: int) -> bytes:
        return asyncio.run(sign_checkpoint(Checkpoint(ORIGIN, size, self.store.tree_hash(size)), [KEY])).encode()

    def token(self, checkpoint: bytes) -> bytes:
        """An RFC 3161 token over SHA-256 of ``checkpoint``, stamped now."""
        digest, nonce = hashlib.sha256(checkpoint).digest(), new_nonce()
        response = asyncio.run(self.tsa.reply(build_request(digest, nonce)))
        return verify_response(response, digest, load_roots(self.tsa.root_cert_path), nonce=nonce).der

    def seal(self, size: int, previous: int, checkpoint: bytes, token: bytes) -> bytes:
        """The canonical seal JSON of ``size`` extending ``previous``, as the notary writes it to S3."""
        sealed_at = datetime.datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        seal = Seal(size, self.store.tree_hash(size), checkpoint, previous,
                    tuple(self.store.consistency_proof(previous, size)), sealed_at, timestamp_token=token)
        return seal.seal_json(ORIGIN)

    def seals(self, sizes: Sequence[int], previous: int = 0) -> list[bytes]:
        """A chain of seals at ``sizes`` (ascending) from the seal at ``previous``, each timestamped as it is made."""
        bodies = []
        for size in sizes:
            checkpoint = self.checkpoint(size)
            bodies.append(self.seal(size, previous, checkpoint, self.token(checkpoint)))
            previous = size
        return bodies

    def period_seals(self, sizes: Sequence[int]) -> tuple[list[bytes], Period]:
        """Seals at ``sizes`` timestamped in an hour-long period that then ends (at the next whole second), and the
        seal at ``sizes[-1] + 1`` (the log must hold that many entries), stamped after it: it closes the period."""
        bodies = self.seals(sizes)
        end = next_second()
        return bodies + self.seals([sizes[-1] + 1], sizes[-1]), Period(end - HOUR, end)


def audit(bodies: Sequence[bytes], roots_pem: bytes, prefix: str = "p/") -> AuditReport:
    """``notary audit`` of these seal objects, each alone at its key and COMPLIANCE-locked for ten years."""
    lock = LockStatus("COMPLIANCE", datetime.datetime.now(UTC) + datetime.timedelta(days=3650))
    stored = []
    for body in bodies:
        size = json.loads(body)["tree_size"]
        key = seal_key(prefix, size)
        version = SealVersion(f"v{size}", datetime.datetime.now(UTC), True, False, len(body), "etag", lock)
        stored.append(StoredSeal(size, key, (StoredVersion(key, version, body),)))
    roots = tuple(x509.load_pem_x509_certificates(roots_pem))
    return audit_seals(stored, TrustedKeys.from_keyring(keyring()), roots, bucket="b", prefix=prefix)


def make_pack(directory: Path, sizes: Sequence[int], *, created_at: datetime.datetime | None = None):
    """The files and verdict of the pack of a period whose seals are at ``sizes``, closed by the seal at
    ``sizes[-1] + 1`` (``SealedLog.period_seals``); made now unless ``created_at`` says otherwise."""
    log = SealedLog(directory, sizes[-1] + 1)
    bodies, period = log.period_seals(sizes)
    return build_pack(audit(bodies, log.roots_pem), period, keyring().encode(), log.roots_pem,
                      created_at=created_at or datetime.datetime.now(UTC))


def edit_json(files: dict[str, bytes], path: str, change: Callable[[dict], object]) -> dict[str, bytes]:
    """``files`` with the JSON file at ``path`` changed in place by ``change``."""
    doc = json.loads(files[path])
    change(doc)
    return files | {path: (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()}


def forge(files: dict[str, bytes]) -> dict[str, bytes]:
    """What a forger who edits the data also does: make the pages again from it, and SHA256SUMS."""
    files = files | pages(files, verify_contents(files))
    return files | {MANIFEST: manifest(files)}


def refresh_manifest(files: dict[str, bytes]) -> dict[str, bytes]:
    return files | {MANIFEST: manifest(files)}


def pack_json(files: dict[str, bytes]) -> dict:
    return json.loads(files[PACK_JSON])


def relinked(log: SealedLog, body: bytes, previous: int) -> bytes:
    """The seal ``body`` with its consistency proof from ``previous`` instead: fields no signature covers."""
    doc = json.loads(body)
    doc["previous_tree_size"] = previous
    doc["consistency_proof"] = [base64.b64encode(h).decode()
                                for h in log.store.consistency_proof(previous, doc["tree_size"])]
    return canonical_json(doc)
