"""A real SoftHSM2 token for the hsm tests, in a temporary directory.

SoftHSM2 reads SOFTHSM2_CONF once per process, when the module is first
initialised, so the configuration is set for the whole test session before
any PKCS#11 call. ``notary`` runs the CLI in a child process, as a person
would, with the same configuration.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from hsm.algorithms import ECDSA_P256, ED25519
from hsm.devtoken import init_dev_token
from hsm.pin import PinSource
from hsm.token import SOFTHSM2_MODULE, Token, TokenConfig, TokenKey

TOKEN_LABEL = "notary-test"
ORIGIN = "example.com/notary-test"
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class DevHSM:
    dir: Path
    conf: Path
    pin_file: Path
    config: TokenConfig

    def write_conf(self, name: str, extra: str = "") -> Path:
        """Another softhsm2.conf over the same token directory."""
        path = self.dir / name
        path.write_text(f"directories.tokendir = {self.dir / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n{extra}")
        return path


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> DevHSM:
    base = tmp_path_factory.mktemp("softhsm")
    hsm = DevHSM(base, base / "softhsm2.conf", base / "user.pin", TokenConfig(SOFTHSM2_MODULE, TOKEN_LABEL, PinSource("file", str(base / "user.pin"))))
    hsm.write_conf("softhsm2.conf")
    saved = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(hsm.conf)
    init_dev_token(hsm.conf, TOKEN_LABEL, hsm.pin_file)
    yield hsm
    if saved is None:
        del os.environ["SOFTHSM2_CONF"]
    else:
        os.environ["SOFTHSM2_CONF"] = saved


@pytest.fixture(scope="session")
def token(softhsm: DevHSM) -> Token:
    """The session's one logged-in session with the test token (a process logs in once per token)."""
    with Token.open(softhsm.config, rw=True) as token:
        yield token


@pytest.fixture(scope="session")
def ecdsa_key(token: Token) -> TokenKey:
    return token.generate(ECDSA_P256, "test-ecdsa")


@pytest.fixture(scope="session")
def ed25519_key(token: Token) -> TokenKey:
    return token.generate(ED25519, "test-ed25519")


@pytest.fixture(params=["ecdsa", "ed25519"])
def key(request: pytest.FixtureRequest) -> TokenKey:
    return request.getfixturevalue(f"{request.param}_key")


@pytest.fixture
def notary(softhsm: DevHSM, tmp_path: Path):
    """Run ``notary ARGS`` in a child process from ``tmp_path``; returns the CompletedProcess."""

    def run(*args: str, conf: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        child_env = dict(os.environ, SOFTHSM2_CONF=str(conf or softhsm.conf), PYTHONPATH=str(REPO), **(env or {}))
        return subprocess.run(
            [sys.executable, "-m", "notary.cli", *args],
            cwd=tmp_path, env=child_env, capture_output=True, text=True, timeout=120, check=False,
        )

    return run
