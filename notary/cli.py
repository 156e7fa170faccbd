"""The ``notary`` command line.

Each command group lives in its own module with a ``register(subparsers)``
function that adds its sub-commands; a command's handler returns the process
exit status. ``main`` turns every ``NotaryError`` (and the adapters' own error
types) into one sentence on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Command modules, in the order their commands appear in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "notary.cli_daemon",
    "notary.cli_verify",
    "notary.cli_keys",
    "notary.cli_devtsa",
    "notary.cli_forensics",
    "notary.cli_evidence",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notary",
        description="merkle-notary: an append-only Merkle log sealed by HSM "
        "signatures, RFC 3161 timestamps and S3 Object Lock.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - every error class below ends here
        if _is_reportable(exc):
            print(f"notary {args.command}: {exc}", file=sys.stderr)
            return getattr(exc, "exit_code", 1)
        raise


def _is_reportable(exc: BaseException) -> bool:
    """Errors we raise on purpose carry a sentence for a person; others are bugs."""
    from anchors.errors import AnchorError
    from hsm.errors import HSMError
    from notary.errors import NotaryError

    return isinstance(exc, (NotaryError, HSMError, AnchorError))


if __name__ == "__main__":
    sys.exit(main())
