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
        ("s3.bucket", "s3://notary-seals", r"^s3.bucket: must be the bucket's name alone .*, got 's3://notary-seals'"),
        ("s3.bucket", "notary-seals/log1/", r"^s3.bucket: must be the bucket's name alone"),
        ("s3.bucket", "", r"^s3.bucket: must be the bucket's name alone"),
        ("s3.region", "EU West 1", r"^s3.region: must be a region name, e.g. 'eu-west-1', got 'EU West 1'"),
        ("s3.retention_days", -1, r"^s3.retention_days: must be a number of days > 0"),
        ("sources.http.billing-api.token_sha256", "secret-token", r"token_sha256: must be the token's SHA-256"),
        ("sources.unix.webapp.uid", -5, r"^sources.unix.webapp.uid: must be a user id from 0 to 4294967294"),
        # (uid_t) -1 is no user; a larger number is not a uid at all.
        ("sources.unix.webapp.uid", 2**32 - 1, r"^sources.unix.webapp.uid: must be a user id from 0 to 4294967294"),
        # TOML writes infinities: each would switch off what it bounds (never seal by age, never fail /healthz,
        # never give up on a TSA, drain forever on SIGTERM).
        ("batch.max_age", float("inf"), r"^batch.max_age: must be a number of seconds > 0 \(a finite number\), got inf"),
        ("limits.anchor_overdue", float("inf"), r"^limits.anchor_overdue: .*finite.*got inf"),
        ("tsa.0.timeout", float("inf"), r"^tsa\[0\].timeout: .*finite.*got inf"),
        ("shutdown_timeout", float("inf"), r"^shutdown_timeout: .*finite.*got inf"),
        ("limits.anchor_overdue", float("nan"), r"^limits.anchor_overdue: must be seconds > 0"),
        # An unbracketed IPv6 address is ambiguous; '²' is a digit to str.isdigit() but not to int().
        ("listen.http", "::1:8640", r"^listen.http: write an IPv6 address in brackets"),
        ("listen.http", "[::1:8640", r"^listen.http: '\[::1' is not an IPv6 address in brackets"),
        ("listen.http", "[nohost]:8640", r"^listen.http: '\[nohost\]' is not an IPv6 address in brackets"),
        ("listen.http", "127.0.0.1:\u00b2", r"^listen.http: must be HOST:PORT"),
        ("listen.http", "127.0.0.1:65536", r"^listen.http: must be HOST:PORT"),
        ("listen.http", " :8640", r"^listen.http: the host holds a space"),
        ("listen.unix", "/run/" + "x" * 103, r"^listen.unix: /run/x+ is 108 bytes, more than the 107"),
        # A PIN source that names nothing fails at start with the key named, not later inside the HSM code.
        ("hsm.pin", "file:", r"^hsm.pin: file: names nothing"),
        ("hsm.pin", "env:", r"^hsm.pin: env: names nothing"),
        ("hsm.pin", "credential:../hsm-pin", r"^hsm.pin: credential name '../hsm-pin' is not a file name"),
        ("tsa.0.url", "https://", r"^tsa\[0\].url: must be an http\(s\) URL"),
        ("tsa.0.policy", "\u0661.\u0662", r"^tsa\[0\].policy: must be an OID"),
        ("s3.endpoint", "http:///path", r"^s3.endpoint: must be an http\(s\) URL"),
        # COMPLIANCE retention cannot be shortened: a typo of one digit too many is refused, and a
        # retention too long for a date no longer fails only at the first publish.
        ("s3.retention_days", 36501, r"^s3.retention_days: must be a number of days > 0 and at most 36500"),
        ("s3.retention_days", 10**12, r"^s3.retention_days: must be a number of days > 0 and at most 36500"),
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


def test_ipv6_listen_address_in_brackets():
    raw = mutate("listen.http", "[::1]:8640")
    assert parse_config(raw, base=EXAMPLE.parent).http_listen == ("::1", 8640)


@pytest.mark.parametrize("path,value", [
    ("hsm.pin", "12345678"),
    ("hsm.pin", 12345678),
    ("sources.http.billing-api.token_sha256", "the-bearer-token-itself"),
])
def test_errors_never_repeat_a_secret_put_where_its_source_or_hash_belongs(path, value):
    """The message goes to stderr and, on SIGHUP, to the journal: a PIN or token pasted in by mistake stays out."""
    with pytest.raises(ConfigError) as caught:
        parse_config(mutate(path, value), base=EXAMPLE.parent)
    assert str(caught.value).startswith(path + ":")
    assert str(value) not in str(caught.value)


def test_a_relative_pin_file_is_relative_to_the_configuration_file(tmp_path):
    """As every other path of the file: under systemd the working directory is /, not the file's directory."""
    raw = mutate("hsm.pin", "file:secrets/hsm-pin")
    assert parse_config(raw, base=tmp_path).hsm.pin == f"file:{tmp_path.resolve() / 'secrets' / 'hsm-pin'}"
    raw = mutate("hsm.pin", "file:/etc/merkle-notary/hsm-pin")
    assert parse_config(raw, base=tmp_path).hsm.pin == "file:/etc/merkle-notary/hsm-pin"


@pytest.mark.parametrize("kind", ["http", "unix"])
def test_no_producer_may_take_the_source_of_the_daemons_key_events(kind):
    """Entries of source notary/keyring attest the keyring's history (docs/KEYS.md): a producer must not write them."""
    raw = example()
    raw["sources"][kind]["notary/keyring"] = {"http": {"token_sha256": "1" * 64}, "unix": {"uid": 4242}}[kind]
    with pytest.raises(ConfigError, match=rf"^sources.{kind}.notary/keyring: 'notary/keyring' is the source of the daemon's own key events"):
        parse_config(raw, base=EXAMPLE.parent)


def _write(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_s3_credentials_file_is_read_only_when_other_users_cannot_read_it(tmp_path):
    from notary.config import read_s3_credentials

    good = _write(tmp_path / "s3", "AKIDEXAMPLE:wJalrXUtnFEMI\n", 0o640)
    assert read_s3_credentials(good) == ("AKIDEXAMPLE", "wJalrXUtnFEMI")
    with pytest.raises(ConfigError, match=r"^s3.credentials_file: .* is readable by every user"):
        read_s3_credentials(_write(tmp_path / "open", "AKIDEXAMPLE:wJalrXUtnFEMI\n", 0o644))
    with pytest.raises(ConfigError, match=r"^s3.credentials_file: .* must hold one line access_key_id:secret_access_key"):
        read_s3_credentials(_write(tmp_path / "bad", "wJalrXUtnFEMI\n", 0o600))
    with pytest.raises(ConfigError, match=r"^s3.credentials_file: .* cannot be read: No such file"):
        read_s3_credentials(tmp_path / "missing")


@pytest.mark.parametrize(
    "path, value, changed",
    [
        ("hsm.keyring", "/srv/other-keyring.json", ["hsm.keyring"]),
        ("hsm.token_label", "another-token", ["hsm.token_label"]),
        ("listen.http", "127.0.0.1:9000", ["listen.http"]),
        ("batch.max_age", 2.5, ["batch.max_age"]),
        ("tsa.0.timeout", 3, ["tsa"]),
        ("s3.prefix", "log2/", ["s3.prefix"]),
        ("limits.max_pending_entries", 300000, ["limits.max_pending_entries"]),
        ("shutdown_timeout", 5, ["shutdown_timeout"]),
        ("sources.unix.webapp.uid", 1002, ["sources.unix"]),
    ],
)
def test_changed_keys_are_named_as_the_file_writes_them(path, value, changed):
    """What a SIGHUP reload names in its warning about the keys only a restart applies."""
    from notary.config import changed_keys

    running = parse_config(example(), base=EXAMPLE.parent)
    assert changed_keys(running, parse_config(mutate(path, value), base=EXAMPLE.parent)) == changed
    assert changed_keys(running, parse_config(example(), base=EXAMPLE.parent)) == []
