"""Evidence packs made and checked without a daemon (tests/packkit.py): what ``verify_pack`` catches when seals are
removed, a pack is made too early, from nothing or before a seal after its period closes it, its JSON is malformed,
its audit is of another prefix or its pages are edited; the period's bounds; which seals a pack holds when
timestamps go backwards at the period's end."""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable, Mapping
from types import MappingProxyType

import pytest

from anchors.devtsa import DevTsa
from notary import evidence
from notary.audit import AuditReport
from notary.cli import main
from notary.errors import FormatError
from notary.evidence import (
    AUDIT_JSON, EXIT_CHAIN, EXIT_MALFORMED, EXIT_MANIFEST, EXIT_SEAL, KEY_HISTORY, MANIFEST, PACK_JSON, REPORT,
    TRANSCRIPT, PackNotClosed, Period, build_pack, seal_file, verify_pack, write_pack,
)
from tests.packkit import (
    HOUR, UTC, SealedLog, audit, edit_json, forge, keyring, make_pack, next_second, pack_json, refresh_manifest,
    relinked,
)

NOW = datetime.datetime.now(UTC)
AROUND_NOW = Period(NOW - HOUR, NOW + HOUR)


@pytest.fixture(scope="module")
def small_pack(tmp_path_factory) -> Mapping[str, bytes]:
    """The pack of seals 3 and 5, closed by 6, for tests that check edited copies of it (read-only: shared)."""
    files, verdict = make_pack(tmp_path_factory.mktemp("small"), [3, 5])
    assert verdict.ok
    return MappingProxyType(files)


def _lines(verdict) -> list[str]:
    return [p.line() for p in verdict.problems]


def _without(files: dict, *sizes: int) -> dict:
    """``files`` with the seals of ``sizes`` gone, from the pack and from pack.json."""
    files = {p: d for p, d in files.items() if p not in {seal_file(s) for s in sizes}}
    return edit_json(files, PACK_JSON, lambda d: d.__setitem__(
        "seals", [e for e in d["seals"] if e["tree_size"] not in sizes]))


def test_untouched_pack_verifies_with_every_check(tmp_path):
    files, verdict = make_pack(tmp_path, [3, 5, 8])
    assert verdict.ok
    result = verify_pack(files)
    assert result.ok and result.exit_code == 0, _lines(result)
    assert [c.name for c in result.checks] == ["files", "material", "period", "audit", "pages"]
    assert all(c.status == "ok" for c in result.checks)


# -- seals removed --------------------------------------------------------------------------------------------


def test_seals_cut_from_the_end_are_missing_against_audit_json(tmp_path):
    files, _ = make_pack(tmp_path, [3, 5, 8, 13])
    forged = forge(edit_json(_without(files, 8, 13, 14), PACK_JSON, lambda d: d.__setitem__("latest_tree_size", 5)))
    result = verify_pack(forged)
    assert result.exit_code == EXIT_CHAIN
    for size in (8, 13, 14):
        assert f"{seal_file(size)}: is missing from the pack, but the audit read the original seal of tree size " \
               f"{size} (p/seals/" in "\n".join(_lines(result))
    assert f"{PACK_JSON}: says the bucket held seals up to tree size 5 when the pack was made, but {AUDIT_JSON} " \
           "says 14" in _lines(result)


@pytest.mark.parametrize("latest, exit_code", [(None, EXIT_CHAIN), (..., EXIT_MALFORMED), (True, EXIT_MALFORMED)])
def test_latest_tree_size_is_required_and_must_be_audit_jsons(tmp_path, latest, exit_code):
    files, _ = make_pack(tmp_path, [3, 5, 8])

    def change(doc):
        if latest is ...:
            del doc["latest_tree_size"]
        else:
            doc["latest_tree_size"] = latest
    result = verify_pack(refresh_manifest(edit_json(files, PACK_JSON, change)))
    assert result.exit_code == exit_code
    assert any(p.file == PACK_JSON and "latest_tree_size" in p.message or "up to tree size None" in p.message
               for p in result.problems), _lines(result)


def _relinked_without_5(tmp_path) -> tuple[dict, dict, Callable[[dict], None]]:
    """A pack of seals 3, 5, 8 and 13 (closed by 14); that pack with 5 removed and 8 relinked over the gap
    (previous_tree_size and consistency_proof are covered by no signature), pack.json's SHA-256 of 8 rewritten to
    match; and that rewrite, for audit.json."""
    log = SealedLog(tmp_path, 14)
    bodies, period = log.period_seals([3, 5, 8, 13])
    files, verdict = build_pack(audit(bodies, log.roots_pem), period, keyring().encode(), log.roots_pem,
                                created_at=datetime.datetime.now(UTC))
    assert verdict.ok
    body = relinked(log, bodies[2], 3)
    digest = hashlib.sha256(body).hexdigest()

    def rewrite(doc):
        for entry in doc["seals"]:
            if entry.get("tree_size") == 8:
                entry["sha256"] = digest
    return files, edit_json(_without(files, 5) | {seal_file(8): body}, PACK_JSON, rewrite), rewrite


def test_seal_removed_mid_period_and_the_next_relinked_is_missing_against_audit_json(tmp_path):
    """The pack's audit.json still lists the removed original."""
    _, forged, rewrite = _relinked_without_5(tmp_path)
    result = verify_pack(forge(edit_json(forged, AUDIT_JSON, rewrite)))
    assert result.exit_code == EXIT_CHAIN
    assert [p.file for p in result.problems] == [seal_file(5)], _lines(result)


def test_removal_rewritten_through_audit_json_too_shows_only_against_a_kept_sha256sums(tmp_path):
    """The limit docs/AUDITORS.md states: nothing in the pack is signed but the seals."""
    files, forged, rewrite = _relinked_without_5(tmp_path)

    def remove_5(doc):
        doc.update(seals=[e for e in doc["seals"] if e.get("tree_size") != 5], seal_count=doc["seal_count"] - 1)
        rewrite(doc)
    forged = forge(edit_json(forged, AUDIT_JSON, remove_5))
    assert verify_pack(forged).ok, _lines(verify_pack(forged))
    result = verify_pack(forged | {MANIFEST: files[MANIFEST]})  # the SHA256SUMS noted at hand-over
    assert result.exit_code == EXIT_MANIFEST
    assert f"{seal_file(5)}: is listed in SHA256SUMS but missing from the pack" in _lines(result)
    assert any(line.startswith(f"{seal_file(8)}: has SHA-256 ") for line in _lines(result))


def test_pack_json_lock_must_be_the_audited_one(small_pack):
    files = small_pack

    def later(doc):
        doc["seals"][1]["retain_until"] = "2099-01-01T00:00:00Z"
    result = verify_pack(forge(edit_json(files, PACK_JSON, later)))
    assert result.exit_code == EXIT_SEAL
    assert _lines(result)[0].startswith(f"{PACK_JSON}: gives {seal_file(5)} the retain_until '2099-01-01T00:00:00Z'"
                                        f", but {AUDIT_JSON} records '")


# -- a pack made too early, or from nothing ---------------------------------------------------------------------


def test_pack_is_not_built_before_its_period_ends(tmp_path):
    with pytest.raises(FormatError, match=r"the period ends .*Z, after now \(.*Z\)"):
        make_pack(tmp_path, [3, 5], created_at=NOW)


def test_pack_made_before_its_period_ends_does_not_verify(small_pack):
    files = small_pack
    early = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    result = verify_pack(forge(edit_json(files, PACK_JSON, lambda d: d.__setitem__("created_at", early))))
    assert result.exit_code == EXIT_CHAIN
    assert _lines(result) == [f"{PACK_JSON}: says the pack was made {early}, before the period's end "
                              f"{pack_json(files)['period']['end']}: seals timestamped later in the period cannot "
                              "be in it"]


def _evidence_args(tmp_path, *period: str) -> list[str]:
    (tmp_path / "keyring.json").write_bytes(keyring().encode())
    return ["evidence", *period, "--out", str(tmp_path / "pack"), "--keyring", str(tmp_path / "keyring.json"),
            "--tsa-roots", str(DevTsa(tmp_path / "tsa").root_cert_path), "--bucket", "b", "--prefix", "wrong/",
            "--endpoint-url", "http://127.0.0.1:9", "--region", "us-east-1"]


def test_evidence_refuses_a_period_that_has_not_ended(tmp_path, capsys):
    end = (NOW + datetime.timedelta(days=40)).date()
    code = main(_evidence_args(tmp_path, "--from", f"{NOW:%Y-%m-%d}", "--to", end.isoformat()))
    err = capsys.readouterr().err
    assert code == 2 and f"the period ends {end + datetime.timedelta(days=1)}T00:00:00Z, after now (" in err
    assert not (tmp_path / "pack").exists()


def test_evidence_with_no_seals_exits_10_and_writes_no_pack(tmp_path, monkeypatch, capsys):
    async def nothing(reader, trust, roots, **kw):
        return AuditReport("b", "wrong/", NOW, None, ())
    monkeypatch.setattr("notary.audit.audit_bucket", nothing)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    code = main(_evidence_args(tmp_path, "--from", "2026-07-01", "--to", "2026-09-30"))
    err = capsys.readouterr().err
    assert code == 10 and "NO SEALS: nothing under s3://b/wrong/seals/" in err and "No evidence pack written" in err
    assert not (tmp_path / "pack").exists()


def test_pack_without_any_seal_is_not_built_and_does_not_verify(small_pack, tmp_path):
    roots = DevTsa(tmp_path / "tsa").root_cert_path.read_bytes()
    with pytest.raises(PackNotClosed, match=r"yet to close the pack \(the bucket holds no seal\)"):
        build_pack(AuditReport("b", "wrong/", NOW, None, ()), AROUND_NOW, keyring().encode(), roots,
                   created_at=AROUND_NOW.end)
    # As an earlier notary evidence wrote it from a wrong bucket or prefix.
    empty = {p: d for p, d in small_pack.items() if not p.startswith("seals/")}
    empty = edit_json(empty, PACK_JSON, lambda d: d.update(seals=[], latest_tree_size=None))
    empty = forge(edit_json(empty, AUDIT_JSON, lambda d: d.update(seals=[], latest_tree_size=None, seal_count=0)))
    result = verify_pack(empty)
    assert result.exit_code == EXIT_CHAIN and result.sentence().startswith("NOT VERIFIED")
    assert _lines(result) == ["seals/: holds no seal at all, not even one before the period: the pack shows nothing "
                              "about the period (was it made from a wrong bucket or prefix?)"]


# -- a pack not closed by a seal after its period ------------------------------------------------------------------


def test_pack_is_built_only_once_a_seal_after_the_period_closes_it(tmp_path):
    """At the period's end the last seal of the period may still be on its way to S3 (an outage holds it back):
    until a seal timestamped after the period is in the bucket, no pack can show that none is missing."""
    log = SealedLog(tmp_path, 6)
    bodies, end = log.seals([3, 5]), next_second()
    period = Period(end - HOUR, end)
    with pytest.raises(PackNotClosed) as refused:
        build_pack(audit(bodies, log.roots_pem), period, keyring().encode(), log.roots_pem,
                   created_at=datetime.datetime.now(UTC))
    assert str(refused.value).startswith(
        f"no seal timestamped after the period (at or after {end:%Y-%m-%dT%H:%M:%SZ}) is in s3://b/p/seals/ yet to "
        "close the pack (it would end with the seal of tree size 5, timestamped ")
    # Once the next seal is published, the same period's pack is made and verifies.
    files, verdict = build_pack(audit(bodies + log.seals([6], 5), log.roots_pem), period, keyring().encode(),
                                log.roots_pem, created_at=datetime.datetime.now(UTC))
    assert verdict.ok and verify_pack(files).ok
    assert [e["role"] for e in pack_json(files)["seals"]] == ["period", "period", "after"]


def test_pack_not_closed_by_a_seal_after_the_period_does_not_verify(small_pack, tmp_path, capsys):
    """The pack an earlier notary evidence wrote before seal 6, the first one after the period, was in the bucket:
    seal 6 gone from the pack, pack.json and audit.json alike. Nothing in it shows a seal missing, but nothing
    shows that none is: it is not complete."""
    files = _without(small_pack, 6)
    files = edit_json(files, PACK_JSON, lambda d: d.__setitem__("latest_tree_size", 5))
    files = forge(edit_json(files, AUDIT_JSON, lambda d: d.update(
        seals=[e for e in d["seals"] if e["tree_size"] != 6], latest_tree_size=5, seal_count=2)))
    result = verify_pack(files)
    assert result.exit_code == EXIT_CHAIN and result.sentence().startswith("NOT VERIFIED")
    (line,) = _lines(result)
    created_at = pack_json(files)["created_at"]
    assert line.startswith(f"{seal_file(5)}: is the pack's last seal and is timestamped ")
    assert line.endswith(f"Z, in the period: no seal timestamped after the period closes the pack, so a seal of the "
                         f"period published after the pack was made ({created_at}; a seal keeps its token while S3 "
                         "is down) would be missing without showing. Make the pack again once a seal timestamped "
                         "after the period is in the bucket")
    write_pack(tmp_path / "pack", files)
    assert main(["verify-pack", str(tmp_path / "pack")]) == EXIT_CHAIN
    assert f"  {line}\n" in capsys.readouterr().out


def test_evidence_before_a_seal_after_the_period_exits_11_and_writes_no_pack(tmp_path, monkeypatch, capsys):
    log = SealedLog(tmp_path, 5)
    report = audit(log.seals([3, 5]), log.roots_pem, prefix="wrong/")
    end = next_second()

    async def audited(reader, trust, roots, **kw):
        return report
    monkeypatch.setattr("notary.audit.audit_bucket", audited)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    code = main(_evidence_args(tmp_path, "--from", f"{end - HOUR:%Y-%m-%dT%H:%M:%SZ}", "--to",
                               f"{end:%Y-%m-%dT%H:%M:%SZ}"))
    err = capsys.readouterr().err
    assert code == 11, err
    assert err.startswith("notary evidence: NOT CLOSED: no seal timestamped after the period (at or after "
                          f"{end:%Y-%m-%dT%H:%M:%SZ}) is in s3://b/wrong/seals/ yet to close the pack (it would end "
                          "with the seal of tree size 5, timestamped ")
    assert "No evidence pack written; run again once the notary has published a seal timestamped after the period" \
        in err
    assert not (tmp_path / "pack").exists()


# -- malformed JSON ---------------------------------------------------------------------------------------------


def _pop_each(key):
    return lambda d: [s.pop(key) for s in d["seals"]]


@pytest.mark.parametrize("path, change, message", [
    (PACK_JSON, lambda d: d.__setitem__("period", {}), "has no field period.start of type a string"),
    (PACK_JSON, lambda d: d["seals"].extend([{"role": "period"}, {"file": "x"}]),
     "has no field seals[3].file of type a string"),
    (PACK_JSON, lambda d: d["seals"].append({"file": ["x"]}), "has no field seals[3].file of type a string"),
    (PACK_JSON, lambda d: d["seals"][0].__setitem__("tree_size", "3"), "has no field seals[0].tree_size of type an "
     "integer"),
    (PACK_JSON, lambda d: d.__setitem__("created_at", 5), "has no field created_at of type a string"),
    (PACK_JSON, lambda d: d.__setitem__("created_at", "yesterday"), "created_at 'yesterday' is not a UTC time"),
    (PACK_JSON, lambda d: d["period"].__setitem__("start", "0999-01-01T00:00:00Z"), "the period reaches back to the "
     "year 999: periods lie in the years 1000 to 9999 (UTC)"),
    (AUDIT_JSON, lambda d: d.__setitem__("findings", [{"tree_size": 5}]), "has no field findings[0].kind of type a "
     "string"),
    (AUDIT_JSON, lambda d: d.__setitem__("findings", [{"tree_size": "5", "kind": "x", "key": "k", "version_id": None,
                                                       "message": "m"}]),
     "has no field findings[0].tree_size of type an integer or null"),
    (AUDIT_JSON, lambda d: d.__setitem__("findings", 7), "has no field findings of type a list"),
    (AUDIT_JSON, _pop_each("retain_until"), "has no field seals[0].retain_until of type a string or null"),
    (AUDIT_JSON, lambda d: d["seals"][1].__setitem__("tree_size", True), "has no field seals[1].tree_size of type "
     "an integer"),
    (AUDIT_JSON, lambda d: d.__setitem__("format", "x"), "has format 'x', expected 'notary-audit/v1'"),
    (AUDIT_JSON, lambda d: d.pop("prefix"), "has no field prefix of type a string"),
])
def test_malformed_json_is_exit_3_naming_file_and_field(small_pack, tmp_path, capsys, path, change, message):
    files = small_pack
    bad = refresh_manifest(edit_json(files, path, change))
    result = verify_pack(bad)
    assert result.exit_code == EXIT_MALFORMED
    assert any(p.file == path and message in p.message for p in result.problems), _lines(result)
    write_pack(tmp_path / "pack", bad)
    assert main(["verify-pack", str(tmp_path / "pack")]) == EXIT_MALFORMED
    assert f"  {path}: " in capsys.readouterr().out


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


# -- the pages ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path, old, new", [
    (REPORT, '<span id="seal-count">2</span>', '<span id="seal-count">4812</span>'),
    (REPORT, "COMPLIANCE until", "COMPLIANCE (10 years) until"),
    (TRANSCRIPT, "VERIFIED: evidence pack", "VERIFIED: everything, trust me. Evidence pack"),
    (KEY_HISTORY, "activate", "retire"),
])
def test_edited_page_fails_naming_the_file(small_pack, path, old, new):
    files = small_pack
    assert old in files[path].decode()
    result = verify_pack(refresh_manifest(files | {path: files[path].decode().replace(old, new).encode()}))
    assert result.exit_code == EXIT_MANIFEST
    assert _lines(result) == [f"{path}: differs from the one rebuilt from the pack's data (pack.json, seals, keyring, "
                              "audit.json and their verification): it was edited, or made from data that has changed "
                              "since"]


def test_report_of_other_data_fails(small_pack):
    """The report and the transcript show pack.json's bucket: edited alone, it differs from audit.json's as well."""
    files = small_pack
    result = verify_pack(refresh_manifest(edit_json(files, PACK_JSON, lambda d: d.__setitem__("bucket", "other"))))
    assert result.exit_code == EXIT_SEAL and [p.file for p in result.problems] == [AUDIT_JSON, REPORT, TRANSCRIPT]


@pytest.mark.parametrize("path, field, value, audited", [
    (PACK_JSON, "bucket", "other", ("b", "p/")),
    (AUDIT_JSON, "bucket", "other", ("other", "p/")),
    (AUDIT_JSON, "prefix", "q/", ("b", "q/")),
])
def test_audit_of_another_bucket_or_prefix_fails_naming_both(small_pack, tmp_path, capsys, path, field, value, audited):
    """A clean audit.json of another prefix (or a pack.json that names another) vouches for none of the pack's seals,
    even with the pages and SHA256SUMS made again to match."""
    files = small_pack
    forged = forge(edit_json(files, path, lambda d: d.__setitem__(field, value)))
    stated = ("b", "p/") if path == AUDIT_JSON else ("other", "p/")
    result = verify_pack(forged)
    assert result.exit_code == EXIT_SEAL
    assert _lines(result) == [f"{AUDIT_JSON}: is the audit of bucket {audited[0]!r}, prefix {audited[1]!r}, but "
                              f"{PACK_JSON} says the pack's seals are from bucket {stated[0]!r}, prefix {stated[1]!r}: "
                              "the audit's versions, locks and findings are not those of the pack's seals"]
    assert next(c for c in result.checks if c.name == "audit").status == "failed"
    write_pack(tmp_path / "pack", forged)
    assert main(["verify-pack", str(tmp_path / "pack")]) == EXIT_SEAL
    assert capsys.readouterr().out.startswith("NOT VERIFIED")


def test_page_made_from_changed_data_keeps_the_datas_exit_status(tmp_path):
    files, _ = make_pack(tmp_path, [3, 5, 8])
    result = verify_pack(refresh_manifest(_without(files, 5)))
    assert result.exit_code == EXIT_CHAIN
    assert {p.file for p in result.problems if p.exit_code == EXIT_CHAIN} >= {REPORT, TRANSCRIPT, seal_file(8)}


# -- timestamps going backwards at the period's end ----------------------------------------------------------


def test_seal_stamped_in_the_period_after_one_stamped_after_it_is_in_the_pack(tmp_path):
    """Seals 3 and 8 stamped before the period's end (say by a TSA whose clock is a second behind), 5 after it,
    then 13, which closes the pack: 8 belongs to the period and is in the pack, and the disorder is flagged."""
    log = SealedLog(tmp_path, 13)
    checkpoints = {size: log.checkpoint(size) for size in (3, 5, 8)}
    tokens = {3: log.token(checkpoints[3]), 8: log.token(checkpoints[8])}
    end = next_second()
    tokens[5] = log.token(checkpoints[5])
    bodies = [log.seal(size, previous, checkpoints[size], tokens[size]) for size, previous in ((3, 0), (5, 3), (8, 5))]
    period = Period(end - HOUR, end)
    files, verdict = build_pack(audit(bodies + log.seals([13], 8), log.roots_pem), period, keyring().encode(),
                                log.roots_pem, created_at=datetime.datetime.now(UTC))
    assert {e["tree_size"]: e["role"] for e in pack_json(files)["seals"]} == {3: "period", 5: "after", 8: "period",
                                                                              13: "after"}
    assert verdict.exit_code == EXIT_CHAIN
    assert [p.file for p in verify_pack(files).problems] == [seal_file(5)]
    assert _lines(verdict)[0].endswith("after the period, but is not the pack's last seal: timestamps go backwards")
