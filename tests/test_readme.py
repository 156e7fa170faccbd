"""The README's code, as a newcomer runs it: from a fresh clone, in its own directory."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_python_example_runs_in_an_empty_directory(tmp_path):
    section = README.read_text().split("## Using the log from Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(README.parent), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
