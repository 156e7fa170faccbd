"""Development tokens: a SoftHSM2 token under a data directory, for
development and tests only. SoftHSM2 keeps its keys in ordinary files, so
such a token protects nothing; production uses a real HSM.

``softhsm2-util`` asks for the PINs on its terminal; we give it a
pseudo-terminal and type them there, so that no PIN appears on a command line.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path

from hsm.errors import HSMError, TokenError
from hsm.pin import PinSource

SOFTHSM2_UTIL = "softhsm2-util"

_TOKENDIR_RE = re.compile(r"^\s*directories\.tokendir\s*=\s*(\S.*?)\s*$", re.MULTILINE)
_LABEL_RE = re.compile(r"^\s*Label:\s*(.*?)\s*$", re.MULTILINE)


def token_dir(conf: Path) -> Path:
    """The ``directories.tokendir`` of a softhsm2.conf (relative to the current directory, as SoftHSM2 reads it)."""
    try:
        text = conf.read_text()
    except OSError as exc:
        raise HSMError(f"SoftHSM2 configuration {conf} cannot be read: {exc.strerror}; fix the path") from None
    match = _TOKENDIR_RE.search(text)
    if not match:
        raise HSMError(f"SoftHSM2 configuration {conf} has no directories.tokendir line; add one")
    return Path(match.group(1))


def init_dev_token(conf: Path, label: str, pin_file: Path) -> None:
    """Create a SoftHSM2 token labelled ``label`` in the token directory of ``conf``.

    The user PIN is read from ``pin_file``, which is created with a random
    PIN (mode 0600) if it does not exist. The security officer PIN is random
    and not kept: to start over, delete the token directory.
    """
    if shutil.which(SOFTHSM2_UTIL) is None:
        raise HSMError(f"{SOFTHSM2_UTIL} is not installed; install the Debian package softhsm2")
    env = dict(os.environ, SOFTHSM2_CONF=str(conf.resolve()))
    token_dir(conf).mkdir(parents=True, exist_ok=True)
    if label in _labels(env):
        raise TokenError(f"a token labelled {label!r} already exists for {conf}; use it, or choose another label")
    if not pin_file.exists():
        pin_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(pin_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(16) + "\n")
    pin = PinSource("file", str(pin_file)).read()
    so_pin = secrets.token_hex(16)
    answers = f"{so_pin}\n{so_pin}\n{pin}\n{pin}\n".encode()
    result = _run_on_terminal([SOFTHSM2_UTIL, "--init-token", "--free", "--label", label], answers, env)
    if result.returncode != 0:
        output = result.stdout.decode(errors="replace").replace(pin, "****").replace(so_pin, "****").strip()
        raise TokenError(f"{SOFTHSM2_UTIL} could not create token {label!r}: {output.splitlines()[-1] if output else 'no output'}")


def _labels(env: dict[str, str]) -> list[str]:
    result = subprocess.run([SOFTHSM2_UTIL, "--show-slots"], env=env, capture_output=True, text=True, check=False)
    return _LABEL_RE.findall(result.stdout)


def _run_on_terminal(argv: list[str], answers: bytes, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` with a pseudo-terminal as its stdin, pre-filled with ``answers``."""
    controller, terminal = os.openpty()
    try:
        os.write(controller, answers)
        return subprocess.run(argv, stdin=terminal, capture_output=True, env=env, timeout=60, check=False)
    finally:
        os.close(terminal)
        os.close(controller)
