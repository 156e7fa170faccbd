"""``notary evidence`` and ``notary verify-pack`` on a real daemon's bucket (SoftHSM2, dev TSA, SeaweedFS):
a period's pack holds its seals and the seals around it, verifies offline, fails naming the file when a seal in
it is edited or deleted, is not written before a seal after the period closes it, and its HTML report renders in
a real headless Chromium."""

from __future__ import annotations

import datetime
import hashlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from notary.cli_evidence import EXIT_NOT_CLOSED
from notary.evidence import EXIT_CHAIN, EXIT_MANIFEST, EXIT_SEAL, MANIFEST, Period, manifest, read_pack, seal_file
from tests.daemon.sealtamper import run_cli, s3_args, s3_env, seal_docs, trust_args
from tests.packkit import next_second


@pytest.fixture(scope="module")
def period_seals(stack):
    """A daemon's seals in three phases: before the period, in it (three batches), after it.
    Returns the period and the tree sizes of each phase's seals."""
    from tests.daemon.conftest import Daemon

    d = Daemon(stack, "evid", max_age=0.2).start()
    sizes = {}
    try:
        def batches(name: str, count: int) -> None:
            for batch in range(count):
                last = d.client().submit([hashlib.sha256(f"{name}-{batch}-{i}".encode()).digest() for i in range(3)],
                                         wait_sealed=True)[-1]
            d.wait_anchored(last["index"] + 1)
            sizes[name] = last["index"] + 1

        batches("before", 1)
        start = next_second()
        batches("period", 3)
        end = next_second()
        batches("after", 1)
    finally:
        assert d.stop() == 0
    docs = seal_docs(stack, "evid/")
    inside = [s for s in docs if sizes["before"] < s <= sizes["period"]]
    assert len(inside) >= 3
    return Period(start, end), docs, inside


@pytest.fixture(scope="module")
def pack(stack, period_seals, tmp_path_factory):
    """The pack of the period, made with the CLI as the timer does (exit 0)."""
    period, _, _ = period_seals
    out = tmp_path_factory.mktemp("evidence") / "pack-{from}"
    with pytest.MonkeyPatch.context() as mp:
        s3_env(mp, stack)
        capsys = _Capture()
        code, stdout = capsys.run("evidence", "--from", _iso(period.start), "--to", _iso(period.end),
                                  "--out", out, *trust_args(stack), *s3_args(stack, "evid/"))
    assert code == 0, stdout
    directory = Path(str(out).replace("{from}", f"{period.start:%Y-%m-%d}"))
    assert "VERIFIED" in stdout and str(directory) in stdout
    return directory


class _Capture:
    """run_cli for module-scoped fixtures, which cannot use the function-scoped capsys."""

    def run(self, *argv):
        import contextlib
        import io

        from notary.cli import main

        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = main([str(a) for a in argv])
        return code, out.getvalue()


def _iso(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_pack_holds_the_periods_seals_and_the_seals_around_it(pack, period_seals):
    period, docs, inside = period_seals
    info = json.loads((pack / "pack.json").read_text())
    roles = {e["tree_size"]: e["role"] for e in info["seals"]}
    sizes = sorted(docs)
    before = max(s for s in sizes if s < inside[0])
    after = min(s for s in sizes if s > inside[-1])
    assert roles == {before: "before", after: "after"} | {s: "period" for s in inside}
    # Each seal file is the object's bytes as stored in S3, token and consistency proof included.
    for size in roles:
        stored = json.loads((pack / seal_file(size)).read_bytes())
        assert stored == docs[size] and stored["timestamp_token"] and "consistency_proof" in stored
    assert (pack / "keys/keyring.json").read_bytes().startswith(b"{")
    history = (pack / "keys/key-history.txt").read_text()
    assert "activate" in history and "dev-key-1" in history
    audit = json.loads((pack / "audit/audit.json").read_text())
    assert audit["ok"] and audit["seal_count"] == len(docs)  # the whole prefix was audited
    transcript = (pack / "transcript.txt").read_text()
    assert transcript.startswith(f"VERIFIED: evidence pack for log dev.notary.localhost/log, period {period.describe()}: "
                                 f"{len(inside)} seal(s) in the period")
    for size in roles:
        assert f"{seal_file(size)} (tree size {size}" in transcript
    # Every file is in SHA256SUMS, and the standard tool agrees with it.
    listed = {line.split("  ", 1)[1] for line in (pack / MANIFEST).read_text().splitlines()}
    assert listed == set(read_pack(pack)) - {MANIFEST}
    assert subprocess.run(["sha256sum", "--check", "--quiet", MANIFEST], cwd=pack).returncode == 0


def test_untouched_pack_verifies_offline(pack, capsys):
    code, out, err = run_cli(capsys, "verify-pack", pack)
    assert code == 0, out + err
    assert out.startswith("VERIFIED: evidence pack for log dev.notary.localhost/log") and not err
    code, out, _ = run_cli(capsys, "verify-pack", pack, "--transcript")
    assert code == 0 and "files      ok" in out and "link       ok" in out


def _copy(pack: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "pack"
    shutil.copytree(pack, copy)
    return copy


def _refresh_manifest(directory: Path) -> None:
    """What a forger who also rewrites SHA256SUMS does."""
    files = read_pack(directory)
    (directory / MANIFEST).write_bytes(manifest(files))


def test_edited_seal_fails_naming_the_file(pack, period_seals, tmp_path, capsys):
    _, _, inside = period_seals
    copy = _copy(pack, tmp_path)
    name = seal_file(inside[1])
    doc = json.loads((copy / name).read_bytes())
    doc["sealed_at"] = "2020-01-01T00:00:00.000000Z"  # the notary's clock rewritten, a field the token does not cover
    (copy / name).write_bytes(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())
    code, out, _ = run_cli(capsys, "verify-pack", copy)
    assert code == EXIT_MANIFEST and out.startswith("NOT VERIFIED")
    assert f"  {name}: has SHA-256 " in out and "SHA256SUMS lists" in out
    # With SHA256SUMS rewritten to match, the seal is still not the one the audit read from S3.
    _refresh_manifest(copy)
    code, out, _ = run_cli(capsys, "verify-pack", copy)
    assert code == EXIT_SEAL and f"  {name}: has SHA-256 " in out and "the original version the audit read" in out

    # A changed checkpoint breaks its signature and its timestamp, whatever else is rewritten.
    doc = json.loads((pack / name).read_bytes())
    other = ("B" if doc["root_hash"][0] == "A" else "A") + doc["root_hash"][1:]
    doc["checkpoint"], doc["root_hash"] = doc["checkpoint"].replace(doc["root_hash"], other), other
    (copy / name).write_bytes(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())
    _refresh_manifest(copy)
    code, out, _ = run_cli(capsys, "verify-pack", copy)
    assert code == EXIT_SEAL and f"  {name}: does not verify: the timestamp token" in out


def test_deleted_seal_fails_naming_the_file(pack, period_seals, tmp_path, capsys):
    _, _, inside = period_seals
    copy = _copy(pack, tmp_path)
    gone, next_one = seal_file(inside[1]), seal_file(inside[2])
    (copy / gone).unlink()
    code, out, _ = run_cli(capsys, "verify-pack", copy)
    assert code == EXIT_MANIFEST and f"  {gone}: is listed in SHA256SUMS but missing from the pack" in out
    # Even with SHA256SUMS rewritten, the next seal's consistency proof shows the hole in the period.
    _refresh_manifest(copy)
    code, out, _ = run_cli(capsys, "verify-pack", copy)
    assert code == EXIT_CHAIN
    assert f"  {next_one}: follows tree size {inside[1]}, but the pack has no seal for it" in out
    assert f"  {gone}: is listed in pack.json but missing from the pack" in out


def test_pack_cut_short_at_either_end_fails(pack, period_seals, tmp_path, capsys):
    """Dropping the seal before or after the period, with pack.json and SHA256SUMS rewritten to match."""
    _, _, inside = period_seals
    info = json.loads((pack / "pack.json").read_text())
    for role, problem in (("before", f"  {seal_file(inside[0])}: is the pack's first seal and follows tree size"),
                          ("after", "  pack.json: says the bucket held seals up to tree size")):
        copy = _copy(pack, tmp_path / role)
        dropped = next(e for e in info["seals"] if e["role"] == role)
        (copy / dropped["file"]).unlink()
        (copy / "pack.json").write_text(json.dumps(info | {"seals": [e for e in info["seals"] if e is not dropped]}))
        _refresh_manifest(copy)
        code, out, _ = run_cli(capsys, "verify-pack", copy)
        assert code == EXIT_CHAIN and problem in out, out


def test_no_pack_before_a_seal_after_the_period_is_in_the_bucket(stack, period_seals, tmp_path, capsys, monkeypatch):
    """A period that ends after the daemon's last seal: no seal closes it yet, so a seal of it still on its way to
    S3 could be missing from a pack; none is written (exit 11)."""
    period, docs, _ = period_seals
    end = next_second()
    s3_env(monkeypatch, stack)
    out = tmp_path / "pack"
    code, _, err = run_cli(capsys, "evidence", "--from", _iso(period.start), "--to", _iso(end), "--out", out,
                           *trust_args(stack), *s3_args(stack, "evid/"))
    assert code == EXIT_NOT_CLOSED, err
    assert f"NOT CLOSED: no seal timestamped after the period (at or after {_iso(end)}) is in s3://" in err
    assert f"(it would end with the seal of tree size {max(docs)}, timestamped " in err
    assert "No evidence pack written" in err and not out.exists()


def test_pack_is_never_written_over(stack, pack, capsys, monkeypatch):
    s3_env(monkeypatch, stack)
    code, _, err = run_cli(capsys, "evidence", "--from", "2026-01-01", "--to", "2026-03-31", "--out", pack,
                           *trust_args(stack), *s3_args(stack, "evid/"))
    assert code == 2 and "never written over" in err


def test_previous_quarter_is_the_calendar_quarter_before_today():
    utc = datetime.UTC
    assert Period.previous_quarter(datetime.date(2027, 1, 1)) == Period(
        datetime.datetime(2026, 10, 1, tzinfo=utc), datetime.datetime(2027, 1, 1, tzinfo=utc))
    assert Period.previous_quarter(datetime.date(2026, 9, 30)) == Period(
        datetime.datetime(2026, 4, 1, tzinfo=utc), datetime.datetime(2026, 7, 1, tzinfo=utc))
    assert Period.parse("2026-07-01", "2026-09-30").describe() == "2026-07-01 to 2026-09-30 (UTC, whole days)"


def _chromium(*args: str) -> subprocess.CompletedProcess:
    """Headless Chromium as root, with no background connections (the machine has no network)."""
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", *args],
            capture_output=True, timeout=120)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium is not installed (make deps)")
def test_html_report_renders_in_headless_chromium(pack, period_seals, tmp_path):
    period, _, inside = period_seals
    report = (pack / "report.html").resolve()
    html = report.read_text()
    # Self-contained: no script, and nothing loaded from anywhere else.
    assert "<script" not in html and "src=" not in html and "http://" not in html and "https://" not in html
    shot = tmp_path / "report.png"
    result = _chromium(f"--screenshot={shot}", "--window-size=1280,2000", report.as_uri())
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and shot.stat().st_size > 20_000
    result = _chromium("--dump-dom", report.as_uri())
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    dom = result.stdout.decode()
    assert f'<b id="period">{period.describe()}</b>' in dom
    assert f'<span id="seal-count">{len(inside)}</span>' in dom
    assert '<div class="result ok" id="result"><b>VERIFIED: evidence pack' in dom
    controls = dom[dom.index('<div id="controls">'):]
    for clause in ("Computer operations", "Access to programs and data", "PCI DSS v4.0.1", "10.2.2", "10.3.2",
                   "10.3.3", "10.3.4", "10.5.1", "10.7.2", "CC7.2", "164.312(b)", "164.312(c)(1)", "Art. 32(1)(b)"):
        assert f"<td>{clause}" in controls, clause
    assert "holds SHA-256 digests of records and the names of the submitting sources" in controls
    assert "not the records" in controls


def test_timer_runs_the_evidence_command_for_the_previous_quarter():
    import shlex

    from notary.cli import build_parser

    root = Path(__file__).resolve().parents[2] / "config"
    timer = (root / "merkle-notary-evidence.timer").read_text()
    assert "OnCalendar=*-01,04,07,10-01 03:00:00 UTC" in timer and "Persistent=yes" in timer
    unit = (root / "merkle-notary-evidence.service").read_text().replace("\\\n", " ")
    command = shlex.split(next(line for line in unit.splitlines() if line.startswith("ExecStart="))[len("ExecStart="):])
    args = build_parser().parse_args(command[1:])
    assert command[0].endswith("/notary") and args.command == "evidence" and args.previous_quarter
    assert "{from}" in args.out and "{to}" in args.out and args.keyring and args.tsa_roots and args.bucket
