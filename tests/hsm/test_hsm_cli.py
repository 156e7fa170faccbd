"""``notary keys`` as an operator runs it (child processes, real token): the
rotation runbook end to end, and every error case printing one sentence
and exiting non-zero."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from hsm.errors import (
    DuplicateKeyError,
    KeyNotFoundError,
    KeyringError,
    MechanismError,
    ModuleLoadError,
    PinError,
    TokenNotFoundError,
)
from hsm.keyring import Keyring
from notary.note import parse_verifier_key
from tests.hsm.conftest import ORIGIN, TOKEN_LABEL

PKCS11_SPY = Path("/usr/lib/x86_64-linux-gnu/pkcs11-spy.so")  # Debian opensc-pkcs11


@pytest.fixture
def keys(notary, softhsm):
    """``notary keys COMMAND ARGS`` against the test token and a keyring in the working directory."""

    def run(command: str, *args: str, token: bool = True, **kwargs):
        options = ["--token", TOKEN_LABEL, "--pin", f"file:{softhsm.pin_file}"] if token else []
        return notary("keys", command, "--keyring", "keyring.json", *options, *args, **kwargs)

    return run


def one_sentence(result, error: type, *fragments: str) -> None:
    """The command failed with ``error``'s exit code and one line naming the problem."""
    assert result.returncode == error.exit_code != 0, result.stderr
    assert result.stderr.startswith("notary keys: ") and result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def test_rotation_runbook_end_to_end(keys, tmp_path: Path) -> None:
    first = keys("generate", "--label", "cli-old", "--name", ORIGIN)
    assert first.returncode == 0, first.stderr
    old_id = first.stdout.split()[3]
    assert keys("activate", old_id).returncode == 0

    second = keys("generate", "--label", "cli-new", "--algorithm", "ed25519")
    new_id = second.stdout.split()[3]
    activated = keys("activate", "cli-new")
    assert activated.returncode == 0, activated.stderr
    retired = keys("retire", old_id, token=False)
    assert retired.returncode == 0, retired.stderr

    listing = keys("list", token=False).stdout.splitlines()
    assert listing[0] == f"key name {ORIGIN}"
    rows = [line.split() for line in listing[1:]]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (old_id, "cli-old", "ecdsa-p256", "retired"),
        (new_id, "cli-new", "ed25519", "active"),
    ]

    exported = keys("export", "cli-new", token=False).stdout
    vkey_line, pem = exported.split("\n", 1)
    vkey = parse_verifier_key(vkey_line)
    assert (vkey.name, vkey.sig_type, vkey.key_id) == (ORIGIN, 0x01, parse_verifier_key(rows[1][4]).key_id)
    public = serialization.load_pem_public_key(pem.encode())
    assert public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == vkey.public_key

    ring = Keyring.load(tmp_path / "keyring.json")
    assert [(e.event, e.key_id.hex()) for e in ring.events] == [
        ("generate", old_id), ("activate", old_id), ("generate", new_id), ("activate", new_id), ("retire", old_id),
    ]


def test_init_dev_token_says_development_only(notary, tmp_path: Path, softhsm) -> None:
    conf = softhsm.write_conf("init-test.conf")
    result = notary("keys", "init-dev-token", "--conf", str(conf), "--label", "init-test", "--pin-file", "dev.pin", conf=conf)
    assert result.returncode == 0, result.stderr
    assert "for development and tests only (not for production)" in result.stdout
    assert (tmp_path / "dev.pin").stat().st_mode & 0o777 == 0o600
    again = notary("keys", "init-dev-token", "--conf", str(conf), "--label", "init-test", "--pin-file", "dev.pin", conf=conf)
    assert again.returncode != 0 and "already exists" in again.stderr


def test_wrong_pin_is_tried_once_and_reported(keys, tmp_path: Path) -> None:
    assert PKCS11_SPY.is_file(), "install the Debian package opensc-pkcs11 (make deps) for pkcs11-spy"
    (tmp_path / "wrong.pin").write_text("not-the-pin\n")
    (tmp_path / "wrong.pin").chmod(0o600)
    spy_log = tmp_path / "spy.log"
    result = keys(
        "generate", "--label", "x", "--name", ORIGIN, "--module", str(PKCS11_SPY), "--pin", "file:wrong.pin",
        env={"PKCS11SPY": "/usr/lib/softhsm/libsofthsm2.so", "PKCS11SPY_OUTPUT": str(spy_log)},
    )
    one_sentence(result, PinError, f"the PIN for token '{TOKEN_LABEL}' is wrong; it was not retried")
    assert "not-the-pin" not in result.stderr + result.stdout
    # pkcs11-spy logs every PKCS#11 call the process made: one login, no retry.
    calls = [line.split(": ", 1)[1] for line in spy_log.read_text().splitlines() if ": C_" in line]
    assert calls.count("C_Login") == 1
    assert not (tmp_path / "keyring.json").exists()


def test_unknown_token(keys) -> None:
    result = keys("generate", "--label", "x", "--name", ORIGIN, "--token", "no-such-token")
    one_sentence(result, TokenNotFoundError, "no token labelled 'no-such-token'", "tokens present: ", f"'{TOKEN_LABEL}'")


def test_module_path_missing(keys) -> None:
    result = keys("generate", "--label", "x", "--name", ORIGIN, "--module", "/nonexistent/libpkcs11.so")
    one_sentence(result, ModuleLoadError, "PKCS#11 module /nonexistent/libpkcs11.so does not exist")


def test_unknown_key_id_in_keyring(keys) -> None:
    assert keys("generate", "--label", "known", "--name", ORIGIN).returncode == 0
    result = keys("activate", "00112233445566778899aabbccddeeff")
    one_sentence(result, KeyNotFoundError, "no key with id or label '00112233445566778899aabbccddeeff'")


def test_unknown_key_id_in_token(keys, tmp_path: Path) -> None:
    # A keyring recording a key pair the token does not hold (another token's key).
    public_key = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
    key_id = hashlib.sha256(public_key).digest()[:16]
    ring = Keyring(ORIGIN).generate(key_id, "elsewhere", "ed25519", public_key)
    (tmp_path / "keyring.json").write_bytes(ring.encode())
    result = keys("activate", key_id.hex())
    one_sentence(result, KeyNotFoundError, f"no private key with id {key_id.hex()} in token '{TOKEN_LABEL}'")


def test_two_keys_with_one_label(keys) -> None:
    for _ in range(2):
        assert keys("generate", "--label", "twin", "--name", ORIGIN).returncode == 0
    result = keys("activate", "twin")
    one_sentence(result, DuplicateKeyError, "2 keys carry the label 'twin'", "name the key by its id")


def test_mechanism_unsupported(keys, softhsm) -> None:
    # An ECDSA-only token, as AWS CloudHSM is: SoftHSM2 offering two mechanisms.
    conf = softhsm.write_conf("ecdsa-only.conf", "slots.mechanisms = CKM_ECDSA,CKM_EC_KEY_PAIR_GEN\n")
    result = keys("generate", "--label", "ed", "--name", ORIGIN, "--algorithm", "ed25519", conf=conf)
    one_sentence(
        result, MechanismError,
        f"token '{TOKEN_LABEL}' does not support ed25519 (no CKM_EC_EDWARDS_KEY_PAIR_GEN and CKM_EDDSA)",
        "use another algorithm (ecdsa-p256)",
    )
    assert keys("generate", "--label", "ec", "--name", ORIGIN, conf=conf).returncode == 0
    # An Ed25519 key made elsewhere cannot be activated where CKM_EDDSA is missing.
    assert keys("generate", "--label", "ed", "--algorithm", "ed25519").returncode == 0
    result = keys("activate", "ed", conf=conf)
    one_sentence(result, MechanismError, f"token '{TOKEN_LABEL}' does not support ed25519 (no CKM_EDDSA)")


def test_retiring_the_only_active_key_is_refused(keys, tmp_path: Path) -> None:
    generated = keys("generate", "--label", "only", "--name", ORIGIN)
    key_id = generated.stdout.split()[3]
    assert keys("activate", key_id).returncode == 0
    result = keys("retire", key_id, token=False)
    one_sentence(result, KeyringError, f"key {key_id} is the only active key")
    assert Keyring.load(tmp_path / "keyring.json").key(key_id).status == "active"


def test_a_keyring_that_cannot_be_written_is_one_sentence(keys, tmp_path: Path) -> None:
    """Before, an OSError while locking or writing the keyring (a directory the operator may not write, a
    full disk) ended the command in a traceback."""
    generated = keys("generate", "--label", "unwritable", "--name", ORIGIN)
    assert generated.returncode == 0, generated.stderr
    (tmp_path / "keyring.json.lock").unlink()
    (tmp_path / "keyring.json.lock").mkdir()  # the lock cannot be opened, as in a directory the user may not write
    result = keys("retire", "unwritable", token=False)
    # The file is named as given; what failed, by the full path written (a symlinked keyring is written where it points).
    one_sentence(result, KeyringError,
                 f"keyring keyring.json cannot be written: Is a directory ({tmp_path.resolve() / 'keyring.json.lock'})")
    assert Keyring.load(tmp_path / "keyring.json").key("unwritable").status == "pending"


def test_a_pin_given_on_the_command_line_is_never_echoed(keys) -> None:
    for pin in ("4711-0815", "crypto-user:pa55word"):
        result = keys("generate", "--label", "x", "--name", ORIGIN, "--pin", pin)
        one_sentence(result, PinError, "never the PIN itself")
        assert not any(part in result.stderr + result.stdout for part in pin.split(":")), result.stderr
