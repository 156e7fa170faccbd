"""Entry v1, signed notes, checkpoints and tlog-proofs: vectors, independent verifiers, strict parsing, fuzzing."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tlog_scales import tlog as ts_tlog
from tlog_scales.signing import Vkey

from notary import merkle
from notary.checkpoint import Checkpoint, parse_checkpoint_text, parse_signed_checkpoint, sign_checkpoint, verify_signed_checkpoint
from notary.entry import Entry, EntryRun, encode_entries, encode_run, entries_from_hex, parse_digest_hex, parse_digest_list, parse_entry
from notary.errors import FormatError, VerificationError
from notary.note import parse_note, parse_verifier_key, verify_note
from notary.tlogproof import TlogProof, parse_tlog_proof, verify_tlog_proof
from tests.support import SoftwareSigner, examples, relabelled_checkpoint
from tests.vectors.generate import ECDSA_SCALAR, ED25519_SEED

V = json.loads((Path(__file__).parent / "vectors" / "formats.json").read_text())
ORIGIN = V["origin"]
ED_VKEY = parse_verifier_key(V["keys"]["ed25519"]["vkey"])
EC_VKEY = parse_verifier_key(V["keys"]["ecdsa_p256"]["vkey"])
CP_TEXT = V["checkpoint"]["text"]


# -- entry v1 ------------------------------------------------------------------


@pytest.mark.parametrize("vec", V["entries"], ids=lambda v: v["source"][:20] or "empty-source")
def test_entry_vectors_round_trip(vec):
    entry = Entry(bytes.fromhex(vec["digest_hex"]), vec["source"])
    assert entry.encode().hex() == vec["encoded_hex"]
    assert parse_entry(bytes.fromhex(vec["encoded_hex"])) == entry
    # Independent of our code: SHA-256(0x00 || entry).
    assert hashlib.sha256(b"\x00" + entry.encode()).hexdigest() == vec["leaf_hash_hex"]


def test_batch_encoding_is_the_vectors_encoding():
    """Ingest encodes a submission with encode_entries: byte for byte the vectors' entries."""
    for source in {v["source"] for v in V["entries"]}:
        vecs = [v for v in V["entries"] if v["source"] == source]
        encoded = encode_entries([bytes.fromhex(v["digest_hex"]) for v in vecs], source)
        assert [e.hex() for e in encoded] == [v["encoded_hex"] for v in vecs]
    with pytest.raises(FormatError, match="digest must be 32 bytes"):
        encode_entries([b"\x00" * 32, b"\x00" * 31], "a")
    with pytest.raises(FormatError, match="control character"):
        encode_entries([b"\x00" * 32], "a\nb")


def test_hex_ingest_encoding_is_the_vectors_encoding():
    """The HTTP hot path (one fromhex over the whole submission) makes byte for byte the vectors' entries."""
    for source in {v["source"] for v in V["entries"]}:
        vecs = [v for v in V["entries"] if v["source"] == source]
        for hexes in ([v["digest_hex"] for v in vecs], [v["digest_hex"].upper() for v in vecs]):
            run = entries_from_hex(hexes, source)
            assert [e.hex() for e in run] == [v["encoded_hex"] for v in vecs]
            assert run.count == len(vecs) and run == encode_run([bytes.fromhex(h) for h in hexes], source)


GOOD = "ab" * 32


@pytest.mark.parametrize(
    "items,bad,why",
    [
        ([GOOD, "zz" * 32, GOOD], 1, "not 64 hex digits"),
        ([GOOD, 42], 1, "not a string"),
        ([list(GOOD)], 0, "not a string"),
        ([GOOD, GOOD.encode()], 1, "not a string"),
        ([GOOD, GOOD[:63]], 1, "not 64 hex digits"),
        # 63 and 65 digits: as many hex digits in all as two good ones, so
        # only a per-item length check keeps the entries aligned.
        ([GOOD, GOOD[:63], GOOD + "a"], 1, "not 64 hex digits"),
        ([GOOD, GOOD[:62] + " a"], 1, "not 64 hex digits"),  # fromhex would skip the space
        ([" " + GOOD[:63], GOOD], 0, "not 64 hex digits"),
        ([GOOD, GOOD[:63] + "\u00e9"], 1, "not 64 hex digits"),
        ([GOOD, GOOD[:62] + "\n\n"], 1, "not 64 hex digits"),
        ([], None, "^: no digests$"),
    ],
)
def test_hex_ingest_names_the_first_bad_item(items, bad, why):
    with pytest.raises(FormatError, match=why) as caught:
        entries_from_hex(items, "app")
    if bad is not None:
        assert str(caught.value).startswith(f"[{bad}]: ")
    if bad is not None:  # the lookup endpoint parses its digests one by one, with the same verdict
        with pytest.raises(FormatError, match=why) as caught:
            parse_digest_list(items)
        assert str(caught.value).startswith(f"[{bad}]: ")


def test_entry_runs_group_equal_lengths_in_order():
    entries = [b"a" * 3, b"b" * 3, b"c" * 5, b"d" * 3, b"e" * 3]
    runs = EntryRun.group(entries)
    assert [(r.width, r.count) for r in runs] == [(3, 2), (5, 1), (3, 2)]
    assert [e for r in runs for e in r] == entries
    assert EntryRun.group([]) == []
    assert [(r.width, r.count, list(r)) for r in EntryRun.group([b"", b"", b"x"])] == [(0, 2, [b"", b""]), (1, 1, [b"x"])]
    with pytest.raises(FormatError, match="cannot be 7 bytes"):
        EntryRun(b"x" * 7, 3, 2)


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", "shorter than the minimum"),
        (b"\x02" + b"\x00" * 33, "version is 0x02"),
        (b"\x01" + b"\x00" * 32 + b"\x03ab", "declares a source of 3 bytes but holds 2"),
        (b"\x01" + b"\x00" * 32 + b"\x01abc", "declares a source of 1 bytes but holds 3"),
        (b"\x01" + b"\x00" * 32 + b"\x02\xc3\x28", "not valid UTF-8"),
        (b"\x01" + b"\x00" * 32 + b"\x02a\n", "control character U\\+000A"),
    ],
)
def test_malformed_entries_are_refused(data, message):
    with pytest.raises(FormatError, match=message):
        parse_entry(data)


def test_source_limit_is_255_bytes():
    Entry(b"\x00" * 32, "é" * 127 + "x")  # 255 bytes
    with pytest.raises(FormatError, match="256 bytes, more than the limit of 255"):
        Entry(b"\x00" * 32, "é" * 128)


@pytest.mark.parametrize("text", ["", "00" * 31, "00" * 33, "g" * 64, " " + "0" * 63, "０" * 64,
                                  "00" * 31 + "  ", "00 " * 21 + "0", "00" * 31 + "\n\t"])
def test_malformed_digest_hex_is_refused(text):
    with pytest.raises(FormatError, match="is not 64 hex digits"):
        parse_digest_hex(text)


def test_digest_hex_accepts_either_case():
    assert parse_digest_hex("AB" * 32) == parse_digest_hex("ab" * 32) == b"\xab" * 32


# -- signed notes and checkpoints ----------------------------------------------


def test_vector_keys_are_the_documented_ones():
    ed, ec_signer = SoftwareSigner.ed25519(ED25519_SEED), SoftwareSigner.ecdsa(ECDSA_SCALAR)
    assert str(ed.verifier(ORIGIN)) == V["keys"]["ed25519"]["vkey"]
    assert str(ec_signer.verifier(ORIGIN)) == V["keys"]["ecdsa_p256"]["vkey"]


def test_checkpoint_vector_round_trips_byte_for_byte():
    signed = parse_signed_checkpoint(CP_TEXT.encode())
    assert signed.encode().decode() == CP_TEXT
    assert signed.checkpoint == Checkpoint(ORIGIN, V["checkpoint"]["size"], bytes.fromhex(V["checkpoint"]["root_hash_hex"]))
    _, keys = verify_signed_checkpoint(CP_TEXT, [ED_VKEY, EC_VKEY], origin=ORIGIN)
    assert keys == [ED_VKEY, EC_VKEY]


def test_checkpoint_vector_ed25519_signature_verifies_with_tlog_scales():
    theirs = ts_tlog.Checkpoint.from_text(CP_TEXT)
    theirs.verify(Vkey.from_string(V["keys"]["ed25519"]["vkey"]))  # raises if not
    assert (theirs.origin, theirs.size) == (ORIGIN, V["checkpoint"]["size"])


def test_checkpoint_vector_ecdsa_signature_verifies_with_cryptography():
    """Type 0x02, checked from the spec with nothing of ours: key ID = SHA-256(SPKI)[:4], DER ECDSA over the text."""
    spki = base64.b64decode(V["keys"]["ecdsa_p256"]["spki_der_b64"])
    key = serialization.load_der_public_key(spki)
    text, sigs = CP_TEXT.split("\n\n")
    line = [s for s in sigs.splitlines() if s][1]
    blob = base64.b64decode(line.split(" ")[2])
    assert blob[:4] == hashlib.sha256(spki).digest()[:4]
    key.verify(blob[4:], (text + "\n").encode(), ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa"])
def test_signed_checkpoints_verify_with_independent_verifiers(kind):
    signer = SoftwareSigner.ed25519() if kind == "ed25519" else SoftwareSigner.ecdsa()
    cp = Checkpoint("log.example/a", 42, hashlib.sha256(b"root").digest())
    signed = asyncio.run(sign_checkpoint(cp, [signer]))
    vkey = signer.verifier(cp.origin)
    assert verify_note(parse_note(signed.encode()), [vkey]) == [vkey]
    sig = signed.note.signatures[0]
    if kind == "ed25519":
        ts_tlog.Checkpoint.from_text(signed.note.format()).verify(Vkey.from_string(str(vkey)))
    else:
        public = serialization.load_der_public_key(signer.public_key)
        public.verify(sig.signature, cp.text().encode(), ec.ECDSA(hashes.SHA256()))


def test_tampered_checkpoint_is_rejected():
    tampered = CP_TEXT.replace("\n11\n", "\n12\n")
    with pytest.raises(VerificationError, match="does not verify"):
        verify_signed_checkpoint(tampered, [ED_VKEY])


def test_checkpoint_signed_only_by_unknown_keys_is_rejected():
    stranger = SoftwareSigner.ed25519().verifier(ORIGIN)
    with pytest.raises(VerificationError, match="no signature by a trusted key"):
        verify_signed_checkpoint(CP_TEXT, [stranger])


def test_checkpoint_for_another_log_is_rejected():
    with pytest.raises(VerificationError, match="expected 'other.example/log'"):
        verify_signed_checkpoint(CP_TEXT, [ED_VKEY], origin="other.example/log")


@pytest.mark.parametrize("algorithm", ["ed25519", "ecdsa"])
def test_a_key_trusted_for_one_log_does_not_vouch_for_another_logs_checkpoint(algorithm):
    """One key serving two logs: its signature on log B's checkpoint, relabelled with log A's name, is not log A's."""
    key = SoftwareSigner.ed25519(bytes([7] * 32)) if algorithm == "ed25519" else SoftwareSigner.ecdsa(12345)
    own, forged = relabelled_checkpoint(key, "other.example/log", ORIGIN)
    relabelled = parse_signed_checkpoint(forged).note
    assert key.verifier(ORIGIN).is_valid(relabelled.text.encode(), relabelled.signatures[0].signature)
    with pytest.raises(VerificationError, match="no signature by a trusted key"):
        verify_signed_checkpoint(forged, [key.verifier(ORIGIN)])
    # Under its own name the same key still vouches for its own log.
    assert verify_signed_checkpoint(own, [key.verifier("other.example/log")])[1]


def test_verifier_key_with_wrong_id_is_refused():
    name, key_id, blob = V["keys"]["ed25519"]["vkey"].split("+", 2)
    with pytest.raises(FormatError, match=f"has id 00000000, but its public key gives {key_id}"):
        parse_verifier_key(f"{name}+00000000+{blob}")


@pytest.mark.parametrize(
    "text,message",
    [
        ("a+b", "not of the form"),
        ("a b+0000000+AQ==", "contains a space"),
        ("a+0000000g+AQ==", "not 8 lowercase hex digits"),
        ("a+00000000+AQ=", "not valid base64"),
        ("a+00000000+AQ==", "holds no public key"),
        ("a+00000000+BQAAAA==", "signature type 0x05 is not supported"),
        ("a+00000000+AQAA", "Ed25519 key of a is 2 bytes, expected 32"),
        ("a+00000000+AgAA", "not a valid SPKI DER"),
    ],
)
def test_malformed_verifier_keys_are_refused(text, message):
    with pytest.raises(FormatError, match=message):
        parse_verifier_key(text)


SIG = "— notary.example/vectors " + base64.b64encode(b"\x00\x00\x00\x01" + b"s" * 64).decode()
GOOD_BODY = "notary.example/vectors\n11\n" + base64.b64encode(b"\x00" * 32).decode() + "\n"


@pytest.mark.parametrize(
    "text,message",
    [
        (GOOD_BODY + "\n" + SIG, "does not end with a newline"),
        (GOOD_BODY + SIG + "\n", "no blank line"),
        (GOOD_BODY + "\n", "no signature lines"),
        (GOOD_BODY + "\n" + SIG.replace("— ", "- ") + "\n", "malformed signature line"),
        (GOOD_BODY + "\n" + SIG.replace(" notary", "  notary") + "\n", "malformed signature line"),
        (GOOD_BODY + "\n— a+b AAAAAAA=\n", "contains a space or '\\+'"),
        (GOOD_BODY + "\n— a AAAA\n", "too short"),
        (GOOD_BODY + "\n— a AAAAAAB=\n", "not canonical base64"),
        (GOOD_BODY + "\n— a AAAAAAA\n", "not valid base64"),
        (GOOD_BODY + "\n" + (SIG + "\n") * 65, "65 signatures, more than the limit of 64"),
        ("a\tb\n\n" + SIG + "\n", "control character U\\+0009"),
        ("x" * 70000 + "\n\n" + SIG + "\n", "more than the limit"),
    ],
)
def test_malformed_notes_are_refused(text, message):
    with pytest.raises(FormatError, match=message):
        parse_note(text.encode())


def test_note_with_invalid_utf8_is_refused():
    with pytest.raises(FormatError, match="not valid UTF-8"):
        parse_note(b"\xff\n\n" + SIG.encode() + b"\n")


ROOT_B64 = base64.b64encode(bytes(range(32))).decode()


@pytest.mark.parametrize(
    "text,message",
    [
        (f"log\n011\n{ROOT_B64}\n", "leading zero"),
        (f"log\n-1\n{ROOT_B64}\n", "not a decimal number"),
        (f"log\n+1\n{ROOT_B64}\n", "not a decimal number"),
        (f"log\n1 \n{ROOT_B64}\n", "not a decimal number"),
        (f"log\n99999999999999999999\n{ROOT_B64}\n", "not a decimal number"),
        (f"log\n9223372036854775808\n{ROOT_B64}\n", "larger than"),
        (f"log\n11\n{ROOT_B64}\nextension\n", "extension lines"),
        (f"log\n11\n\n{ROOT_B64}\n", "checkpoint line 3 is empty"),
        ("log\n11\n" + base64.b64encode(b"\x00" * 31).decode() + "\n", "31 bytes, expected 32"),
        ("log\n11\n" + ROOT_B64[:-2] + "9=\n", "not canonical base64"),
        (f"\n11\n{ROOT_B64}\n", "key name is empty"),
        (f"my log\n11\n{ROOT_B64}\n", "contains a space"),
        (f"log\n11\n{ROOT_B64}", "does not end with a newline"),
        ("log\n11\n", "expected origin, tree size and root hash"),
    ],
)
def test_malformed_checkpoints_are_refused(text, message):
    with pytest.raises(FormatError, match=message):
        parse_checkpoint_text(text)


# -- tlog-proof ---------------------------------------------------------------


@pytest.mark.parametrize("vec", V["tlog_proofs"], ids=lambda v: f"index-{v['index']}")
def test_tlog_proof_vectors_verify(vec):
    proof = parse_tlog_proof(vec["text"].encode())
    assert proof.format() == vec["text"]
    record = verify_tlog_proof(proof, [EC_VKEY], origin=ORIGIN)
    assert record.index == vec["index"]
    assert record.entry.encode().hex() == V["entries"][vec["index"]]["encoded_hex"]
    assert record.signed_by == (EC_VKEY,)
    # Independent: tlog-scales' RFC 9162 verifier over the same numbers.
    ts_tlog.InclusionProof(proof.index, record.tree_size, list(proof.path)).check(
        bytes.fromhex(V["entries"][vec["index"]]["leaf_hash_hex"]), record.root_hash
    )


def test_tlog_proof_with_another_entry_is_rejected():
    vec = V["tlog_proofs"][1]
    proof = parse_tlog_proof(vec["text"])
    forged = TlogProof(entry=Entry(b"\x11" * 32, "mallory").encode(), index=proof.index, path=proof.path, signed=proof.signed)
    with pytest.raises(VerificationError, match="inclusion proof for index 4"):
        verify_tlog_proof(forged.format(), [ED_VKEY])


def test_tlog_proof_with_index_beyond_the_tree_is_rejected():
    proof = parse_tlog_proof(V["tlog_proofs"][0]["text"])
    moved = TlogProof(entry=proof.entry, index=11, path=proof.path, signed=proof.signed)
    with pytest.raises(VerificationError, match="outside the checkpoint's tree of size 11"):
        verify_tlog_proof(moved, [ED_VKEY])


def test_tlog_proof_by_untrusted_key_is_rejected():
    with pytest.raises(VerificationError, match="no signature by a trusted key"):
        verify_tlog_proof(V["tlog_proofs"][0]["text"], [SoftwareSigner.ecdsa().verifier(ORIGIN)])


PROOF = V["tlog_proofs"][1]["text"]


@pytest.mark.parametrize(
    "text,message",
    [
        (PROOF.replace("c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2"), "does not start with"),
        (PROOF.replace("extra ", "extras "), "no 'extra' line"),
        (PROOF.replace("index 4", "index 04"), "leading zero"),
        (PROOF.replace("index 4", "height 4"), "should be 'index <n>'"),
        (PROOF.replace("index 4\n", "index 4\nnote hello\n"), "not valid base64"),
        (PROOF.replace("\n\n", "\n", 1), "proof path hash 4 is not valid base64"),
        (PROOF.split("\n\n")[0], "no blank line"),
        (PROOF.replace("index 4\n", "index 4\n" + ("A" * 43 + "=\n") * 65), "69 path hashes, more than the limit of 64"),
        (PROOF.replace("extra AaKz", "extra AqKz"), "entry version is 0x02"),
        (PROOF.replace("\n\n", "\n\n\n", 1), "checkpoint line 1 is empty"),
    ],
)
def test_malformed_tlog_proofs_are_refused(text, message):
    with pytest.raises(FormatError, match=message):
        parse_tlog_proof(text)


# -- fuzzing: only FormatError ever escapes a parser ---------------------------

PARSERS = {
    "entry": (parse_entry, [bytes.fromhex(v["encoded_hex"]) for v in V["entries"]]),
    "note": (parse_note, [CP_TEXT.encode()]),
    "checkpoint": (parse_signed_checkpoint, [CP_TEXT.encode()]),
    "tlog-proof": (parse_tlog_proof, [v["text"].encode() for v in V["tlog_proofs"]]),
    "verifier key": (lambda b: parse_verifier_key(b.decode("utf-8", "replace")),
                     [V["keys"]["ed25519"]["vkey"].encode(), V["keys"]["ecdsa_p256"]["vkey"].encode()]),
    "digest": (lambda b: parse_digest_hex(b.decode("utf-8", "replace")), [b"ab" * 32]),
}


@st.composite
def mutated(draw, seeds):
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "duplicate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8)) if draw(st.booleans()) else draw(
                st.sampled_from([b"\n", b" ", b"\xe2\x80\x94", b"=", b"+", b"0", b"\n\n"]))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[pos:]
        elif op == "duplicate":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 64))]
    return bytes(data)


@pytest.mark.parametrize("name", list(PARSERS))
@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_parsers_raise_only_format_error(name, data):
    parse, seeds = PARSERS[name]
    blob = data.draw(st.one_of(mutated(seeds), st.binary(max_size=300)), label="input")
    try:
        parse(blob)
    except FormatError:
        pass


@settings(max_examples=examples(200), deadline=None)
@given(data=st.data())
def test_verifying_fuzzed_proofs_raises_only_our_errors(data):
    blob = data.draw(mutated([v["text"].encode() for v in V["tlog_proofs"]]), label="proof")
    try:
        verify_tlog_proof(blob, [ED_VKEY, EC_VKEY])
    except (FormatError, VerificationError):
        pass


@settings(max_examples=examples(100), deadline=None)
@given(digest=st.binary(min_size=32, max_size=32), source=st.text(max_size=80))
def test_entry_round_trip_property(digest, source):
    try:
        entry = Entry(digest, source)
    except FormatError:
        return
    assert parse_entry(entry.encode()) == entry
    assert merkle.leaf_hash(entry.encode()) == hashlib.sha256(b"\x00" + entry.encode()).digest()
