"""Small helpers shared by test modules (importable because tests/ is on sys.path via tests/conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


def wait_for(predicate: Callable[[], object], timeout_s: float, interval_s: float = 0.1, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout_s`` passes (AssertionError)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s} s")
        time.sleep(interval_s)


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
