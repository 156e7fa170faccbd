"""``notary verify-log`` and ``notary export`` against a real daemon: each tamper case is named exactly."""

from __future__ import annotations

import json
import urllib.request

import pytest

from notary.cli import main
from notary.client import line_digests, submit_unix
from tests.daemon.conftest import Daemon
from tests.support import SoftwareSigner

LINES = [f"2026-11-21T10:00:{i:02d}Z app[42]: user=u{i} action={'login' if i % 3 else 'logout'}" for i in range(40)]
LINES[20] = ""  # an empty line and a repeated one are records too
LINES[31] = LINES[30]
LINES[0] = LINES[20]  # and the file begins and ends with such lines, which never set the span by themselves
LINES[-1] = LINES[30]


@pytest.fixture(scope="module")
def notarized(stack, tmp_path_factory):
    """A daemon holding LINES notarized by 'dev-producer', with another source's entries interleaved."""
    d = Daemon(stack, "forensics", max_age=0.2).start()
    base = tmp_path_factory.mktemp("forensics")
    path = base / "app.log"
    path.write_text("".join(line + "\n" for line in LINES))
    digests = [dg for _, dg in line_digests(path)]
    client = d.client()
    indices = []
    for start in range(0, len(digests), 7):
        indices += [a["index"] for a in client.submit(digests[start : start + 7])]
        submit_unix(d.socket, [bytes([start]) * 32])  # source 'local-user', inside the file's span
    last = client.submit([b"\xee" * 32])[0]["index"]
    d.wait_anchored(last + 1)
    info = base / "dev.json"
    info.write_text(json.dumps(stack.dev_info(d.url)))
    yield d, base, indices, info
    d.stop()


def verify_log(capsys, info, path, *extra: str) -> tuple[int, str, str]:
    code = main(["verify-log", str(path), "--source", "dev-producer", "--dev-json", str(info), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def tampered(base, name: str, lines: list[str]):
    path = base / name
    path.write_text("".join(line + "\n" for line in lines))
    return path


def edit(lines):
    lines[12] = lines[12].replace("user=u12", "user=root")
    return lines


def delete(lines):
    del lines[25]
    return lines


def swap(lines):
    lines[5], lines[6] = lines[6], lines[5]
    return lines


def insert(lines):
    lines.insert(33, "2026-11-21T10:00:33Z app[42]: user=mallory action=login")
    return lines


# (tamper, kind, line numbers, which entry: an index into the file's original lines, or None)
CASES = {
    "edited": (edit, "altered", [13], 12),
    "deleted": (delete, "deleted", [], 25),
    "swapped": (swap, "swapped", [6, 7], 5),
    "inserted": (insert, "inserted", [34], None),
}


@pytest.fixture(scope="module")
def bundle(notarized, tmp_path_factory):
    d, base, indices, info = notarized
    path = base / "span.bundle"
    # Wider than the file on both sides: the span is the file's, not the bundle's.
    assert main(["export", "--from", str(indices[0] - 1), "--to", str(indices[-1] + 2), "--url", d.url,
                 "-o", str(path)]) == 0
    return path


@pytest.mark.parametrize("via", ["url", "bundle"])
def test_untouched_file_verifies_clean_with_every_line_at_its_index(notarized, bundle, capsys, via):
    d, base, indices, info = notarized
    extra = ["--bundle", str(bundle)] if via == "bundle" else []
    code, out, err = verify_log(capsys, info, base / "app.log", "--json", *extra)
    assert code == 0, out + err
    report = json.loads(out)
    assert report["result"] == "clean" and report["findings"] == []
    assert [(r["line"], r["status"], r["index"]) for r in report["records"]] == \
        [(n, "notarized", i) for n, i in enumerate(indices, 1)]
    assert report["span"] == {"from": indices[0], "to": indices[-1] + 1}
    code, out, _ = verify_log(capsys, info, base / "app.log", *extra)
    assert code == 0 and "CLEAN: 40 lines notarized in order" in out


@pytest.mark.parametrize("via", ["url", "bundle"])
@pytest.mark.parametrize("case", CASES)
def test_each_tamper_case_is_detected_and_names_its_lines_and_entry(notarized, bundle, capsys, case, via):
    d, base, indices, info = notarized
    change, kind, lines, original = CASES[case]
    path = tampered(base, f"{case}.log", change(list(LINES)))
    extra = ["--bundle", str(bundle)] if via == "bundle" else []
    code, out, err = verify_log(capsys, info, path, "--json", *extra)
    assert code == 9, out + err
    report = json.loads(out)
    assert report["result"] == "tampered"
    assert [(f["kind"], f["lines"]) for f in report["findings"]] == [(kind, lines)]
    finding = report["findings"][0]
    if case == "swapped":
        assert finding["indices"] == [indices[6], indices[5]]
    elif original is not None:
        assert finding["indices"] == [indices[original]]
    # Every other line is still notarized at its own index.
    untouched = [r for r in report["records"] if r["line"] not in lines]
    assert all(r["status"] == "notarized" for r in untouched)
    code, out, _ = verify_log(capsys, info, path, *extra)
    assert code == 9 and "TAMPERED" in out
    assert {
        "edited": f"line 13 was altered (was entry {indices[12]})",
        "deleted": f"entry {indices[25]} was deleted: it was notarized between line 25 and line 26",
        "swapped": "lines 6 and 7 are swapped",
        "inserted": "line 34 was inserted",
    }[case] in out


def test_a_changed_entry_in_a_bundle_fails_the_range_proof(notarized, bundle, capsys):
    d, base, indices, info = notarized
    text = bundle.read_text()
    original = [dg for _, dg in line_digests(base / "app.log")][3].hex()
    assert original in text
    forged = base / "forged.bundle"
    forged.write_text(text.replace(original, "00" * 32, 1))
    code, out, err = verify_log(capsys, info, base / "app.log", "--bundle", str(forged))
    assert code == 5
    assert "are not the ones the signed checkpoint of size" in err and "lead to root" in err


def test_an_untrusted_key_fails_the_checkpoint(notarized, bundle, capsys):
    d, base, indices, info = notarized
    other = str(SoftwareSigner.ecdsa().verifier("dev.notary.localhost/log"))
    code = main(["verify-log", str(base / "app.log"), "--source", "dev-producer", "--url", d.url, "--vkey", other])
    _, err = capsys.readouterr()
    assert code == 6 and "the checkpoint does not verify" in err


def test_a_bundle_filtered_to_one_source_shows_others_as_leaves_and_cannot_verify_the_file(notarized, capsys):
    """The interleaved entries of another source are leaf hashes in it: any of them could be one of the
    file's lines, deleted, so verify-log refuses it (before 2026-12-04 it called the file CLEAN)."""
    d, base, indices, info = notarized
    path = base / "producer.bundle"
    assert main(["export", "--from", str(indices[0]), "--to", str(indices[-1] + 1), "--source", "dev-producer",
                 "--url", d.url, "-o", str(path)]) == 0
    capsys.readouterr()
    body = path.read_text()
    assert body.count(" leaf ") == (indices[-1] + 1 - indices[0]) - len(LINES)  # the interleaved 'local-user' entries
    assert "local-user" not in body
    code, out, err = verify_log(capsys, info, base / "app.log", "--bundle", str(path))
    assert code == 5 and "CLEAN" not in out, out + err
    assert "the bundle is filtered to source 'dev-producer'" in err and "export the span without --source" in err
    code = main(["verify-log", str(base / "app.log"), "--source", "local-user", "--dev-json", str(info),
                 "--bundle", str(path)])
    assert code == 2 and "shows only the entries of source 'dev-producer', not 'local-user'" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    (None, "cannot read log file"),
    ("", "is empty: there is no line to verify"),
])
def test_unreadable_or_empty_log_file_is_a_clear_error(notarized, capsys, tmp_path, content, message):
    d, base, indices, info = notarized
    path = tmp_path / "x.log"
    if content is not None:
        path.write_text(content)
    code, out, err = verify_log(capsys, info, path)
    assert code == 2 and message in err


@pytest.mark.parametrize("text, message", [
    ("hello\n", "not a log bundle: it does not start with 'notary-log-bundle/v1'"),
    ("notary-log-bundle/v1\nrange 5 3\n\n", "bundle range [5, 3) is empty"),
    ("notary-log-bundle/v1\nrange 0 2\n\n0 leaf " + "00" * 32 + "\n\nx", "needs 2 entry lines, it has 1"),
    ("notary-log-bundle/v1\nrange 0 1\n\n0 zz" + "00" * 31 + " a\n\nx", "digest of entry 0 is not 64 hex digits"),
    # 64 characters, one a space: bytes.fromhex would skip it and give 31 bytes, an inclusion failure (exit 5)
    ("notary-log-bundle/v1\nrange 0 1\n\n0 leaf " + "00" * 31 + " 0\n\nx", "leaf hash of entry 0 is not 64 hex digits"),
])
def test_malformed_bundle_is_a_clear_error(notarized, capsys, tmp_path, text, message):
    d, base, indices, info = notarized
    path = tmp_path / "bad.bundle"
    path.write_text(text)
    code, out, err = verify_log(capsys, info, base / "app.log", "--bundle", str(path))
    assert code == 3 and "malformed input" in err and message in err, err


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_entries_api_filters_by_source_and_bounds_each_request(notarized):
    d, base, indices, info = notarized
    status, body = get(f"{d.url}/v1/entries?from={indices[6]}&to={indices[7] + 1}&source=dev-producer")
    lines = body.decode().splitlines()
    assert status == 200 and lines[0].startswith(f"{indices[6]} ") and lines[0].endswith(" dev-producer")
    assert lines[1].split(" ")[1] == "leaf"  # the unix socket's entry after the 7th line, as its leaf hash only
    status, body = get(f"{d.url}/v1/entries?from=0&to={(1 << 16) + 1}")
    assert status == 400 and b"at most 65536 entries a request" in body
    status, body = get(f"{d.url}/v1/entries?from=999990&to=999999")
    assert status == 404 and b"are not in the log" in body
    status, body = get(f"{d.url}/v1/range-proof?from=0&to=999999")
    assert status == 404 and b"the anchored seal's size" in body


def test_lines_notarized_after_the_anchored_checkpoint_are_pending_not_tampered(daemon_factory, capsys, tmp_path):
    # A batch closes at 10 entries; the 3 after them wait for max_age (a minute), unsealed.
    d = daemon_factory("forensics-pending", max_entries=10, max_age=60).start()
    client = d.client()
    logged = next(int(float(line.split()[1])) for line in client.metrics().splitlines()
                  if line.startswith("notary_log_entries "))  # the key events the daemon logged itself
    first = 10 - logged % 10  # lines that close a batch of 10 with them
    path = tmp_path / "live.log"
    path.write_text("".join(f"event {i}\n" for i in range(first)))
    client.submit([dg for _, dg in line_digests(path)])
    sealed = logged + first
    d.wait_anchored(sealed)
    with open(path, "a") as f:
        f.write("".join(f"event {i}\n" for i in range(first, first + 3)))
    indices = [a["index"] for a in client.submit([dg for _, dg in line_digests(path)][first:])]
    info = tmp_path / "dev.json"
    info.write_text(json.dumps(d.stack.dev_info(d.url)))
    code, out, err = verify_log(capsys, info, path, "--json")
    assert code == 10, out + err
    report = json.loads(out)
    assert report["result"] == "pending" and report["checkpoint"]["tree_size"] == sealed
    assert [(f["kind"], f["lines"], f["indices"]) for f in report["findings"]] == \
        [("pending", [n], [i]) for n, i in zip(range(first + 1, first + 4), indices)]
    assert [r["status"] for r in report["records"]] == ["notarized"] * first + ["pending"] * 3


def test_a_file_checked_under_the_wrong_source_says_that_may_be_why(notarized, capsys):
    d, base, indices, info = notarized
    code, out, err = verify_log(capsys, info, base / "app.log", "--source", "someone-else")
    assert code == 9  # as for a file whose every line was replaced: the two cannot be told apart
    assert "no line of the file is notarized under source 'someone-else'" in out and "check --source" in out
    code, out, err = verify_log(capsys, info, base / "app.log")
    assert code == 0 and "check --source" not in out


def test_lines_cut_from_either_end_leave_the_verdict_clean_and_are_pointed_at(notarized, capsys, tmp_path):
    """The span is the file's own, so a cut end cannot be judged (a later file looks the same), but the source's
    records next to the span are named: the first cut line's entry, verified against the checkpoint."""
    d, base, indices, info = notarized
    cut_end = tampered(tmp_path, "cut-end.log", LINES[:-3])
    code, out, err = verify_log(capsys, info, cut_end)
    assert code == 0 and "CLEAN" in out, out + err
    assert f"more records after the file's last notarized line (the next is entry {indices[-3]})" in out

    cut_start = tampered(tmp_path, "cut-start.log", LINES[3:])
    code, out, err = verify_log(capsys, info, cut_start, "--json")
    report = json.loads(out)
    assert code == 0 and report["result"] == "clean"
    assert report["edges"]["before"] == indices[2]

    # The whole file: nothing of the source before it; after it, the fixture's last record (b"\xee" * 32).
    code, out, err = verify_log(capsys, info, base / "app.log", "--json")
    edges = json.loads(out)["edges"]
    assert code == 0 and edges["before"] is None and edges["after"] > indices[-1]
    assert edges["looked_in"]["from"] == 0


def test_a_bundle_reports_the_edges_within_its_range(notarized, capsys, tmp_path):
    d, base, indices, info = notarized
    full = tmp_path / "full.bundle"
    start, end = indices[0], indices[-1] + 1
    assert main(["export", "--from", str(start), "--to", str(end), "--dev-json", str(info), "-o", str(full)]) == 0
    capsys.readouterr()
    cut_end = tampered(tmp_path, "cut-end.log", LINES[:-3])
    code, out, err = verify_log(capsys, info, cut_end, "--bundle", str(full), "--json")
    edges = json.loads(out)["edges"]
    assert code == 0 and edges["after"] == indices[-3] and edges["looked_in"] == {"from": start, "to": end}
    # The whole file against the same bundle: the bundle ends with it, so nothing is seen past it.
    code, out, err = verify_log(capsys, info, base / "app.log", "--bundle", str(full), "--json")
    assert code == 0 and json.loads(out)["edges"]["after"] is None


def test_a_bundle_narrower_than_the_file_leaves_the_lines_outside_it_unjudged_not_inserted(notarized, capsys,
                                                                                            tmp_path):
    """Before 2026-12-05 every line above or below the bundle's range was 'inserted': TAMPERED for a whole file."""
    d, base, indices, info = notarized
    narrow = tmp_path / "narrow.bundle"
    assert main(["export", "--from", str(indices[5]), "--to", str(indices[35]), "--dev-json", str(info),
                 "-o", str(narrow)]) == 0
    capsys.readouterr()
    outside = [1, 2, 3, 4, 5, 36, 37, 38, 39, 40]  # lines 1 and 40 repeat lines 21 and 31-32, inside it
    code, out, err = verify_log(capsys, info, base / "app.log", "--bundle", str(narrow), "--json")
    assert code == 10, out + err
    report = json.loads(out)
    assert report["result"] == "uncovered" and report["counts"]["uncovered"] == 10
    assert [(f["kind"], f["lines"]) for f in report["findings"]] == [("uncovered", [n]) for n in outside]
    assert [(r["line"], r["status"], r["index"]) for r in report["records"] if r["line"] not in outside] == \
        [(n, "notarized", indices[n - 1]) for n in range(6, 36)]
    code, out, _ = verify_log(capsys, info, base / "app.log", "--bundle", str(narrow))
    assert code == 10 and "INCOMPLETE: 30 lines notarized in order" in out
    assert "10 not judged (outside the bundle's range)" in out
    assert f"line 40 is not judged: it is not among the source's entries in [{indices[5]}, {indices[35]})" in out

    # Tampering inside the bundle's range is still found; outside it, only the notary (--url) can tell.
    inserted = tampered(tmp_path, "inserted.log", insert(list(LINES)))
    code, out, _ = verify_log(capsys, info, inserted, "--bundle", str(narrow))
    assert code == 9 and "line 34 was inserted" in out
    edited = list(LINES)
    edited[2] += " (edited)"
    edited = tampered(tmp_path, "edited-top.log", edited)
    code, out, _ = verify_log(capsys, info, edited, "--bundle", str(narrow))
    assert code == 10 and "line 3 is not judged" in out
    code, out, _ = verify_log(capsys, info, edited)
    assert code == 9 and f"line 3 was altered (was entry {indices[2]})" in out


def test_a_bundle_of_records_the_file_does_not_hold_says_where_they_may_be(notarized, capsys, tmp_path):
    d, base, indices, info = notarized
    after = tmp_path / "after.bundle"
    assert main(["export", "--from", str(indices[-1] + 1), "--to", str(indices[-1] + 2), "--dev-json", str(info),
                 "-o", str(after)]) == 0
    capsys.readouterr()
    code, out, _ = verify_log(capsys, info, base / "app.log", "--bundle", str(after))
    assert code == 10, out
    assert "span: none (no line of the file is among the bundle's entries)" in out
    assert "no line of the file is among the bundle's entries of source 'dev-producer'" in out
