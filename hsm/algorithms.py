"""The two signing algorithms: how each is generated and used in PKCS#11,
and how its public key and signatures look in a C2SP signed note.

- ``ecdsa-p256`` (note type 0x02, the default, the one AWS CloudHSM offers):
  CKM_EC_KEY_PAIR_GEN on secp256r1; we hash the message with SHA-256 here and
  sign the digest with plain CKM_ECDSA (SoftHSM2 has no CKM_ECDSA_SHA256),
  then encode the raw ``r || s`` as an ASN.1 DER ECDSA-Sig-Value (RFC 3279
  §2.2.3). Public key: SPKI DER.
- ``ed25519`` (note type 0x01): CKM_EC_EDWARDS_KEY_PAIR_GEN with the
  id-Ed25519 OID as CKA_EC_PARAMS, pure Ed25519 (CKM_EDDSA, no parameters) over
  the whole message. Public key: the raw 32 bytes (RFC 8032 §5.1.5).

CKA_EC_POINT holds the public point wrapped in a DER OCTET STRING (PKCS#11
3.0 §2.3.3 and §2.3.5), which is what SoftHSM2 returns.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from asn1crypto.core import ObjectIdentifier, OctetString
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pkcs11 import KeyType, Mechanism
from pkcs11.util.ec import encode_ecdsa_signature, encode_named_curve_parameters

from hsm.errors import KeyringError, TokenError

# C2SP signed-note signature types (c2sp.org/signed-note).
SIG_ED25519 = 0x01
SIG_ECDSA = 0x02

# CKA_ID = the first KEY_ID_BYTES of SHA-256(public key as in a note), so the
# id names the key pair and cannot be reused for another one.
KEY_ID_BYTES = 16


def key_id_for(public_key: bytes) -> bytes:
    """CKA_ID of a key pair: SHA-256(note public key)[:16]."""
    return hashlib.sha256(public_key).digest()[:KEY_ID_BYTES]


@dataclass(frozen=True)
class Algorithm:
    """One signing algorithm, as PKCS#11 and the signed-note format see it."""

    name: str
    sig_type: int
    key_type: KeyType
    keygen: Mechanism
    mechanism: Mechanism
    ec_params: bytes  # DER, the CKA_EC_PARAMS of generated keys

    def public_key_from_ec_point(self, ec_point: bytes) -> bytes:
        """The note public key (SPKI DER, or raw Ed25519) from CKA_EC_POINT."""
        try:
            point = OctetString.load(ec_point, strict=True).native
        except ValueError:
            raise TokenError(
                f"the token returned a CKA_EC_POINT that is not a DER OCTET STRING for a {self.name} key"
            ) from None
        if self.sig_type == SIG_ECDSA:
            try:
                key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
            except ValueError:
                raise TokenError("the token returned a CKA_EC_POINT that is not a P-256 point") from None
            return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if len(point) != 32:
            raise TokenError(f"the token returned an Ed25519 public key of {len(point)} bytes, expected 32")
        return point

    def check_public_key(self, public_key: bytes) -> None:
        """Raise ``KeyringError`` unless ``public_key`` is a valid key of this algorithm."""
        if self.sig_type == SIG_ED25519:
            if len(public_key) != 32:
                raise KeyringError(f"Ed25519 public key is {len(public_key)} bytes, expected 32")
            return
        try:
            key = serialization.load_der_public_key(public_key)
        except (ValueError, UnsupportedAlgorithm):
            raise KeyringError("ECDSA public key is not SPKI DER of a supported key type") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            raise KeyringError("ECDSA public key is not on curve P-256")
        if key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != public_key:
            raise KeyringError("ECDSA public key is not in canonical SPKI DER")

    def to_sign(self, message: bytes) -> bytes:
        """What the token signs: SHA-256(message) for ECDSA, the message for Ed25519."""
        if self.sig_type == SIG_ECDSA:
            return hashlib.sha256(message).digest()
        return message

    def encode_signature(self, raw: bytes) -> bytes:
        """The note signature from the token's output: DER for ECDSA, as is for Ed25519."""
        if self.sig_type == SIG_ECDSA:
            return encode_ecdsa_signature(raw)
        return raw

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (as ``encode_signature`` gives it) is ``public_key``'s over ``message``."""
        try:
            if self.sig_type == SIG_ECDSA:
                serialization.load_der_public_key(public_key).verify(signature, message, ec.ECDSA(hashes.SHA256()))
            else:
                Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def spki_pem(self, public_key: bytes) -> str:
        """The public key as an SPKI PEM block, for auditors' tools."""
        if self.sig_type == SIG_ECDSA:
            key = serialization.load_der_public_key(public_key)
        else:
            key = Ed25519PublicKey.from_public_bytes(public_key)
        return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


ECDSA_P256 = Algorithm(
    name="ecdsa-p256",
    sig_type=SIG_ECDSA,
    key_type=KeyType.EC,
    keygen=Mechanism.EC_KEY_PAIR_GEN,
    mechanism=Mechanism.ECDSA,
    ec_params=encode_named_curve_parameters("secp256r1"),
)

ED25519 = Algorithm(
    name="ed25519",
    sig_type=SIG_ED25519,
    key_type=KeyType.EC_EDWARDS,
    keygen=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
    mechanism=Mechanism.EDDSA,
    ec_params=ObjectIdentifier("1.3.101.112").dump(),  # id-Ed25519, RFC 8410 §3
)

ALGORITHMS = {alg.name: alg for alg in (ECDSA_P256, ED25519)}
DEFAULT = ECDSA_P256


def algorithm(name: str) -> Algorithm:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise KeyringError(f"algorithm {name!r} is unknown; use one of {', '.join(ALGORITHMS)}") from None
