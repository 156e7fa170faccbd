"""examples/fintech: the quarterly run's pack verifies offline, its manifest is notarized, no PAN or id is logged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from examples.fintech.demo import CARD, NATIONAL_ID
from notary.evidence import EXIT_MANIFEST

ROOT = Path(__file__).resolve().parents[2]


def notary(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "notary.cli", *map(str, args)], capture_output=True, text=True)


def test_quarterly_run_writes_a_pack_that_verifies_offline_and_is_itself_notarized(tmp_path):
    demo = subprocess.run([sys.executable, "-m", "examples.fintech.demo", "--workdir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    (pack,) = [p for p in (tmp_path / "evidence").iterdir() if p.is_dir()]  # named after the period: <from>_<to>

    # The pack verifies with nothing but its own files (the stack is stopped by now).
    checked = notary("verify-pack", pack)
    assert checked.returncode == 0 and checked.stdout.startswith("VERIFIED"), checked.stdout + checked.stderr

    # Its manifest is a record of the log: the proof beside the pack covers SHA256SUMS exactly.
    receipt = pack.with_name(pack.name + ".tlog-proof")
    verified = notary("verify", receipt, "--record", pack / "SHA256SUMS",
                      "--dev-json", tmp_path / "notary" / "payments.dev.json", "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert '"source": "evidence-runner"' in verified.stdout

    # Redaction: the audit logs hold the card's last four and an HMAC token, never the number or the id.
    for sink in ("card-payments", "customer-registry"):
        text = (tmp_path / f"{sink}.audit.jsonl").read_text()
        assert CARD not in text and CARD.replace(" ", "") not in text and NATIONAL_ID not in text
    assert '"card":"****1111"' in (tmp_path / "card-payments.audit.jsonl").read_text()
    assert "hmac-sha256:" in (tmp_path / "customer-registry.audit.jsonl").read_text()

    # A pack file changed after the fact no longer verifies.
    report = pack / "report.html"
    report.write_text(report.read_text().replace("VERIFIED", "VERIFIED (edited)"))
    assert notary("verify-pack", pack).returncode == EXIT_MANIFEST
