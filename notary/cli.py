"""The ``notary`` command line.

Each command group lives in its own module with a ``register(subparsers)``
function that adds its sub-commands; a command's handler returns the process
exit status. ``main`` turns every ``NotaryError`` (and the adapters' own error
types) into one sentence on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import select
import sys

# Command modules, in the order their commands appear in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "notary.cli_daemon",
    "notary.cli_verify",
    "notary.cli_keys",
    "notary.cli_devtsa",
    "notary.cli_forensics",
    "notary.cli_evidence",
    "notary.cli_hierarchy",
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
        status = int(args.handler(args) or 0)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
        return status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`notary status | head -1`): end
        # quietly, as a command killed by SIGPIPE would. A broken pipe
        # anywhere else (a socket to the daemon) is a bug and stays loud.
        if not _stdout_reader_gone():
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 128 + 13  # what a shell reports for a command killed by SIGPIPE
    except Exception as exc:  # noqa: BLE001 - every error class below ends here
        if _is_reportable(exc):
            print(f"notary {args.command}: {exc}", file=sys.stderr)
            return getattr(exc, "exit_code", 1)
        raise


def _stdout_reader_gone() -> bool:
    """True when standard output is a pipe (or socket) whose reading end is closed."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no real descriptor behind stdout
        return False


def _is_reportable(exc: BaseException) -> bool:
    """Errors we raise on purpose carry a sentence for a person; others are bugs."""
    from anchors.errors import AnchorError
    from hsm.errors import HSMError
    from notary.errors import NotaryError

    return isinstance(exc, (NotaryError, HSMError, AnchorError))


if __name__ == "__main__":
    sys.exit(main())
