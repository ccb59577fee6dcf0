"""Small helpers shared by test modules (importable because tests/ is on sys.path via tests/conftest.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path


def wait_until(predicate: Callable[[], object], timeout_s: float, interval_s: float = 0.05):
    """Poll ``predicate`` until it returns something truthy or ``timeout_s`` passes; returns its last value
    (so ``assert wait_until(...)`` reads as the condition)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval_s)


def wait_for(predicate: Callable[[], object], timeout_s: float, interval_s: float = 0.1, what: str = "condition"):
    """:func:`wait_until`, raising AssertionError (naming ``what``) when the condition was not met in time."""
    value = wait_until(predicate, timeout_s, interval_s)
    if not value:
        raise AssertionError(f"{what} not met within {timeout_s} s")
    return value


class Running:
    """A stage loop (``target.run(stop_event)``) on a thread; ``halt()`` (or leaving the block) stops and joins it."""

    def __init__(self, target):
        self.target = target
        self.stop = threading.Event()
        self.thread = threading.Thread(target=target.run, args=(self.stop,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def halt(self):
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()

    def __exit__(self, *exc):
        self.halt()


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux /proc)."""
    out, frontier = set(), {pid}
    while frontier:
        children = set()
        for p in frontier:
            try:
                with open(f"/proc/{p}/task/{p}/children") as fh:
                    children |= {int(c) for c in fh.read().split()}
            except OSError:
                pass
        out |= children
        frontier = children
    return out


def alive(pids) -> dict[int, str]:
    """The live (non-zombie) processes among ``pids``, with their command lines."""
    out = {}
    for p in pids:
        try:
            if "zombie" in Path(f"/proc/{p}/status").read_text().lower():
                continue
            out[p] = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200]
        except OSError:
            continue
    return out
