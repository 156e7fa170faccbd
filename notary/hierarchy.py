"""A hierarchy of notaries: a host notary's seals notarized as entries of a central notary.

A seal (docs/FORMATS.md, "Seal object") is one canonical JSON document, the
exact bytes locked in S3. Its SHA-256 is submitted to the central notary by
the host's own HTTP source, so the central log attests each host seal, and
which host it came from, like any other record. One proof chain then reaches
from a service's record to the central log:

    record ──host tlog-proof──▶ host checkpoint ══ checkpoint of the host seal
    SHA-256(host seal JSON) ──central tlog-proof──▶ central checkpoint (and its own seal)

``forward_seals`` does the forwarding, outside the daemons (a timer or a
loop calls it; it keeps no state: the central log is the state).
``chain_proof`` gathers one chain; ``verify_chain`` checks it offline with
``notary.verify.verify_record`` at each level: the record and the host seal
are each the digest their proof covers, each proof leads to its checkpoint,
each checkpoint is signed by a trusted key and time-stamped by its seal.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from cryptography import x509

from notary.client import ClientError, HttpClient
from notary.errors import FormatError
from notary.sealobject import canonical_json, parse_seal
from notary.trust import TrustedKeys
from notary.tlogproof import parse_tlog_proof
from notary.verify import EXIT_OK, EXIT_RECORD, RecordVerdict, verify_record

CHAIN_FORMAT = "notary-chain/v1"


def seal_digest(seal: bytes) -> bytes:
    """SHA-256 of the seal JSON bytes as locked in S3: the record a central notary holds for a host seal."""
    return hashlib.sha256(seal).digest()


def host_seals(host: HttpClient) -> Iterator[bytes]:
    """The host's anchored seals, latest first, following each seal's ``previous_tree_size`` down to the first."""
    size = host.anchored_size()
    while size > 0:
        # The API hands the seal as parsed JSON; re-encoded the notary's way, it is the S3 object, byte for byte.
        seal = canonical_json(host.seal(size)["seal"])
        parsed = parse_seal(seal)
        if parsed.tree_size != size:
            raise FormatError(f"the host answered the seal of tree size {parsed.tree_size} for {size}")
        yield seal
        size = parsed.previous_tree_size


def _notarized(central: HttpClient, seal: bytes, source: str) -> list[int]:
    return central.lookup([seal_digest(seal)], source)["indices"][0]


def forward_seals(host: HttpClient, central: HttpClient, source: str) -> list[tuple[int, int]]:
    """Submit to ``central`` every anchored host seal it does not hold yet from ``source``, oldest first.

    ``central`` authenticates as ``source`` (its token's name there). Returns
    ``(host tree size, central index)`` per seal submitted.
    """
    missing = []
    for seal in host_seals(host):
        if _notarized(central, seal, source):
            break  # the central log has this seal, so the forwarder already sent every earlier one
        missing.append(seal)
    missing.reverse()
    if not missing:
        return []
    indices = central.submit_indices([seal_digest(s) for s in missing])
    return [(parse_seal(s).tree_size, i) for s, i in zip(missing, indices)]


@dataclass(frozen=True)
class ChainProof:
    """One record's path to the central log: its host proof, the host seal, that seal's central proof."""

    record_proof: bytes  # tlog-proof of the record in the host log, at the host seal's tree size
    host_seal: bytes  # the host seal JSON, exactly as locked in S3
    central_proof: bytes  # tlog-proof of SHA-256(host_seal) in the central log
    central_seal: bytes  # the central seal at the central proof's tree size

    def encode(self) -> bytes:
        doc = {"format": CHAIN_FORMAT, **{name: getattr(self, name).decode("utf-8") for name in _CHAIN_FIELDS}}
        return json.dumps(doc, indent=1).encode("utf-8") + b"\n"


_CHAIN_FIELDS = ("record_proof", "host_seal", "central_proof", "central_seal")


def parse_chain(data: bytes) -> ChainProof:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"chain proof is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != CHAIN_FORMAT:
        raise FormatError(f"chain proof is not a {CHAIN_FORMAT} document")
    if sorted(doc) != sorted(("format", *_CHAIN_FIELDS)) or not all(isinstance(doc[f], str) for f in _CHAIN_FIELDS):
        raise FormatError(f"chain proof must have exactly the string fields {', '.join(_CHAIN_FIELDS)}")
    try:
        return ChainProof(**{f: doc[f].encode("utf-8") for f in _CHAIN_FIELDS})
    except UnicodeEncodeError as exc:  # a lone surrogate, written as \ud800 in the JSON
        raise FormatError(f"chain proof holds a character that is no text: {exc.reason} at {exc.start}") from None


def chain_proof(host: HttpClient, central: HttpClient, record_digest: bytes, host_source: str) -> ChainProof:
    """The chain for the record's first entry in the host log, through the latest host seal the central log holds
    from ``host_source`` and has sealed."""
    hits = host.lookup([record_digest])["indices"][0]
    if not hits:
        raise ClientError(f"the host notary holds no entry with digest {record_digest.hex()}")
    index = hits[0]
    for seal in host_seals(host):
        size = parse_seal(seal).tree_size
        if size <= index:
            break
        central_hits = _notarized(central, seal, host_source)
        if central_hits:
            central_text = central.proof(index=central_hits[0]).encode("utf-8")
            central_size = parse_tlog_proof(central_text).signed.checkpoint.size
            central_seal = canonical_json(central.seal(central_size)["seal"])
            return ChainProof(host.proof(index=index, size=size).encode("utf-8"), seal, central_text, central_seal)
    raise ClientError(f"no host seal covering index {index} is in the central log from source {host_source!r} "
                      "yet: forward the seals (notary forward-seals) and wait for the central seal")


@dataclass(frozen=True)
class ChainVerdict:
    host: RecordVerdict  # the record in the host log, with the host seal's timestamp
    central: RecordVerdict | None  # the host seal in the central log (None: the host level failed, not checked)
    host_source: str | None  # the central entry's source required, if any

    @property
    def exit_code(self) -> int:
        if self.central is None or not self.host.ok:
            return self.host.exit_code
        if not self.central.ok:
            return self.central.exit_code
        return EXIT_RECORD if self.source_mismatch else EXIT_OK  # the seal was notarized by someone else

    @property
    def source_mismatch(self) -> bool:
        return (self.central is not None and self.host_source is not None
                and self.central.entry.source != self.host_source)

    def render_text(self) -> str:
        head = "VERIFIED" if self.exit_code == EXIT_OK else "NOT VERIFIED"
        lines = [f"{head}: chain of {2 if self.central else 1} links"]
        lines.append("host:    " + self.host.render_text().rstrip("\n").replace("\n", "\n         "))
        if self.central is None:
            lines.append("central: not checked (the host link failed)")
        else:
            lines.append("central: " + self.central.render_text().rstrip("\n").replace("\n", "\n         "))
        if self.source_mismatch:
            lines.append(f"source:  the host seal was notarized by {self.central.entry.source!r}, "
                         f"expected {self.host_source!r}")
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        return {"format": "notary-chain-verdict/v1", "verified": self.exit_code == EXIT_OK, "exit_code": self.exit_code,
                "host": self.host.to_json(), "central": None if self.central is None else self.central.to_json(),
                "host_source": self.host_source}


def verify_chain(chain: ChainProof, host_trust: TrustedKeys, central_trust: TrustedKeys,
                 roots: Sequence[x509.Certificate], *, record_digest: bytes | None = None,
                 host_source: str | None = None) -> ChainVerdict:
    """Verify each link offline; ``host_source``, if given, is the source the central entry must name.

    The host link passes only if the host seal's timestamp covers exactly the
    record proof's signed checkpoint (``verify_record``'s timestamp check), so
    the seal hashed into the central log is the one that seals the record.
    """
    host = verify_record(chain.record_proof, host_trust, record_digest=record_digest, seal=chain.host_seal,
                         roots=roots)
    if not host.ok:
        return ChainVerdict(host, None, host_source)
    central = verify_record(chain.central_proof, central_trust, record_digest=seal_digest(chain.host_seal),
                            seal=chain.central_seal, roots=roots)
    return ChainVerdict(host, central, host_source)
