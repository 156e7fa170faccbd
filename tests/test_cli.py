"""The command line's own behaviour, whatever the command: how it ends when its reader goes away."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# A command module with two commands: one prints far more than a pipe holds,
# one fails with a broken pipe of its own (as a dead socket to the daemon would).
_COMMANDS = textwrap.dedent('''
    import os, socket

    def register(subparsers):
        subparsers.add_parser("spew").set_defaults(handler=spew)
        subparsers.add_parser("dead-socket").set_defaults(handler=dead_socket)

    def spew(args):
        for i in range(200_000):
            print("line", i)
        return 0

    def dead_socket(args):
        print("before the socket")
        a, b = socket.socketpair()
        b.close()
        for _ in range(100):
            a.send(b"x" * 65536)  # raises BrokenPipeError (EPIPE) once the kernel sees the peer gone
        return 0
''')

_RUNNER = "import sys; from notary import cli; cli.COMMAND_MODULES = ('spewcmd',); sys.exit(cli.main(sys.argv[1:]))"


@pytest.fixture
def commands(tmp_path):
    (tmp_path / "spewcmd.py").write_text(_COMMANDS)
    return tmp_path


def _start(commands, command: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _RUNNER, command], cwd=commands,
                            env={"PYTHONPATH": str(commands), "PATH": "/usr/bin:/bin"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_reader_that_stops_early_ends_the_command_quietly(commands):
    # `notary status | head -1`: the reader takes one line and closes the pipe.
    process = _start(commands, "spew")
    assert process.stdout.readline() == b"line 0\n"
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141, stderr  # as a shell reports death by SIGPIPE
    assert stderr == ""  # no traceback, no "Exception ignored" at exit


def test_a_broken_pipe_that_is_not_stdout_stays_a_loud_failure(commands):
    process = _start(commands, "dead-socket")
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert stdout == b"before the socket\n"
    assert "BrokenPipeError" in stderr.decode() and "Traceback" in stderr.decode()


def test_the_command_line_starts_without_the_http_and_s3_libraries():
    """Every command's parser is built at start; aiohttp and boto3 (half a second to import) wait for the commands that use them."""
    code = textwrap.dedent("""
        import sys
        from notary.cli import build_parser
        build_parser().parse_args(["verify", "proof.txt", "--vkey", "k"])
        print(" ".join(m for m in ("aiohttp", "boto3") if m in sys.modules) or "-")
        from notary.client import AsyncHttpClient, HttpClient, NotaryHandler  # still there, loaded on first use
        assert AsyncHttpClient.__module__ == "notary.client.aio" and NotaryHandler.__module__ == "notary.client.handler"
        print(" ".join(m for m in ("aiohttp", "boto3") if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["-", "aiohttp"]


def test_verify_chain_without_keys_names_its_own_options(tmp_path, capsys):
    from notary.cli import main

    chain = tmp_path / "chain"
    chain.write_text("x\n")
    assert main(["verify-chain", str(chain), "--digest", "00" * 32, "--tsa-roots", str(tmp_path / "roots.pem")]) == 2
    assert "give --host-keyring FILE or --host-vkey KEY" in capsys.readouterr().err  # not --keyring / --vkey
