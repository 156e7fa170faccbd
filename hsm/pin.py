"""Where the token's user PIN comes from: a file, an environment variable, or
a systemd credential. Never the command line, and never in a message or log.

A source is written ``file:<path>``, ``env:<VARIABLE NAME>`` or
``credential:<name>`` (read from ``$CREDENTIALS_DIRECTORY/<name>``, which
systemd sets for ``LoadCredential=``/``SetCredentialEncrypted=``). The PIN is
the source's content with one trailing newline removed. For AWS CloudHSM
the PIN has the form ``<crypto user>:<password>``; nothing here depends on it.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from hsm.errors import PinError

KINDS = ("file", "env", "credential")

# A PIN is short; a larger file is a wrong path, not a PIN.
MAX_PIN_BYTES = 1024


@dataclass(frozen=True)
class PinSource:
    """A place to read the PIN from; ``str()`` describes it without the PIN."""

    kind: str  # one of KINDS
    ref: str  # the path, the variable name, or the credential name

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            # Not echoed: what precedes the first ':' may be part of a PIN given in place of its source.
            raise PinError(f"PIN source kind is unknown; use one of {', '.join(KINDS)} (never the PIN itself)")
        if not self.ref:
            raise PinError(f"PIN source {self.kind}: names no {self._what()}; give one after '{self.kind}:'")

    @classmethod
    def parse(cls, text: str) -> PinSource:
        """Parse ``file:<path>``, ``env:<NAME>`` or ``credential:<name>``."""
        kind, sep, ref = text.partition(":")
        if not sep:
            raise PinError("PIN source has no kind; write file:<path>, env:<NAME> or credential:<name> "
                           "(never the PIN itself)")
        return cls(kind, ref)

    def __str__(self) -> str:
        return f"{self.kind}:{self.ref}"

    def _what(self) -> str:
        return {"file": "file", "env": "environment variable", "credential": "systemd credential"}[self.kind]

    def read(self) -> str:
        """The PIN. Raises ``PinError`` naming the source (never the PIN) if it cannot be read."""
        if self.kind == "env":
            value = os.environ.get(self.ref)
            if value is None:
                raise PinError(f"environment variable {self.ref} holding the PIN is not set; export it or use another PIN source")
            return self._checked(value)
        if self.kind == "credential":
            directory = os.environ.get("CREDENTIALS_DIRECTORY")
            if not directory:
                raise PinError(
                    f"PIN credential {self.ref!r} cannot be read: CREDENTIALS_DIRECTORY is not set "
                    "(run under systemd with LoadCredential=, or use another PIN source)"
                )
            return self._read_file(Path(directory) / self.ref)
        return self._read_file(Path(self.ref))

    def _read_file(self, path: Path) -> str:
        try:
            with path.open("rb") as f:
                mode = os.fstat(f.fileno()).st_mode
                data = f.read(MAX_PIN_BYTES + 1)
        except OSError as exc:
            raise PinError(f"PIN {self._what()} {path} cannot be read: {exc.strerror}; fix the path or its permissions") from None
        if mode & stat.S_IROTH:
            raise PinError(f"PIN {self._what()} {path} is readable by every user; restrict it (chmod o-r) before use")
        if len(data) > MAX_PIN_BYTES:
            raise PinError(f"PIN {self._what()} {path} is larger than {MAX_PIN_BYTES} bytes, so it does not hold a PIN; check the path")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise PinError(f"PIN {self._what()} {path} is not UTF-8 text; check the path") from None
        return self._checked(text)

    def _checked(self, value: str) -> str:
        if value.endswith("\n"):
            value = value[:-1]
        if not value:
            raise PinError(f"PIN source {self} is empty; put the PIN in it")
        if "\r" in value or "\n" in value:
            # Logging in with it would be one failed login toward locking the HSM user: refuse first.
            raise PinError(f"PIN source {self} holds a line break (a file saved with CRLF line ends, or more "
                           "than one line); a PIN is one line: rewrite it with a single LF at most")
        return value
