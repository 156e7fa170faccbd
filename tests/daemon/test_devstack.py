"""The dev stack (`make run` = `notary run --dev`): what it leaves behind when stopped or killed, re-runs on the
same directory, one stack per directory, dev.json, and its errors when something is missing or busy."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from anchors.errors import DevS3Error
from notary import devstack
from notary.client import HttpClient
from notary.devstack import DevStack, DevStackError, write_secret


@pytest.fixture
def base():
    # Short: unix socket paths are limited to 108 bytes.
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"nt-ds-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    yield path
    for process in processes_under(path):  # whatever a failed test left
        process.kill()
    shutil.rmtree(path, ignore_errors=True)


def processes_under(data_dir: Path) -> list[psutil.Process]:
    """The processes whose command line names ``data_dir`` (the stack's TSA, SeaweedFS, daemons), not this one."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        if process.pid != os.getpid() and str(data_dir) in " ".join(process.info["cmdline"] or ()):
            found.append(process)
    return found


def run_dev(data_dir: Path, listen: str = "127.0.0.1:0") -> subprocess.Popen:
    log = open(data_dir.parent / f"{data_dir.name}.out", "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "notary.cli", "run", "--dev", "--data-dir", str(data_dir),
                                 "--listen", listen], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        log.close()


def inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def wait_dev_json(data_dir: Path, process: subprocess.Popen, timeout: float = 180, *, old: int | None = None) -> dict:
    """The dev.json this run writes once its daemon answers (``old``: the inode of an earlier run's, not this one)."""
    path = data_dir / "dev.json"
    deadline = time.monotonic() + timeout
    while inode(path) in (None, old):
        output = (data_dir.parent / f"{data_dir.name}.out").read_text(errors="replace")
        assert process.poll() is None, f"notary run --dev exited with {process.returncode}:\n{output}"
        assert time.monotonic() < deadline, f"no dev.json after {timeout} s:\n{output}"
        time.sleep(0.2)
    return json.loads(path.read_text())


def assert_all_ended(processes: list[psutil.Process]) -> None:
    _, alive = psutil.wait_procs(processes, timeout=60)
    assert not alive, f"left running: {[p.info['cmdline'] for p in alive]}"


@pytest.mark.slow
def test_kill_9_of_make_run_leaves_nothing_running_and_a_rerun_on_the_same_dir_serves(base):
    base.mkdir()
    first = run_dev(base)
    info = wait_dev_json(base, first)
    assert not info["url"].endswith(":0"), "--listen HOST:0: dev.json names the port the daemon listens on"
    assert HttpClient(info["url"]).healthz()[0] in (200, 503)
    children = processes_under(base)
    assert {"dev-tsa", "mini"} <= {arg for p in children for arg in p.info["cmdline"]}

    first.kill()  # SIGKILL: no handler of ours runs
    first.wait()
    assert_all_ended(children)

    stale = inode(base / "dev.json")
    second = run_dev(base)
    try:
        info = wait_dev_json(base, second, old=stale)
        # This run's dev.json: its S3 keys are the ones SeaweedFS was started with this time.
        assert f"{info['s3']['access_key']}:{info['s3']['secret_key']}" == (base / "s3-credentials").read_text().strip()
        [answer] = HttpClient(info["url"], info["token"], timeout=60).submit([os.urandom(32)], wait_sealed=True)
        assert "proof" in answer
        children = processes_under(base)
    finally:
        second.send_signal(signal.SIGINT)  # Ctrl-C
        assert second.wait(120) == 0
    assert_all_ended(children)
    assert not (base / "dev.json").exists(), "dev.json describes a running stack"


@pytest.mark.slow
def test_sigterm_during_start_up_stops_what_was_started(base):
    base.mkdir()
    run = run_dev(base)
    deadline = time.monotonic() + 120
    while not any("dev-tsa" in p.info["cmdline"] for p in processes_under(base)):  # half-way: the TSA is up
        assert run.poll() is None and time.monotonic() < deadline, (base.parent / f"{base.name}.out").read_text()
        time.sleep(0.05)
    started = processes_under(base)
    run.send_signal(signal.SIGTERM)
    run.wait(120)
    assert_all_ended(started)
    assert not processes_under(base)


def test_a_second_stack_on_a_running_stacks_directory_is_refused_and_changes_nothing(stack):
    config = stack.config_path.read_bytes()
    credentials = (stack.data_dir / "s3-credentials").read_bytes()
    with pytest.raises(DevStackError, match="is in use by another dev stack"):
        DevStack(stack.data_dir, lock_wait=0.5).start()
    assert stack.tsa_process.poll() is None and stack.s3.process.poll() is None
    assert stack.config_path.read_bytes() == config
    assert (stack.data_dir / "s3-credentials").read_bytes() == credentials


def test_a_failure_after_the_services_started_stops_them_and_frees_the_directory(base, monkeypatch):
    base.mkdir()
    (base / "dev.json").write_text('{"url": "http://127.0.0.1:1", "token": "stale"}')

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(DevStack, "write_config", fail)  # the last step of start()
    dev = DevStack(base)
    with pytest.raises(OSError):
        dev.start()
    assert dev.tsa_process is None and dev.s3 is None
    assert not processes_under(base)
    assert not (base / "dev.json").exists(), "a dev.json of an earlier run must not outlive it"
    fd = os.open(dev.lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released
    finally:
        os.close(fd)


def test_a_first_start_stopped_between_generate_and_activate_is_completed(base, monkeypatch):
    from hsm.keyring import Keyring

    real_run = subprocess.run

    def interrupted(argv, *args, **kwargs):
        if "activate" in argv:
            raise KeyboardInterrupt  # Ctrl-C right after `keys generate`
        return real_run(argv, *args, **kwargs)

    base.mkdir()
    monkeypatch.setattr(devstack.subprocess, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        DevStack(base)._prepare_hsm()
    assert not Keyring.load(base / "keyring.json").active_keys()
    monkeypatch.setattr(devstack.subprocess, "run", real_run)
    DevStack(base)._prepare_hsm()
    assert [k.label for k in Keyring.load(base / "keyring.json").active_keys()] == ["dev-key-1"]


def test_missing_openssl_is_named_and_nothing_is_left_running(base, monkeypatch, tmp_path):
    path = tmp_path / "bin"
    path.mkdir()
    (path / "softhsm2-util").symlink_to(shutil.which("softhsm2-util"))  # everything the stack needs but openssl
    monkeypatch.setenv("PATH", str(path))
    with pytest.raises(DevStackError, match="openssl is not installed"):
        DevStack(base).start()
    assert not processes_under(base)


def test_a_busy_listen_address_is_one_sentence_before_anything_starts(base):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "notary.cli", "run", "--dev", "--data-dir", str(base),
                               "--listen", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith(f"notary run: cannot listen on 127.0.0.1:{port}: Address already in use")
    assert "\n" not in done.stderr.rstrip("\n")
    assert not base.exists()


def test_notary_run_reports_a_busy_http_port_in_one_sentence(daemon_factory):
    d = daemon_factory("busyport")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", d.port))
        busy.listen(1)
        d.start(wait=False)
        code = d.process.wait(120)
        d.process = None
    assert code == 1
    assert f"notary run: cannot listen on 127.0.0.1:{d.port} (listen.http): Address already in use" in d.log_tail()
    assert "Traceback" not in d.log_path.read_text()


def test_write_secret_makes_an_existing_file_private(tmp_path):
    path = tmp_path / "s3-credentials"
    path.write_text("old\n")
    path.chmod(0o644)
    write_secret(path, "new\n")
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text() == "new\n"


def test_dev_json_is_private_and_replaced_whole(stack, tmp_path):
    path = stack.data_dir / "dev.json"
    path.write_text("{}")
    path.chmod(0o644)
    before = path.stat().st_ino
    try:
        assert stack.write_dev_json("http://127.0.0.1:1") == path
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.stat().st_ino != before, "written beside and renamed over, never truncated in place"
        assert json.loads(path.read_text())["token"] == stack.token
        assert not list(stack.data_dir.glob(".dev.json.*"))
    finally:
        path.unlink()
        stack._dev_json = None


def test_dev_s3_refuses_a_put_to_a_missing_bucket_as_aws_does(stack):
    from botocore.exceptions import ClientError

    client = stack.s3.client()
    with pytest.raises(ClientError) as raised:
        client.put_object(Bucket="no-such-bucket-here", Key="k", Body=b"x")
    assert raised.value.response["Error"]["Code"] == "NoSuchBucket"
    assert "no-such-bucket-here" not in {b["Name"] for b in client.list_buckets()["Buckets"]}


def test_weed_failing_at_start_says_why(tmp_path):
    from anchors.devs3 import SeaweedS3

    with SeaweedS3(tmp_path) as running:
        with pytest.raises(DevS3Error, match=r"weed mini exited with status \d+ at start \(.+\); see"):
            SeaweedS3(tmp_path).start()  # the same store, in use
        assert running.process.poll() is None


def test_ports_taken_between_choice_and_bind_are_replaced(base, monkeypatch):
    """A free port is only free until someone binds it (other test sessions share this machine)."""
    import anchors.devs3

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)  # it accepts connections: a TSA "ready" check by connecting would be fooled
        taken = busy.getsockname()[1]
        real_free_port, real_free_ports = devstack.free_port, anchors.devs3.free_ports
        calls = []

        def free_port_taken_once():
            calls.append("tsa")
            return taken if calls.count("tsa") == 1 else real_free_port()

        def free_ports_taken_once(count):
            calls.append("s3")
            ports = real_free_ports(count)
            return [taken, *ports[1:]] if calls.count("s3") == 1 else ports

        monkeypatch.setattr(devstack, "free_port", free_port_taken_once)
        monkeypatch.setattr(anchors.devs3, "free_ports", free_ports_taken_once)
        with DevStack(base) as dev:
            assert calls.count("tsa") == 2 and calls.count("s3") == 2
            assert dev.tsa_port != taken and taken not in dev.s3.ports.values()
            assert dev.tsa_process.poll() is None
            dev.s3.client().head_bucket(Bucket=devstack.BUCKET)
            from anchors.tsa import TimestampClient, TsaEndpoint, load_roots, verify_token

            async def stamp():
                endpoint = TsaEndpoint(dev.tsa_url, load_roots(base / "tsa" / "root.pem"))
                async with TimestampClient([endpoint]) as client:
                    return await client.timestamp(b"checkpoint\n")

            import asyncio

            token = asyncio.run(stamp())
            verify_token(token.der, b"checkpoint\n", load_roots(base / "tsa" / "root.pem"))
