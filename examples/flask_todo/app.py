"""The todo application: login, todos per user, and an audit event for every change and every refusal.

SOX asks who changed what, when, and who tried and was refused. Each of
those is an event from ``notary.audit_events`` on a logger attached to a
``NotaryHandler`` in fail-closed mode, written *before* the change takes
effect: ``audit.info`` returns only once the notary durably acknowledged the
event's digest, and raises ``NotAcknowledgedError`` otherwise, which this app
answers with 503 and no change. Reads of one's own todos are not events;
refused reads are.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Mapping

from flask import Flask, request, session
from werkzeug.security import check_password_hash

from notary.audit_events import AuditEventError, AuditEvents, current_traceparent
from notary.client import NotAcknowledgedError

ACTIONS = frozenset({"session.login", "session.logout", "todo.read", "todo.create", "todo.complete", "todo.delete"})
ANONYMOUS = "anonymous"  # the actor of a request without a session


class Refused(Exception):
    """A request the application refuses, after its audit event was acknowledged."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def create_app(audit: logging.Logger, events: AuditEvents, users: Mapping[str, str]) -> Flask:
    """``audit``: a logger attached to a fail-closed NotaryHandler; ``users``: name -> werkzeug password hash."""
    app = Flask(__name__)
    app.secret_key = secrets.token_bytes(32)
    todos: dict[int, dict] = {}
    ids = itertools.count(1)

    def record(action: str, target: str, outcome: str, actor: str | None = None, **details) -> None:
        audit.info(events.event(actor=actor or session.get("user", ANONYMOUS), action=action, target=target,
                                outcome=outcome, **details))

    def user_for(action: str, target: str) -> str:
        """The logged-in user; a request without one is refused, and the refusal recorded."""
        if "user" not in session:
            record(action, target, "denied", reason="not logged in")
            raise Refused(401, "log in first")
        return session["user"]

    def own_todo(action: str, todo_id: int) -> dict:
        """The user's own todo; another user's is refused, and the refusal recorded."""
        target = f"todo/{todo_id}"
        user = user_for(action, target)
        todo = todos.get(todo_id)
        if todo is None:
            raise Refused(404, f"no todo {todo_id}")
        if todo["owner"] != user:
            record(action, target, "denied", reason=f"owned by {todo['owner']}")
            raise Refused(403, f"todo {todo_id} is not yours")
        return todo

    @app.before_request
    def correlate() -> None:
        current_traceparent.set(request.headers.get("traceparent"))

    @app.errorhandler(Refused)
    def refused(exc: Refused):
        return {"error": str(exc)}, exc.status

    @app.errorhandler(NotAcknowledgedError)
    def not_recorded(exc: NotAcknowledgedError):
        return {"error": "the audit event was not recorded by the notary, so nothing was done"}, 503

    @app.errorhandler(AuditEventError)
    def not_auditable(exc: AuditEventError):
        return {"error": f"refused: {exc}"}, 400  # e.g. a card number typed into a title

    @app.post("/login")
    def login():
        body = request.get_json(force=True)
        name, password = str(body.get("username", "")), str(body.get("password", ""))
        stored = users.get(name)
        if stored is None or not check_password_hash(stored, password):
            record("session.login", f"user/{name}", "failure", actor=name or ANONYMOUS)
            raise Refused(401, "wrong user name or password")
        record("session.login", f"user/{name}", "success", actor=name)
        session["user"] = name
        return {"user": name}

    @app.post("/logout")
    def logout():
        user = user_for("session.logout", "session")
        record("session.logout", f"user/{user}", "success")
        session.clear()
        return {"user": user}

    @app.get("/todos")
    def list_todos():
        user = user_for("todo.read", "todos")
        return {"todos": [t for t in todos.values() if t["owner"] == user]}

    @app.post("/todos")
    def create():
        user = user_for("todo.create", "todos")
        title = str(request.get_json(force=True).get("title", ""))
        todo_id = next(ids)
        record("todo.create", f"todo/{todo_id}", "success", title=title)
        todos[todo_id] = {"id": todo_id, "title": title, "owner": user, "done": False}
        return todos[todo_id], 201

    @app.post("/todos/<int:todo_id>/done")
    def complete(todo_id: int):
        todo = own_todo("todo.complete", todo_id)
        record("todo.complete", f"todo/{todo_id}", "success")
        todo["done"] = True
        return todo

    @app.post("/todos/<int:todo_id>/delete")
    def delete(todo_id: int):
        todo = own_todo("todo.delete", todo_id)
        record("todo.delete", f"todo/{todo_id}", "success", title=todo["title"])
        del todos[todo_id]
        return {"deleted": todo_id}

    return app
