"""notary.config: the shipped example parses, and every mistake names its key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from notary.config import ConfigError, load_config, parse_config, token_hash

EXAMPLE = Path(__file__).parent.parent / "config" / "notary.example.toml"


def example() -> dict:
    return tomllib.loads(EXAMPLE.read_text())


def test_example_configuration_is_valid():
    cfg = load_config(EXAMPLE)
    assert cfg.origin == "notary.example.com/log1"
    assert cfg.http_listen == ("127.0.0.1", 8640)
    assert cfg.unix_peers == {1001: "webapp"}
    assert list(cfg.http_tokens.values()) == ["billing-api"]
    assert cfg.s3.prefix == "log1/" and cfg.s3.retention_days == 2557
    assert cfg.tsas[0].timeout == 10.0


def test_token_hash_is_sha256_of_the_token():
    assert token_hash("abc").hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def mutate(path: str, value):
    raw = example()
    *parents, last = path.split(".")
    node = raw
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return raw


@pytest.mark.parametrize(
    "path,value,message",
    [
        ("origin", "my log", r"^origin: .*space"),
        ("origin", None, r"^origin: missing"),
        ("batch.max_age", "soon", r"^batch.max_age: must be a number of seconds > 0, got 'soon'"),
        ("batch.max_entries", 0, r"^batch.max_entries: must be an integer > 0"),
        ("batch.max_entries", True, r"^batch.max_entries: must be an integer > 0, got True"),
        ("batch.max_size", 5, r"^batch.max_size: unknown key \(a typo\?\)"),
        ("listen.http", "8080", r"^listen.http: must be HOST:PORT"),
        ("hsm.pin", "1234", r"^hsm.pin: must be file:<path>, env:<NAME> or credential:<name> \(never the PIN itself\)"),
        ("hsm.keyring", None, r"^hsm.keyring: missing"),
        ("tsa", [], r"^tsa: must be a non-empty array"),
        ("s3.prefix", "log1", r"^s3.prefix: must be empty or end with '/'"),
        ("s3.retention_days", -1, r"^s3.retention_days: must be a number of days > 0"),
        ("sources.http.billing-api.token_sha256", "secret-token", r"token_sha256: must be the token's SHA-256"),
        ("sources.unix.webapp.uid", -5, r"^sources.unix.webapp.uid: must be a user id >= 0"),
    ],
)
def test_errors_name_the_key(path, value, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(mutate(path, value), base=EXAMPLE.parent)


def test_no_listener_is_an_error():
    raw = example()
    raw["listen"] = {}
    with pytest.raises(ConfigError, match="give listen.http, listen.unix or both"):
        parse_config(raw)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("origin = ")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(bad)



def test_a_request_limit_above_the_pending_limit_is_refused_naming_both_keys():
    """Such a request could never be accepted: the producer would be told to retry it forever."""
    raw = example()
    raw["limits"].update(max_request_digests=1500, max_pending_entries=1000)
    with pytest.raises(ConfigError, match=r"^limits.max_request_digests \(1500\) is more than limits.max_pending_entries \(1000\)"):
        parse_config(raw, base=EXAMPLE.parent)
    raw["limits"]["max_pending_entries"] = 1500
    assert parse_config(raw, base=EXAMPLE.parent).limits.max_pending_entries == 1500


def test_wait_sealed_bounds_are_checked_and_default_when_absent():
    raw = example()
    cfg = parse_config(raw, base=EXAMPLE.parent)
    assert (cfg.limits.max_sealed_waiters, cfg.limits.wait_sealed_timeout) == (1000, 30.0)
    for key, bad in (("wait_sealed_timeout", 0), ("wait_sealed_timeout", float("nan")), ("wait_sealed_timeout", 7200),
                     ("wait_sealed_timeout", True), ("max_sealed_waiters", 0), ("max_sealed_waiters", 2.5)):
        broken = example()
        broken["limits"][key] = bad
        with pytest.raises(ConfigError, match=rf"^limits.{key}: must be"):
            parse_config(broken, base=EXAMPLE.parent)
    for key in ("wait_sealed_timeout", "max_sealed_waiters"):
        del raw["limits"][key]
    cfg = parse_config(raw, base=EXAMPLE.parent)
    assert (cfg.limits.max_sealed_waiters, cfg.limits.wait_sealed_timeout) == (1_000, 30.0)
