"""Evidence packs made and checked without a daemon (tests/packkit.py): the period's bounds; which seals a pack
holds when timestamps go backwards at the period's end."""

from __future__ import annotations

import datetime
import time

import pytest

from anchors.devtsa import DevTsa
from notary import evidence
from notary.cli import main
from notary.evidence import EXIT_CHAIN, Period, build_pack, seal_file, verify_pack
from tests.packkit import UTC, SealedLog, audit, keyring, pack_json

NOW = datetime.datetime.now(UTC)
HOUR = datetime.timedelta(hours=1)
AROUND_NOW = Period(NOW - HOUR, NOW + HOUR)  # packs are made at its end (make_pack)


def _lines(verdict) -> list[str]:
    return [p.line() for p in verdict.problems]


def _evidence_args(tmp_path, *period: str) -> list[str]:
    (tmp_path / "keyring.json").write_bytes(keyring().encode())
    return ["evidence", *period, "--out", str(tmp_path / "pack"), "--keyring", str(tmp_path / "keyring.json"),
            "--tsa-roots", str(DevTsa(tmp_path / "tsa").root_cert_path), "--bucket", "b", "--prefix", "wrong/",
            "--endpoint-url", "http://127.0.0.1:9", "--region", "us-east-1"]


# -- the period's bounds ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("start, end, message", [
    ("2026-01-01", "9999-12-31", "--to '9999-12-31' ends after the year 9999: periods lie in the years 1000 to 9999"),
    ("0999-01-01", "0999-03-31", "the period reaches back to the year 999: periods lie in the years 1000 to 9999"),
])
def test_periods_beyond_four_digit_years_are_usage_errors(tmp_path, capsys, start, end, message):
    assert main(_evidence_args(tmp_path, "--from", start, "--to", end)) == 2
    assert message in capsys.readouterr().err


def test_periods_at_the_year_bounds_are_written_and_read_back_exactly():
    period = Period.parse("1000-01-01", "9999-12-30")
    bounds = period.to_json()
    assert bounds == {"start": "1000-01-01T00:00:00Z", "end": "9999-12-31T00:00:00Z"}
    assert Period(evidence._parse_iso(bounds["start"], "start"), evidence._parse_iso(bounds["end"], "end")) == period


# -- timestamps going backwards at the period's end ----------------------------------------------------------


def test_seal_stamped_in_the_period_after_one_stamped_after_it_is_in_the_pack(tmp_path):
    """Seals 3 and 8 stamped at t0 (say by a TSA whose clock is a second behind), 5 at t0 + 1 s, the period ending
    at t0 + 1 s: 8 belongs to the period and is in the pack, and the disorder is flagged."""
    log = SealedLog(tmp_path, 8)
    checkpoints = {size: log.checkpoint(size) for size in (3, 5, 8)}
    tokens = {3: log.token(checkpoints[3]), 8: log.token(checkpoints[8])}
    t0 = datetime.datetime.now(UTC).replace(microsecond=0)
    time.sleep((t0 + datetime.timedelta(seconds=1.1) - datetime.datetime.now(UTC)).total_seconds())
    tokens[5] = log.token(checkpoints[5])
    bodies = [log.seal(size, previous, checkpoints[size], tokens[size]) for size, previous in ((3, 0), (5, 3), (8, 5))]
    period = Period(t0 - HOUR, t0 + datetime.timedelta(seconds=1))
    files, verdict = build_pack(audit(bodies, log.roots_pem), period, keyring().encode(), log.roots_pem,
                                created_at=datetime.datetime.now(UTC))
    assert {e["tree_size"]: e["role"] for e in pack_json(files)["seals"]} == {3: "period", 5: "after", 8: "period"}
    assert verdict.exit_code == EXIT_CHAIN
    assert [p.file for p in verify_pack(files).problems] == [seal_file(5)]
    assert _lines(verdict)[0].endswith("after the period, but is not the pack's last seal: timestamps go backwards")
