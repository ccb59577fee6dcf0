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


def cpu_seconds(pid: int | None = None, *, tid: int | None = None, descendants: bool = False) -> float:
    """User + system CPU seconds of a process (``pid`` None: this one), one of its threads (``tid``, a native thread
    id), or the process and every live descendant (``descendants``). 0.0 for a process that is gone; Linux
    ``/proc`` only (0.0 elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    base = f"/proc/{pid or 'self'}" + (f"/task/{tid}" if tid else "")
    try:
        fields = open(f"{base}/stat", encoding="ascii", errors="replace").read().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14 and 15 of stat)
    except (OSError, IndexError, ValueError):
        return 0.0
    if descendants and tid is None:
        for child in _children(pid or os.getpid()):
            total += cpu_seconds(child, descendants=True)
    return total


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for task in tasks:
        try:
            out += [int(c) for c in open(f"/proc/{pid}/task/{task}/children", encoding="ascii").read().split()]
        except (OSError, ValueError):
            continue
    return out


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s ``model name``), else what :mod:`platform` says."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
