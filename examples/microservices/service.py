"""One service process: writes its audit events through a fail-closed NotaryHandler under its own token.

    python -m examples.microservices.service --name orders --url URL --token-file F --sink F --events N

The notary names the entries after the token's source, so every entry in the
shared log says which service submitted it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from notary.audit_events import AuditEvents
from notary.client import HttpClient, NotaryHandler

# What each service of the example does, and the details of one event (redacted by AuditEvents where sensitive).
ACTIONS = {
    "orders": ("order.create", lambda n: {"amount_cents": 1000 + n}),
    "payments": ("payment.capture", lambda n: {"card": "4111 1111 1111 1111", "amount_cents": 1000 + n}),
    "shipping": ("shipment.dispatch", lambda n: {"carrier": "dhl"}),
    "inventory": ("stock.reserve", lambda n: {"sku": f"SKU-{n:04d}"}),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.microservices.service")
    parser.add_argument("--name", required=True, choices=sorted(ACTIONS))
    parser.add_argument("--url", required=True)
    parser.add_argument("--token-file", type=Path, required=True)
    parser.add_argument("--sink", type=Path, required=True, help="the service's audit log")
    parser.add_argument("--events", type=int, default=10)
    args = parser.parse_args(argv)
    action, details = ACTIONS[args.name]
    transport = HttpClient(args.url, args.token_file.read_text().strip(), timeout=30)
    handler = NotaryHandler(args.sink, transport, mode="fail_closed")
    try:
        audit = handler.attach(f"{args.name}.audit")
        # Production reads the national-id HMAC key from $NOTARY_AUDIT_HMAC_KEY; the example makes one.
        events = AuditEvents({action}, hmac_key=os.urandom(32))
        for n in range(args.events):
            audit.info(events.event(actor=f"svc-{args.name}", action=action, target=f"{args.name}/{n}",
                                    outcome="success", **details(n)))
    finally:
        handler.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
