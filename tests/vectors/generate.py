"""Regenerate tests/vectors/formats.json: entry, signed-note, checkpoint and tlog-proof vectors.

    .venv/bin/python -m tests.vectors.generate

Keys are fixed (an Ed25519 seed and an ECDSA P-256 scalar derived from fixed
strings), so everything but the ECDSA signatures (randomized by ECDSA itself)
is the same on every run. tests/test_formats.py checks the vectors with our
code and, independently, with `cryptography` and tlog-scales.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

from notary import merkle
from notary.checkpoint import Checkpoint, sign_checkpoint
from notary.entry import Entry
from notary.note import b64encode
from notary.store import LogStore
from notary.tlogproof import TlogProof
from tests.support import SoftwareSigner

ORIGIN = "notary.example/vectors"
ED25519_SEED = hashlib.sha256(b"merkle-notary test vector ed25519 key").digest()
ECDSA_SCALAR = int.from_bytes(hashlib.sha256(b"merkle-notary test vector ecdsa key").digest(), "big")
OUT = Path(__file__).with_name("formats.json")


def entries() -> list[Entry]:
    sources = ["billing-api", "", "auth", "app.example/überweisung", "x" * 255]
    return [Entry(hashlib.sha256(b"record %d" % i).digest(), sources[i % len(sources)]) for i in range(11)]


async def build(tmp: Path) -> dict:
    ed, ec = SoftwareSigner.ed25519(ED25519_SEED), SoftwareSigner.ecdsa(ECDSA_SCALAR)
    es = entries()
    store = LogStore(tmp / "vectors.db", create=True)
    store.append_entries([e.encode() for e in es])
    cp = Checkpoint(ORIGIN, store.size, store.tree_hash())
    signed = await sign_checkpoint(cp, [ed, ec])
    proofs = []
    for index in (0, 4, 10):
        proof = TlogProof(entry=es[index].encode(), index=index,
                          path=tuple(store.inclusion_proof(index)), signed=signed)
        proofs.append({"index": index, "text": proof.format()})
    store.close()
    return {
        "generated_by": "tests/vectors/generate.py",
        "origin": ORIGIN,
        "keys": {
            "ed25519": {"seed_hex": ED25519_SEED.hex(), "vkey": str(ed.verifier(ORIGIN))},
            "ecdsa_p256": {"private_scalar_hex": f"{ECDSA_SCALAR:064x}", "vkey": str(ec.verifier(ORIGIN)),
                           "spki_der_b64": b64encode(ec.public_key)},
        },
        "entries": [
            {"digest_hex": e.digest.hex(), "source": e.source, "encoded_hex": e.encode().hex(),
             "leaf_hash_hex": merkle.leaf_hash(e.encode()).hex()}
            for e in es
        ],
        "checkpoint": {"size": cp.size, "root_hash_hex": cp.root_hash.hex(), "text": signed.note.format()},
        "tlog_proofs": proofs,
    }


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        data = asyncio.run(build(Path(tmp)))
    OUT.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
