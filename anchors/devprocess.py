"""Child processes of the development tools that end with the process that started them.

A dev stack's TSA and SeaweedFS run in their own sessions (a Ctrl-C meant for
the daemon must not stop them before it has drained), so nothing stops them
when their parent is killed (``kill -9``, an OOM kill, a SIGTERM before the
daemon's handlers are in place): they would outlive it, holding their ports
and SeaweedFS's store, and the next start on the same directory would fail.
``die_with_parent`` asks the kernel to send the child SIGTERM when its parent
dies (Linux PR_SET_PDEATHSIG), set in a small ``python -c`` step that then
execs the real program; the setting survives execve.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence

_SCRIPT = """\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)  # the parent died before the line above: do not start
os.execv(sys.argv[2], sys.argv[2:])
"""


def die_with_parent(argv: Sequence[str]) -> list[str]:
    """``argv`` (``argv[0]`` an absolute path) wrapped so that the child gets SIGTERM when this process dies.

    PR_SET_PDEATHSIG fires when the *thread* that started the child ends, so
    the wrapping is only done from the main thread, which lasts as long as the
    process; from another thread ``argv`` is returned unchanged.
    """
    if threading.current_thread() is not threading.main_thread() or not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-I", "-c", _SCRIPT, str(os.getpid()), *argv]
