"""Process hygiene shared by the supervisor and the embedded servers: no child outlives its parent."""

from __future__ import annotations

import os
import signal


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux ``PR_SET_PDEATHSIG``;
    a no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def own_session_dying_with_parent() -> None:
    """``preexec_fn`` for server subprocesses: a session of their own (Ctrl-C in a terminal reaches only the
    runner, which stops them in order) and SIGTERM when the parent dies."""
    os.setsid()
    die_with_parent(signal.SIGTERM)
