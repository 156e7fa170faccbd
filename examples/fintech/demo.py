"""One command: a payments company's audit trail, then its quarterly evidence run, end to end.

    .venv/bin/python -m examples.fintech.demo [--workdir DIR]

It starts a dev stack and a notary on 127.0.0.1 (stopped at the end) with
three sources: ``card-payments``, ``customer-registry`` and
``evidence-runner``. Then:

1. the card payments service records captures and refunds, the customer
   registry records a KYC check and a GDPR erasure request, each through a
   fail-closed NotaryHandler; the events are redacted at construction: the
   card number leaves only its last four digits (PCI DSS v4.0.1 3.5.1: PAN
   unreadable wherever stored, truncation being one way), the
   national id only a keyed HMAC token (GDPR Art. 32(1)(a) pseudonymisation);
2. the quarterly run (``examples.fintech.quarterly``, what the systemd timer
   starts) makes the evidence pack of the period (today, UTC, up to a second
   between the producers' events: the dev seals are all from today, a pack
   is made only once its period has ended, and a seal after the period,
   here a later payment's, must close it), re-verifies it offline, and
   notarizes its manifest.

Exit status 0 when the run succeeded and no card number or national id
reached an audit log; the pack is in ``DIR/evidence/``.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from pathlib import Path

from examples.devnotary import ExampleStack, example_parser, make_workdir, wait_anchored
from examples.fintech import quarterly
from notary.audit_events import AuditEvents
from notary.client import HttpClient, NotaryHandler
from notary.devstack import BUCKET

CARD = "4111 1111 1111 1111"  # a test card number: it must never reach an audit log
NATIONAL_ID = "AB123456C"  # a UK National Insurance number of the example's customer


def produce(url: str, tokens: dict[str, str], workdir: Path) -> tuple[dict[str, Path], str]:
    """The two producers' audit trails, sealed, then the period's end (``_next_second``), then one more payment,
    sealed after it: it closes the period. Return the sinks and the period's end."""
    events = AuditEvents({"payment.capture", "payment.refund", "customer.kyc_check", "customer.erasure_request"},
                         hmac_key=os.urandom(32))  # production: $NOTARY_AUDIT_HMAC_KEY
    sinks = {name: workdir / f"{name}.audit.jsonl" for name in ("card-payments", "customer-registry")}
    for name, sink in sinks.items():
        sink.unlink(missing_ok=True)
        Path(f"{sink}.notary").unlink(missing_ok=True)
    payments = NotaryHandler(sinks["card-payments"], HttpClient(url, tokens["card-payments"], timeout=30))
    registry = NotaryHandler(sinks["customer-registry"], HttpClient(url, tokens["customer-registry"], timeout=30))
    try:
        pay, reg = payments.attach("payments.audit"), registry.attach("registry.audit")
        for n in range(3):
            pay.info(events.event(actor="svc-checkout", on_behalf_of=f"customer-{n}", action="payment.capture",
                                  target=f"payment/{1000 + n}", outcome="success", card=CARD, amount_cents=4200 + n))
        pay.info(events.event(actor="agent-carol", on_behalf_of="customer-1", action="payment.refund",
                              target="payment/1001", outcome="success", card=CARD, reason="duplicate charge"))
        reg.info(events.event(actor="agent-dave", action="customer.kyc_check", target="customer/7",
                              outcome="success", national_id=NATIONAL_ID))
        reg.info(events.event(actor="customer-7", action="customer.erasure_request", target="customer/7",
                              outcome="success", national_id=NATIONAL_ID, basis="GDPR Art. 17"))
        handlers = ((payments, sinks["card-payments"]), (registry, sinks["customer-registry"]))

        def last_index() -> int:
            return max(h.index_of(len(s.read_bytes().splitlines())) for h, s in handlers)
        wait_anchored(HttpClient(url), last_index())
        end = _next_second()
        pay.info(events.event(actor="svc-checkout", on_behalf_of="customer-3", action="payment.capture",
                              target="payment/1003", outcome="success", card=CARD, amount_cents=4203))
        wait_anchored(HttpClient(url), last_index())
    finally:
        payments.close()
        registry.close()
    return sinks, end


def leaked(sinks: dict[str, Path]) -> list[str]:
    """Audit logs holding a card number or the national id, in any spacing."""
    needles = [CARD.replace(" ", "").encode(), CARD.encode(), NATIONAL_ID.encode()]
    return [str(s) for s in sinks.values() if any(n in s.read_bytes() for n in needles)]


def _next_second() -> str:
    """The next whole UTC second (``--to``, excluded), once it has passed: the seals so far, timestamped in whole
    seconds by the dev TSA, are all before it."""
    now = datetime.datetime.now(datetime.UTC)
    boundary = now.replace(microsecond=0) + datetime.timedelta(seconds=1)
    time.sleep((boundary - now).total_seconds() + 0.1)
    return boundary.strftime("%Y-%m-%dT%H:%M:%SZ")


def main(argv: list[str] | None = None) -> int:
    parser = example_parser("examples.fintech.demo", __doc__)
    args = parser.parse_args(argv)
    workdir = make_workdir(args.workdir, "fintech-")
    print(f"starting a dev stack and a notary under {workdir / 'notary'} ...")
    with ExampleStack(workdir / "notary") as stack:
        notary = stack.notary("payments", ["card-payments", "customer-registry", "evidence-runner"])
        print("1. card payments and the customer registry write their audit trails (fail-closed)")
        sinks, end = produce(notary.url, notary.tokens, workdir)
        found = leaked(sinks)
        print(f"   no card number or national id in the audit logs: {'FAILED, in ' + ', '.join(found) if found else 'ok'}")
        today = datetime.datetime.now(datetime.UTC).date().isoformat()
        print(f"\n2. the quarterly evidence run, for the period {today} up to {end} (the dev seals are all from "
              "today, a period must have ended, and a seal after it, the last payment's, closes it)")
        s3 = stack.dev.s3
        os.environ.update(AWS_ACCESS_KEY_ID=s3.access_key, AWS_SECRET_ACCESS_KEY=s3.secret_key)  # read-only in production
        code = quarterly.main([
            "--from", today, "--to", end, "--out", str(workdir / "evidence" / "{from}_{to}"),
            "--notary-url", notary.url, "--token-file", str(notary.token_files["evidence-runner"]),
            "--keyring", str(stack.dev.keyring_path), "--tsa-roots", str(stack.dev.data_dir / "tsa" / "root.pem"),
            "--bucket", BUCKET, "--prefix", "payments/", "--endpoint-url", s3.endpoint_url, "--region", "us-east-1",
            "--min-retention-days", "1"])
    ok = code == 0 and not found
    print(f"\n{'OK' if ok else 'UNEXPECTED'}: quarterly run exit status {code}; files in {workdir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
