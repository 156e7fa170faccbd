"""One command: a notary, the todo app driven by two users, then a tampered audit log caught line by line.

    .venv/bin/python -m examples.flask_todo.demo [--workdir DIR] [--dev-json var/dev/dev.json]

Without ``--dev-json`` it starts its own dev stack (SoftHSM2, dev TSA,
SeaweedFS) and daemon under the work directory, and stops them at the end.
Steps:

1. the app runs (Flask test client) with its audit logger on a fail-closed
   ``NotaryHandler``; alice and bob log in, create, complete and delete
   todos; a wrong password and bob's attempt on alice's todo are refused;
2. once the last event is sealed, ``notary verify-log`` finds the audit log
   CLEAN;
3. the log is tampered with as an insider would: bob's refused delete is
   edited into a success, and alice's delete is removed;
4. ``notary verify-log`` runs again and must name exactly those two records:
   the edited line as altered, the removed one as a deleted entry.

The exit status is 0 when both verdicts are as expected, 1 otherwise;
``result.json`` in the work directory holds both verify-log reports.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

from werkzeug.security import generate_password_hash

from examples.devnotary import ExampleStack, example_parser, make_workdir, wait_anchored
from examples.flask_todo.app import ACTIONS, create_app
from notary.audit_events import AuditEvents
from notary.client import HttpClient, NotaryHandler
from notary.devstack import PRODUCER

SOURCE = "todo-app"  # the app's HTTP source on the demo's own notary
PASSWORDS = {"alice": "correct horse", "bob": "battery staple"}

# (who, method, path, body, expected status): the session each request is made in.
SCRIPT = [
    ("alice", "POST", "/login", {"username": "alice", "password": "correct horse"}, 200),
    ("alice", "POST", "/todos", {"title": "close the Q3 ledger"}, 201),
    ("alice", "POST", "/todos", {"title": "reconcile vendor payments"}, 201),
    ("bob", "POST", "/login", {"username": "bob", "password": "wrong guess"}, 401),
    ("bob", "POST", "/login", {"username": "bob", "password": "battery staple"}, 200),
    ("bob", "POST", "/todos", {"title": "update the approval matrix"}, 201),
    ("bob", "POST", "/todos/2/delete", None, 403),
    ("alice", "POST", "/todos/1/done", None, 200),
    ("alice", "POST", "/todos/2/delete", None, 200),
    ("anonymous", "POST", "/todos", {"title": "no session"}, 401),
    ("bob", "POST", "/logout", None, 200),
    ("alice", "POST", "/logout", None, 200),
]


def drive(sink: Path, url: str, token: str) -> list[int]:
    """Run the app against the notary through SCRIPT; return each sink line's log index (line 1 first)."""
    handler = NotaryHandler(sink, HttpClient(url, token, timeout=30), mode="fail_closed")
    try:
        audit = handler.attach("todo.audit")
        # Production reads the national-id HMAC key from $NOTARY_AUDIT_HMAC_KEY; the demo makes one.
        events = AuditEvents(ACTIONS, hmac_key=os.urandom(32))
        users = {name: generate_password_hash(pw) for name, pw in PASSWORDS.items()}
        app = create_app(audit, events, users)
        clients = {who: app.test_client() for who in {step[0] for step in SCRIPT}}
        for who, method, path, body, expected in SCRIPT:
            answer = clients[who].open(path, method=method, json=body)
            print(f"  {who:<9} {method} {path:<17} -> {answer.status_code} {answer.get_json()}")
            if answer.status_code != expected:
                raise SystemExit(f"demo: {method} {path} answered {answer.status_code}, expected {expected}")
        lines = len(sink.read_bytes().splitlines())
        return [handler.index_of(line) for line in range(1, lines + 1)]
    finally:
        handler.close()  # detaches it from todo.audit too


def verify_log(sink: Path, source: str, dev_json: Path) -> tuple[int, dict]:
    """Run ``notary verify-log`` as an auditor would: print its verdict, return its exit status and JSON report."""
    command = ["verify-log", str(sink), "--source", source, "--dev-json", str(dev_json)]
    print(f"$ notary {' '.join(command)}")
    shown = subprocess.run([sys.executable, "-m", "notary.cli", *command], capture_output=True, text=True)
    print(shown.stdout + shown.stderr, end="")
    report = subprocess.run([sys.executable, "-m", "notary.cli", *command, "--json"], capture_output=True, text=True)
    return report.returncode, json.loads(report.stdout) if report.stdout else {}


def tamper(sink: Path) -> tuple[int, int]:
    """Edit bob's refused delete into a success and remove alice's delete; return (edited, removed) line numbers."""
    lines = sink.read_bytes().split(b"\n")[:-1]
    events = [json.loads(line) for line in lines]
    edited = next(n for n, e in enumerate(events, 1) if e["action"] == "todo.delete" and e["outcome"] == "denied")
    removed = next(n for n, e in enumerate(events, 1) if e["action"] == "todo.delete" and e["outcome"] == "success")
    lines[edited - 1] = lines[edited - 1].replace(b'"outcome":"denied"', b'"outcome":"success"')
    del lines[removed - 1]
    sink.write_bytes(b"".join(line + b"\n" for line in lines))
    return edited, removed


def expected_findings(edited: int, removed: int, indices: list[int]) -> list[tuple[str, list[int]]]:
    """What verify-log must report: (kind, entry indices), for the edited line and the removed one."""
    return sorted([("altered", [indices[edited - 1]]), ("deleted", [indices[removed - 1]])])


def run(workdir: Path, url: str, token: str, source: str, dev_json: Path) -> dict:
    sink = workdir / "audit.jsonl"
    for stale in (sink, Path(f"{sink}.notary")):
        stale.unlink(missing_ok=True)
    print(f"1. the todo app, audited into {sink} (fail-closed, source {source!r}):")
    indices = drive(sink, url, token)
    wait_anchored(HttpClient(url), max(indices))
    (workdir / "audit.jsonl.orig").write_bytes(sink.read_bytes())
    print(f"\n2. the untouched audit log ({len(indices)} lines, log indices {indices[0]}..{indices[-1]}):")
    clean_code, clean = verify_log(sink, source, dev_json)
    edited, removed = tamper(sink)
    print(f"\n3. tampered: line {edited} (bob's refused delete) edited into a success, "
          f"line {removed} (alice's delete) removed; the original is in {sink}.orig")
    print("\n4. the tampered audit log:")
    tampered_code, tampered = verify_log(sink, source, dev_json)
    found = sorted((f["kind"], f["indices"]) for f in tampered.get("findings", []))
    expected = expected_findings(edited, removed, indices)
    ok = clean_code == 0 and tampered_code == 9 and found == expected
    return {"ok": ok, "indices": indices, "edited_line": edited, "removed_line": removed,
            "expected_findings": expected, "clean": {"exit": clean_code, "report": clean},
            "tampered": {"exit": tampered_code, "report": tampered}}


def main(argv: list[str] | None = None) -> int:
    parser = example_parser("examples.flask_todo.demo", __doc__)
    parser.add_argument("--dev-json", type=Path, help="use the notary of a running `make run` (var/dev/dev.json) "
                        "instead of starting one")
    args = parser.parse_args(argv)
    workdir = make_workdir(args.workdir, "flask-todo-")
    with contextlib.ExitStack() as cleanup:
        if args.dev_json is not None:
            try:
                info = json.loads(args.dev_json.read_text())
                url, token = info["url"], info["token"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                print(f"--dev-json {args.dev_json}: not the dev.json of a running `make run` "
                      f"({type(exc).__name__}: {exc}); start one, or leave --dev-json out to start a notary here",
                      file=sys.stderr)
                return 2
            source, dev_json = PRODUCER, args.dev_json
        else:
            print(f"starting a dev notary under {workdir / 'notary'} ...")
            stack = cleanup.enter_context(ExampleStack(workdir / "notary"))
            notary = stack.notary("todo", [SOURCE])
            url, token, source, dev_json = notary.url, notary.tokens[SOURCE], SOURCE, notary.dev_json
        result = run(workdir, url, token, source, dev_json)
    (workdir / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    names = ", ".join(f"{kind} entry {idx[0]}" for kind, idx in result["expected_findings"])
    print(f"\n{'OK' if result['ok'] else 'UNEXPECTED'}: the untouched log verified "
          f"{'clean' if result['clean']['exit'] == 0 else 'NOT clean'}; the tampered one "
          f"{'named exactly' if result['ok'] else 'did not name exactly'} the edited and removed records ({names}). "
          f"Files: {workdir}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
