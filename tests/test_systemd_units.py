"""config/*.service: what systemd restarts, and where each unit may write."""

from __future__ import annotations

from pathlib import Path

CONFIG = Path(__file__).resolve().parent.parent / "config"


def settings(name: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (CONFIG / name).read_text().replace("\\\n", " ").splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_daemon_is_never_restarted_into_another_wrong_pin_login():
    """Token.open logs in once and never retries a wrong PIN (repeated failures lock the HSM user); systemd must
    not retry it either. Nor a bad configuration, nor a store that contradicts a signed checkpoint."""
    from hsm.errors import PinError
    from notary.config import ConfigError
    from notary.sealer import InconsistentStoreError

    unit = settings("merkle-notary.service")
    assert unit["Restart"] == ["on-failure"]
    prevented = {int(code) for value in unit["RestartPreventExitStatus"] for code in value.split()}
    assert {PinError.exit_code, ConfigError.exit_code, InconsistentStoreError.exit_code} <= prevented


def test_the_evidence_unit_can_write_its_packs_and_nothing_else_of_the_data_directory():
    """Under ProtectSystem=strict, every StateDirectory= is writable: naming the daemon's data directory there
    would open log.db, seals.db and keyring.json to a job that only writes packs."""
    unit = settings("merkle-notary-evidence.service")
    daemon = settings("merkle-notary.service")
    assert unit["ProtectSystem"] == ["strict"]
    writable = [Path("/var/lib") / d for value in unit.get("StateDirectory", []) for d in value.split()]
    writable += [Path(p.lstrip("-")) for value in unit.get("ReadWritePaths", []) for p in value.split()]
    data_dir = Path("/var/lib") / daemon["StateDirectory"][0]
    out = Path(next(a for a in unit["ExecStart"][0].split() if a.startswith("/var/lib/"))).parent
    assert out != data_dir and writable == [out]
