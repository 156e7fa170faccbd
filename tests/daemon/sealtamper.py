"""What the verify and audit tests share: running the CLI, reading a daemon's seals from the real
SeaweedFS, writing (tampered) seals there with boto3, and tokens from a second, untrusted dev TSA."""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import json

from anchors.devtsa import DevTsa
from anchors.s3 import SealReader, seal_key
from anchors.tsa import TsaEndpoint, TimestampClient, build_request, load_roots, new_nonce, verify_response
from notary.checkpoint import Checkpoint, sign_checkpoint
from notary.cli import main
from notary.devstack import BUCKET
from notary.seals import Seal
from tests.support import SoftwareSigner


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """``notary ARGV`` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def s3_args(stack, prefix: str) -> list[str]:
    return ["--bucket", BUCKET, "--prefix", prefix, "--endpoint-url", stack.s3.endpoint_url, "--region", "us-east-1"]


def s3_env(monkeypatch, stack) -> None:
    """Credentials the way an auditor passes them: boto3's environment variables."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", stack.s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", stack.s3.secret_key)


def trust_args(stack) -> list[str]:
    return ["--keyring", stack.keyring_path, "--tsa-roots", stack.data_dir / "tsa" / "root.pem"]


def seal_docs(stack, prefix: str) -> dict[int, dict]:
    """The latest version of every seal under ``prefix``, as JSON, by tree size."""
    reader = SealReader(stack.s3.client(), BUCKET, prefix)

    async def read() -> dict[int, dict]:
        return {r.tree_size: json.loads(await reader.read(r.key, r.versions[-1].version_id))
                for r in await reader.seals()}

    return asyncio.run(read())


def put_seal(stack, prefix: str, tree_size: int, body: bytes, mode: str | None = "COMPLIANCE") -> str:
    """PUT ``body`` at the seal key, locked in ``mode`` for a day (None: no lock); return the version id."""
    extra = {}
    if mode is not None:
        until = datetime.datetime.now(datetime.UTC).replace(microsecond=0) + datetime.timedelta(days=1)
        extra = {"ObjectLockMode": mode, "ObjectLockRetainUntilDate": until}
    reply = stack.s3.client().put_object(
        Bucket=BUCKET, Key=seal_key(prefix, tree_size), Body=body, ContentType="application/json",
        ChecksumSHA256=base64.b64encode(hashlib.sha256(body).digest()).decode(), **extra)
    return reply["VersionId"]


def encode_seal(doc: dict, **changes) -> bytes:
    """A seal's JSON with ``changes``, written by the notary's own serializer (canonical)."""
    doc = doc | changes
    b64 = base64.b64decode
    seal = Seal(tree_size=doc["tree_size"], root_hash=b64(doc["root_hash"]), checkpoint=doc["checkpoint"].encode(),
                previous_tree_size=doc["previous_tree_size"],
                consistency_proof=tuple(b64(h) for h in doc["consistency_proof"]), sealed_at=doc["sealed_at"],
                timestamp_token=b64(doc["timestamp_token"]))
    return seal.seal_json(doc["origin"])


def copy_chain(stack, docs: dict[int, dict], prefix: str, skip: tuple[int, ...] = ()) -> None:
    """The seals, byte for byte as the notary writes them, under another prefix (COMPLIANCE)."""
    for size, doc in sorted(docs.items()):
        if size not in skip:
            put_seal(stack, prefix, size, encode_seal(doc))


def resigned_checkpoint(doc: dict, signer: SoftwareSigner | None = None, root: bytes | None = None) -> bytes:
    """The seal's checkpoint (or one with another root) signed by a software key the keyring does not hold."""
    cp = Checkpoint(doc["origin"], doc["tree_size"], root or base64.b64decode(doc["root_hash"]))
    signed = asyncio.run(sign_checkpoint(cp, [signer or SoftwareSigner.ecdsa()]))
    return signed.encode()


def trusted_token(stack, message: bytes) -> str:
    """A token from the stack's own (trusted) dev TSA, base64."""
    endpoint = TsaEndpoint(stack.tsa_url, load_roots(stack.data_dir / "tsa" / "root.pem"))

    async def stamp() -> bytes:
        async with TimestampClient([endpoint]) as client:
            return (await client.timestamp(message)).der

    return base64.b64encode(asyncio.run(stamp())).decode()


def rogue_token(data_dir, message: bytes) -> str:
    """A token from a second dev TSA with its own CA (its own data directory), base64."""
    tsa = DevTsa(data_dir)
    digest, nonce = hashlib.sha256(message).digest(), new_nonce()
    response = asyncio.run(tsa.reply(build_request(digest, nonce)))
    token = verify_response(response, digest, load_roots(tsa.root_cert_path), nonce=nonce)
    return base64.b64encode(token.der).decode()
