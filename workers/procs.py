"""Child processes that do not outlive the process that started them."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` for `subprocess.Popen`: the child gets SIGTERM when its parent dies.

    Children started with `start_new_session=True` miss the terminal's signals, so without
    this a `kill -9` of the parent would leave them running. Linux only (prctl); on macOS
    there is no equivalent, so there a SIGKILLed parent still leaves its children behind
    (stop them by hand, e.g. `pkill -f 'pixelscene worker'`). Returns None there.
    The signal follows the thread that called Popen: start children from the main thread.
    """
    if sys.platform != "linux":
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec
