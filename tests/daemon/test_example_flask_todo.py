"""examples/flask_todo: its one command catches the tampered audit lines, and the app is fail-closed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from werkzeug.security import generate_password_hash

from examples.flask_todo.app import ACTIONS, create_app
from notary.audit_events import AuditEvents
from notary.client import HttpClient, NotaryHandler

ROOT = Path(__file__).resolve().parents[2]


def test_demo_finds_untouched_log_clean_then_names_exactly_the_edited_and_removed_lines(tmp_path):
    demo = subprocess.run([sys.executable, "-m", "examples.flask_todo.demo", "--workdir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    indices = result["indices"]

    clean = result["clean"]
    assert clean["exit"] == 0 and clean["report"]["result"] == "clean"
    assert [(r["status"], r["index"]) for r in clean["report"]["records"]] == [("notarized", i) for i in indices]

    # Which original lines the tamperer touched, read from the files themselves.
    original = (tmp_path / "audit.jsonl.orig").read_bytes().splitlines()
    tampered = (tmp_path / "audit.jsonl").read_bytes().splitlines()
    touched = [n for n, line in enumerate(original, 1) if line not in tampered]
    new_lines = [n for n, line in enumerate(tampered, 1) if line not in original]
    assert len(touched) == 2 and len(new_lines) == 1
    edited = next(n for n in touched if original[n - 1].replace(b'"denied"', b'"success"') == tampered[new_lines[0] - 1])
    removed = next(n for n in touched if n != edited)

    report = result["tampered"]
    assert report["exit"] == 9 and report["report"]["result"] == "tampered"
    findings = sorted((f["kind"], f["indices"]) for f in report["report"]["findings"])
    assert findings == [("altered", [indices[edited - 1]]), ("deleted", [indices[removed - 1]])]
    altered = next(f for f in report["report"]["findings"] if f["kind"] == "altered")
    assert altered["lines"] == [new_lines[0]]
    assert f"line {new_lines[0]} was altered (was entry {indices[edited - 1]})" in demo.stdout
    assert f"entry {indices[removed - 1]} was deleted" in demo.stdout


def test_a_change_the_notary_did_not_acknowledge_is_not_made(daemon_factory, tmp_path):
    d = daemon_factory("flask-todo", max_age=0.2).start()
    handler = NotaryHandler(tmp_path / "audit.jsonl", HttpClient(d.url, d.stack.token, timeout=30))
    try:
        app = create_app(handler.attach("todo.audit.failclosed"), AuditEvents(ACTIONS, hmac_key=os.urandom(32)),
                         {"alice": generate_password_hash("pw")})
        alice = app.test_client()
        assert alice.post("/login", json={"username": "alice", "password": "pw"}).status_code == 200
        assert alice.post("/todos", json={"title": "keep me"}).status_code == 201
        d.stop()
        refused = alice.post("/todos/1/delete")
        assert refused.status_code == 503 and "not recorded" in refused.get_json()["error"]
        d.start()
        assert [t["title"] for t in alice.get("/todos").get_json()["todos"]] == ["keep me"]
        assert alice.post("/todos/1/delete").status_code == 200
        assert alice.get("/todos").get_json()["todos"] == []
    finally:
        handler.close()


def test_demo_with_a_dev_json_that_is_not_there_says_so_in_one_sentence(tmp_path):
    demo = subprocess.run([sys.executable, "-m", "examples.flask_todo.demo", "--workdir", str(tmp_path / "w"),
                           "--dev-json", str(tmp_path / "var" / "dev" / "dev.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert demo.returncode == 2
    assert "not the dev.json of a running `make run`" in demo.stderr and "Traceback" not in demo.stderr
