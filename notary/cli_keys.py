"""``notary keys``: signing keys in the HSM and their lifecycle.

Rotation (docs/OPERATIONS.md): ``generate`` a key (pending), ``activate`` it
beside the old one (each checkpoint then carries both signatures),
``export`` its verifier key to auditors, ``retire`` the old key. Each change
is a key event in the keyring, which the daemon appends to the log.

The PIN comes from ``--pin file:<path> | env:<NAME> | credential:<name>``,
never from the command line itself.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from hsm import keyring as keyring_file
from hsm.algorithms import ALGORITHMS, DEFAULT
from hsm.devtoken import init_dev_token
from hsm.errors import KeyringError
from hsm.keyring import Keyring, KeyRecord, check_label
from hsm.pin import PinSource
from hsm.signer import signer_for
from hsm.token import SOFTHSM2_MODULE, Token, TokenConfig
from notary.note import VerifierKey, check_key_name

DEFAULT_KEYRING = Path("var/keyring.json")
DEFAULT_TOKEN = "notary-dev"
DEFAULT_PIN_FILE = Path("var/softhsm/user.pin")
MODULE_ENV = "NOTARY_PKCS11_MODULE"


def register(subparsers: argparse._SubParsersAction) -> None:
    keys = subparsers.add_parser("keys", help="signing keys in the HSM: generate, list, export, rotate")
    commands = keys.add_subparsers(dest="keys_command", metavar="KEYS_COMMAND", required=True)

    p = commands.add_parser(
        "init-dev-token",
        help="create a SoftHSM2 token for development and tests (not for production)",
        description="Create a SoftHSM2 token for development and tests only: SoftHSM2 keeps keys in files, "
        "so it protects nothing. Production keys live in a real HSM.",
    )
    p.add_argument("--conf", type=Path, default=Path("softhsm.conf"), help="softhsm2.conf to use (default: %(default)s)")
    p.add_argument("--label", default=DEFAULT_TOKEN, help="token label (default: %(default)s)")
    p.add_argument(
        "--pin-file", type=Path, default=DEFAULT_PIN_FILE,
        help="user PIN file, created with a random PIN if absent (default: %(default)s)",
    )
    p.set_defaults(handler=_init_dev_token)

    p = commands.add_parser("generate", help="generate a key pair in the token; it starts pending")
    _token_options(p)
    _keyring_option(p)
    p.add_argument("--label", required=True, help="a readable label (letters, digits, . _ -)")
    p.add_argument("--algorithm", choices=sorted(ALGORITHMS), default=DEFAULT.name, help="default: %(default)s")
    p.add_argument("--name", help="the log's origin, the key name in notes; required to create the keyring")
    p.set_defaults(handler=_generate)

    p = commands.add_parser("list", help="keys in the keyring: id, label, algorithm, status, verifier key")
    _keyring_option(p)
    p.set_defaults(handler=_list)

    p = commands.add_parser("export", help="a key's verifier-key string and SPKI PEM, for auditors")
    _keyring_option(p)
    p.add_argument("key", metavar="KEY", help="key id (hex) or label")
    p.set_defaults(handler=_export)

    p = commands.add_parser("activate", help="make a pending key sign every new checkpoint")
    _token_options(p)
    _keyring_option(p)
    p.add_argument("key", metavar="KEY", help="key id (hex) or label")
    p.set_defaults(handler=_activate)

    p = commands.add_parser("retire", help="stop a key signing; it stays so that old checkpoints verify")
    _keyring_option(p)
    p.add_argument("key", metavar="KEY", help="key id (hex) or label")
    p.set_defaults(handler=_retire)


def _token_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--module", type=Path, default=Path(os.environ.get(MODULE_ENV, SOFTHSM2_MODULE)),
        help=f"PKCS#11 module (default: ${MODULE_ENV} or %(default)s)",
    )
    p.add_argument("--token", default=DEFAULT_TOKEN, help="token label (default: %(default)s)")
    p.add_argument(
        "--pin", default=f"file:{DEFAULT_PIN_FILE}", metavar="SOURCE",
        help="where to read the user PIN: file:<path>, env:<VARIABLE NAME> or credential:<systemd credential name>; "
        "never the PIN itself (default: %(default)s)",
    )


def _keyring_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keyring", type=Path, default=DEFAULT_KEYRING, help="keyring file (default: %(default)s)")


def _open_token(args: argparse.Namespace, *, rw: bool = False) -> Token:
    return Token.open(TokenConfig(args.module, args.token, PinSource.parse(args.pin)), rw=rw)


def _verifier_key(keyring: Keyring, key: KeyRecord) -> VerifierKey:
    return VerifierKey(name=keyring.name, sig_type=key.algorithm.sig_type, public_key=key.public_key)


def _init_dev_token(args: argparse.Namespace) -> int:
    init_dev_token(args.conf, args.label, args.pin_file)
    print(
        f"created SoftHSM2 token {args.label!r} for development and tests only (not for production); "
        f"user PIN in {args.pin_file}.\nUse it with: export SOFTHSM2_CONF={args.conf.resolve()}"
    )
    return 0


def _generate(args: argparse.Namespace) -> int:
    check_label(args.label)
    if args.name is not None:
        check_key_name(args.name)

    def change(keyring: Keyring | None) -> Keyring:
        if keyring is None:
            if args.name is None:
                raise KeyringError(f"keyring {args.keyring} does not exist; give --name <log origin> to create it")
            keyring = Keyring(args.name)
        elif args.name is not None and args.name != keyring.name:
            raise KeyringError(f"keyring {args.keyring} is for {keyring.name!r}, not {args.name!r}; drop --name or use another keyring")
        with _open_token(args, rw=True) as token:
            key = token.generate(ALGORITHMS[args.algorithm], args.label)
        return keyring.generate(key.key_id, key.label, key.algorithm.name, key.public_key)

    keyring = keyring_file.update(args.keyring, change)
    key = keyring.keys()[-1]
    print(f"generated {key.algorithm.name} key {key.key_id.hex()} labelled {key.label!r}: pending")
    print(_verifier_key(keyring, key))
    return 0


def _list(args: argparse.Namespace) -> int:
    keyring = Keyring.load(args.keyring)
    print(f"key name {keyring.name}")
    for key in keyring.keys():
        print(f"{key.key_id.hex()}  {key.label}  {key.algorithm.name}  {key.status}  {_verifier_key(keyring, key)}")
    return 0


def _export(args: argparse.Namespace) -> int:
    keyring = Keyring.load(args.keyring)
    key = keyring.key(args.key)
    print(_verifier_key(keyring, key))
    print(key.algorithm.spki_pem(key.public_key), end="")
    return 0


def _activate(args: argparse.Namespace) -> int:
    def change(keyring: Keyring | None) -> Keyring:
        keyring = _existing(keyring, args.keyring)
        key = keyring.key(args.key)
        activated = keyring.activate(key.key_id.hex())  # refuses a key that is not pending, before any login
        with _open_token(args) as token:
            signer_for(token, key)  # signs a probe and verifies it with the keyring's public key
        return activated

    keyring = keyring_file.update(args.keyring, change)
    key = keyring.key(args.key)
    print(f"key {key.key_id.hex()} is active: every new checkpoint carries its signature.")
    print(f"Give auditors its verifier key: {_verifier_key(keyring, key)}")
    return 0


def _retire(args: argparse.Namespace) -> int:
    keyring = keyring_file.update(args.keyring, lambda kr: _existing(kr, args.keyring).retire(args.key))
    key = keyring.key(args.key)
    print(f"key {key.key_id.hex()} is retired: it signs no new checkpoint; old checkpoints still verify with it.")
    return 0


def _existing(keyring: Keyring | None, path: Path) -> Keyring:
    if keyring is None:
        raise KeyringError(f"keyring {path} does not exist; create it with notary keys generate --name <log origin>")
    return keyring
