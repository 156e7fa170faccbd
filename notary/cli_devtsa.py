"""``notary dev-tsa``: run the local RFC 3161 TSA for development and tests.

The TSA itself lives in ``anchors.devtsa``; this module only parses the
command line and runs it until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "dev-tsa",
        help="run a local RFC 3161 time-stamping authority (development only)",
        description="Serve RFC 3161 over HTTP, signing with `openssl ts -reply`. On first start, "
        "create a root CA and a TSA certificate in DIR; clients must trust DIR/root.pem.",
    )
    parser.add_argument("--data-dir", required=True, type=Path, metavar="DIR",
                        help="directory holding the CA, the TSA key and certificate, and the serial file")
    parser.add_argument("--listen", required=True, type=_host_port, metavar="HOST:PORT",
                        help="address to listen on, e.g. 127.0.0.1:3161 (port 0 picks a free port)")
    parser.set_defaults(handler=run)


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def run(args: argparse.Namespace) -> int:
    # Imported here: aiohttp's server is for this command alone.
    from anchors.devtsa import serve_until_cancelled

    host, port = args.listen

    async def main() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await serve_until_cancelled(args.data_dir, host, port, announce=lambda line: print(line, flush=True))
        except asyncio.CancelledError:
            pass

    asyncio.run(main())
    return 0
