"""``notary run``, ``submit``, ``proof``, ``status`` and ``check-store``: the daemon and its everyday clients
(``verify`` and ``audit``, for auditors: cli_verify)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

from notary.client import AcknowledgedNotSealedError, ClientError, HttpClient, line_digests, record_digest, submit_unix
from notary.entry import parse_digest_hex
from notary.errors import NotaryError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("run", help="run the notary daemon",
                              description="Run the daemon with a configuration file, or --dev for a complete "
                              "local stack (SoftHSM2 token, dev TSA, SeaweedFS) for development.")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("-c", "--config", type=Path, help="the TOML configuration (see config/notary.example.toml)")
    mode.add_argument("--dev", action="store_true", help="development stack under --data-dir (not for production)")
    p.add_argument("--data-dir", type=Path, default=Path("var/dev"), help="--dev: where everything lives (default: %(default)s)")
    p.add_argument("--listen", default="127.0.0.1:8640", help="--dev: HTTP address (default: %(default)s)")
    p.set_defaults(handler=_run)

    p = subparsers.add_parser("submit", help="submit record digests (or files hashed line by line)")
    _connection_options(p)
    p.add_argument("--socket", type=Path, help="submit over this unix socket instead of HTTP")
    p.add_argument("--digest", action="append", default=[], metavar="HEX", help="a SHA-256 digest (repeatable)")
    p.add_argument("--wait-sealed", action="store_true",
                   help="HTTP: return once the records are sealed and anchored (with --proof-dir, keep their proofs)")
    p.add_argument("--proof-dir", type=Path, metavar="DIR",
                   help="with --wait-sealed: write each record's tlog-proof to DIR/<index>.tlog-proof")
    p.add_argument("files", nargs="*", type=Path, metavar="FILE", help="log files: one line = one record")
    p.set_defaults(handler=_submit)

    p = subparsers.add_parser("proof", help="fetch a record's offline proof (c2sp.org/tlog-proof@v1)")
    _connection_options(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--digest", metavar="HEX")
    what.add_argument("--index", type=int)
    what.add_argument("--line", metavar="TEXT", help="the record as text (one log line, without its newline)")
    p.add_argument("--size", type=int, help="prove against the seal at this tree size (default: latest)")
    p.add_argument("-o", "--output", type=Path, help="write the proof here (default: stdout)")
    p.set_defaults(handler=_proof)

    p = subparsers.add_parser("status", help="the latest checkpoint, health and counters of a running notary")
    _connection_options(p)
    p.set_defaults(handler=_status)

    p = subparsers.add_parser("check-store", help="recompute a daemon's log and check every seal against it",
                              description="Read-only, O(n): every entry against its leaf hash, every stored node "
                              "against its children, the digest index against the entries, and the root of every "
                              "seal in seals.db against the log. Safe beside the running daemon: it checks the log "
                              "as it was when the check started, reading it in short transactions.",
                              epilog=CHECK_STORE_EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", type=Path, metavar="DATA_DIR", help="the daemon's data_dir (holding log.db and seals.db)")
    p.set_defaults(handler=_check_store)


def _connection_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=os.environ.get("NOTARY_URL", "http://127.0.0.1:8640"),
                   help="the notary's HTTP address (default: $NOTARY_URL or %(default)s)")
    p.add_argument("--token-file", type=Path, help="file holding the bearer token (or set $NOTARY_TOKEN)")
    p.add_argument("--dev-json", type=Path, help="take url and token from a dev stack's dev.json")


def _client(args: argparse.Namespace) -> HttpClient:
    url, token = args.url, os.environ.get("NOTARY_TOKEN")
    if args.dev_json is not None:
        try:
            info = json.loads(_read_text(args.dev_json, "--dev-json"))
            url, token = info["url"], info["token"]
        except (ValueError, KeyError, TypeError):
            raise ClientError(f"--dev-json {args.dev_json} is not a dev stack's dev.json (JSON with url and token)") \
                from None
    if args.token_file is not None:
        token = _read_text(args.token_file, "--token-file").strip()
    return HttpClient(url, token)


def _read_text(path: Path, option: str) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeError) as exc:
        raise ClientError(f"{option} {path} cannot be read: {getattr(exc, 'strerror', None) or exc}") from None


def _run(args: argparse.Namespace) -> int:
    from notary.daemon import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.dev:
        return asyncio.run(serve(args.config))
    from notary.config import _listen
    from notary.devstack import DevStack, free_port, listen_check

    host, port = _listen(args.listen, "--listen")
    port = port or free_port()  # dev.json must name the port the daemon listens on
    listen_check(host, port)  # in one sentence, before the stack takes seconds to start
    # Until the daemon's own handlers are in place, SIGTERM and SIGHUP (the terminal closed) stop the
    # start-up as Ctrl-C does: the stack's `with` stops what it already started.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    with DevStack(args.data_dir, http=(host, port)) as stack:
        os.environ["SOFTHSM2_CONF"] = str(stack.softhsm_conf)  # before this process loads SoftHSM2
        def ready(notary) -> None:
            url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
            info = stack.write_dev_json(url)
            print(_dev_banner(url, info, stack), flush=True)
        return asyncio.run(serve(stack.config_path, on_ready=ready))


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _dev_banner(url: str, info: Path, stack) -> str:
    return f"""
merkle-notary dev stack is up (development only: SoftHSM2 token, dev TSA, SeaweedFS under {stack.data_dir}).
  {info} holds the URL, producer token, verifier keys, TSA root and S3 settings.

Try, in another terminal:
  printf 'user=alice action=login\\n' > /tmp/audit.log
  .venv/bin/notary submit --dev-json {info} --wait-sealed /tmp/audit.log
  .venv/bin/notary proof --dev-json {info} --line 'user=alice action=login' -o /tmp/alice.tlog-proof
  .venv/bin/notary verify /tmp/alice.tlog-proof --dev-json {info} --line 'user=alice action=login'
  .venv/bin/notary status --dev-json {info}

Ctrl-C stops everything this command started.
"""


def _submit(args: argparse.Namespace) -> int:
    digests = [parse_digest_hex(d) for d in args.digest]
    labels = [d for d in args.digest]
    for path in args.files:
        try:
            for number, digest in line_digests(path):
                digests.append(digest)
                labels.append(f"{path}:{number}")
        except OSError as exc:
            raise ClientError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not digests:
        raise ClientError("nothing to submit: give --digest HEX or log files")
    if args.proof_dir is not None:
        if not args.wait_sealed or args.socket is not None:
            raise ClientError("--proof-dir needs --wait-sealed over HTTP: the proofs exist once the records are sealed")
        try:
            args.proof_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ClientError(f"cannot use --proof-dir {args.proof_dir}: {exc.strerror or exc}") from None
    if args.socket is not None:
        indices = submit_unix(args.socket, digests)
        answers = [{"index": i} for i in indices]
    else:
        client = _client(args)
        answers = []
        for start in range(0, len(digests), 10_000):
            try:
                answers += client.submit(digests[start : start + 10_000], wait_sealed=args.wait_sealed)
            except AcknowledgedNotSealedError as exc:
                # Durable, but not sealed: say which, so that nobody submits them a second time.
                _print_answers(labels, answers, args.proof_dir)
                for label, index in zip(labels[len(answers):], exc.indices):
                    print(f"{label}\tindex {index}\t(acknowledged, not sealed)")
                unsent = len(digests) - len(answers) - len(exc.indices)
                raise ClientError(
                    f"{len(exc.indices)} acknowledged records were not sealed and anchored in time ({exc}); they "
                    "are listed above as \"acknowledged, not sealed\": they are durably in the log, do not submit "
                    "them again; fetch their proofs later with notary proof --index N"
                    + (f"; the last {unsent} records were not submitted" if unsent else "")) from None
    if _print_answers(labels, answers, args.proof_dir):
        raise ClientError("some proofs were not written (see above); the records are in the log: fetch their "
                          "proofs with notary proof --index N")
    return 0


def _print_answers(labels: list[str], answers: list[dict], proof_dir: Path | None) -> int:
    """Print each record's index (and write its proof into ``proof_dir``); return how many proofs were not written."""
    unwritten = 0
    for label, answer in zip(labels, answers):
        line = f"{label}\tindex {answer['index']}"
        if proof_dir is not None:
            proof = answer.get("proof")
            path = proof_dir / f"{answer['index']}.tlog-proof"
            try:
                if not isinstance(proof, str):
                    raise ValueError("the notary's answer carries no proof for it")
                path.write_text(proof, encoding="utf-8")
                line += f"\tproof {path}"
            except (OSError, ValueError) as exc:
                unwritten += 1
                line += f"\tproof not written: {getattr(exc, 'strerror', None) or exc}"
        print(line)
    return unwritten


def _proof(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.line is not None:
        text = client.proof(digest=record_digest(os.fsencode(args.line)), size=args.size)
    elif args.digest is not None:
        text = client.proof(digest=parse_digest_hex(args.digest), size=args.size)
    else:
        text = client.proof(index=args.index, size=args.size)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
        print(f"wrote {args.output}")
    return 0


def _status(args: argparse.Namespace) -> int:
    client = _client(args)
    status, health = client.healthz()
    print("health:", "ok" if status == 200 else "FAILING: " + "; ".join(map(str, health.get("problems", []))))
    try:
        print("latest checkpoint:\n" + client.checkpoint())
    except ClientError as exc:
        print(f"latest checkpoint: none ({exc})")
    for line in client.metrics().splitlines():
        if line and not line.startswith("#"):
            print(" ", line)
    return 0 if status == 200 else 1


CHECK_STORE_EXIT_CODES = """exit status:
  0  OK: the log, its tree, its digest index and every seal agree
  1  the check could not run: log.db cannot be read as this user (run it as the daemon's user)
  2  usage: DATA_DIR is not a directory or holds no log.db
  9  a finding: the first thing that does not match is named (an entry or stored node that does not match,
     a damaged digest index, a seal whose root the log does not give, seals.db missing, altered or unreadable,
     log.db not a readable log store)"""


def _check_store(args: argparse.Namespace) -> int:
    from notary.cli_verify import EXIT_FINDINGS, CommandError
    from notary.verify import EXIT_ERROR, EXIT_USAGE

    log_db = args.data_dir / "log.db"
    if not args.data_dir.is_dir():
        raise CommandError(f"{args.data_dir} is not a directory: give the daemon's data_dir", EXIT_USAGE)
    if not log_db.exists():
        raise CommandError(f"{args.data_dir} holds no log.db: it is not a daemon's data_dir", EXIT_USAGE)
    if not os.access(log_db, os.R_OK) or not os.access(args.data_dir, os.R_OK | os.W_OK | os.X_OK):
        raise CommandError(f"{log_db} cannot be read as this user (SQLite also needs write access to "
                           f"{args.data_dir} for its -shm file): run the check as the daemon's user", EXIT_ERROR)
    try:
        return _check_store_files(args.data_dir)
    except NotaryError as exc:
        raise CommandError(f"FINDING: {exc}", EXIT_FINDINGS) from None


def _check_store_files(data_dir: Path) -> int:
    import sqlite3

    from notary.checkpoint import parse_signed_checkpoint
    from notary.store import LogStore

    with LogStore(data_dir / "log.db", readonly=True) as store:
        checked = store.verify()
        seals_path = data_dir / "seals.db"
        # Without seals.db nothing signed is checked: a log rewritten whole
        # (entries and nodes alike) would pass. The daemon creates it at its
        # first start, so its absence is a finding, not a reason to skip.
        if not seals_path.is_file():
            raise NotaryError(f"{seals_path} does not exist: no seal can be checked against the log (the seal "
                              "records were removed, or DATA_DIR is not a daemon's data_dir)")
        try:
            db = sqlite3.connect(f"file:{seals_path}?mode=ro", uri=True)
            try:
                seals = db.execute("SELECT tree_size, root_hash, checkpoint FROM seals ORDER BY tree_size").fetchall()
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise NotaryError(f"seal records {seals_path} cannot be read: {exc}") from None
        # A running daemon may have sealed past the size checked above; it
        # commits entries before it signs them, so the log, read after the
        # seals, holds every size they name.
        store.refresh()
        for size, root, checkpoint in seals:
            # The row's root is plain data; the signed checkpoint is what was
            # signed and published: both must name the same tree.
            try:
                signed = parse_signed_checkpoint(checkpoint).checkpoint
            except (NotaryError, TypeError) as exc:
                raise NotaryError(f"seal {size}: its signed checkpoint in seals.db is malformed: {exc}") from None
            if (signed.size, signed.root_hash) != (size, root):
                raise NotaryError(f"seal {size}: seals.db gives root {root.hex()}, but its signed checkpoint is of "
                                  f"tree size {signed.size} with root {signed.root_hash.hex()}: seals.db was altered")
            if size > store.size:
                raise NotaryError(f"seal {size} was signed, but the log has only {store.size} entries: truncated")
            if store.tree_hash(size) != root:
                raise NotaryError(f"seal {size} was signed with root {root.hex()}, the log now gives "
                                  f"{store.tree_hash(size).hex()}: the log was altered")
    print(f"OK: {checked} entries and their tree recomputed; {len(seals)} seals agree with the log")
    return 0
