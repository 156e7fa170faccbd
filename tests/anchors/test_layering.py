"""anchors/ is an adapter the daemon composes; it never reaches back into notary/."""

from __future__ import annotations

import subprocess
import sys


def test_anchors_never_imports_notary():
    code = (
        "import sys, anchors.errors, anchors.tsa, anchors.s3, anchors.devtsa, anchors.devs3\n"
        "leaked = sorted(m for m in sys.modules if m == 'notary' or m.startswith('notary.'))\n"
        "assert not leaked, leaked\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
