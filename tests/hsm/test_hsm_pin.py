"""PIN sources: a file, an environment variable, a systemd credential; each
failure names the source and never the PIN."""

from __future__ import annotations

from pathlib import Path

import pytest

from hsm.errors import PinError
from hsm.pin import PinSource

SECRET = "1234:s3cret"  # CloudHSM form <user>:<password> reads like any PIN


def private_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_pin_from_file_drops_one_trailing_newline(tmp_path: Path) -> None:
    assert PinSource.parse(f"file:{private_file(tmp_path / 'pin', SECRET + chr(10))}").read() == SECRET


def test_pin_from_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTARY_TEST_PIN", SECRET)
    assert PinSource.parse("env:NOTARY_TEST_PIN").read() == SECRET


def test_pin_from_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    private_file(tmp_path / "hsm-pin", SECRET)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert PinSource.parse("credential:hsm-pin").read() == SECRET


@pytest.mark.parametrize(
    "source, message",
    [
        ("file:/nonexistent/pin", "PIN file /nonexistent/pin cannot be read: No such file or directory"),
        ("env:NOTARY_TEST_UNSET", "environment variable NOTARY_TEST_UNSET holding the PIN is not set"),
        ("credential:hsm-pin", "CREDENTIALS_DIRECTORY is not set"),
        ("1234", "has no kind"),
        ("pin:1234", "kind is unknown"),
        ("file:", "names no file"),
    ],
)
def test_unreadable_pin_source_names_the_source(source: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTARY_TEST_UNSET", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(PinError, match=message):
        PinSource.parse(source).read()


def test_world_readable_pin_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pin"
    path.write_text(SECRET)
    path.chmod(0o644)
    with pytest.raises(PinError, match="readable by every user") as info:
        PinSource("file", str(path)).read()
    assert SECRET not in str(info.value)


def test_empty_pin_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PinError, match="is empty"):
        PinSource("file", str(private_file(tmp_path / "pin", "\n"))).read()


@pytest.mark.parametrize("text", ["1234", SECRET])
def test_a_pin_given_in_place_of_its_source_is_never_echoed(text: str) -> None:
    """Before, the message quoted the source text: the whole PIN, or the part before its first ':'."""
    with pytest.raises(PinError, match="never the PIN itself") as info:
        PinSource.parse(text)
    assert not any(part in str(info.value) for part in text.split(":"))


@pytest.mark.parametrize("text", [SECRET + "\r\n", SECRET + "\r", SECRET + "\n\n", "1234\nabcd\n"])
def test_a_pin_file_with_a_line_break_inside_is_refused_before_any_login(tmp_path: Path, text: str) -> None:
    """A CRLF file would otherwise be tried as a PIN ending in CR: one failed login toward the HSM's lockout."""
    with pytest.raises(PinError, match="holds a line break") as info:
        PinSource("file", str(private_file(tmp_path / "pin", text))).read()
    assert SECRET not in str(info.value) and "abcd" not in str(info.value)
