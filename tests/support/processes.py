"""Waiting on real processes and servers without sleeping on a guess: poll a condition
until it holds (or a generous deadline says the test is broken)."""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Callable

_seen: dict[int, bytes] = {}


def wait_for(
    condition: Callable[[], bool],
    what: str,
    process: subprocess.Popen[str] | None = None,
    timeout: float = 60,
) -> None:
    """Until ``condition()``; fails naming ``what`` (or ``process`` exiting before it)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        if process is not None and process.poll() is not None:
            _, rest = process.communicate()
            seen = _seen.get(process.pid, b"").decode(errors="replace")
            raise AssertionError(f"exited {process.returncode} before {what}: {seen}{rest}")
        time.sleep(0.05)


def stderr_so_far(process: subprocess.Popen[str]) -> bytes:
    """What ``process`` has written to stderr so far, without waiting for more (what is
    read here is not seen again by ``communicate``)."""
    assert process.stderr is not None
    ready, _, _ = select.select([process.stderr], [], [], 0)
    if ready:
        _seen[process.pid] = _seen.get(process.pid, b"") + os.read(process.stderr.fileno(), 65536)
    return _seen.get(process.pid, b"")
