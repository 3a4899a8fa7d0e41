"""At a terminal: one confirmation that shows the blast radius; 'no' changes nothing."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time

from tests.conftest import MODELS, NON_US, US, Workspace, killswitch_command


def _at_terminal(ws: Workspace, answer: str, *args: str) -> tuple[int, str]:
    """Run killswitch with a pseudo-terminal for stdin and stderr; type ``answer``."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [killswitch_command(), "--inventory", str(ws.inventory), "--actor", "alice", *args],
        stdin=follower,
        stderr=follower,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    os.close(follower)
    screen = b""
    deadline = time.monotonic() + 60
    answered = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
        if not answered and b"now? [y/N]" in screen:
            os.write(leader, answer.encode() + b"\n")
            answered = True
        if process.poll() is not None and not ready:
            break
    process.wait(timeout=60)
    os.close(leader)
    assert process.stdout is not None
    process.stdout.close()
    return process.returncode, screen.decode(errors="replace")


def test_terminal_prompt_shows_blast_radius_and_yes_applies(ws: Workspace) -> None:
    code, screen = _at_terminal(ws, "y", "revoke", "-s", "outside-us", "--reason", "order")

    assert "blast radius: 8 targets: 2 model(s) (fable-5, mythos-5) in 4 region(s)" in screen
    assert "revoke now? [y/N]" in screen
    assert code == 0
    assert all(ws.posture(r, m) == "revoked" for r in NON_US for m in MODELS)
    assert all(ws.flag(r, m) is None for r in US for m in MODELS)


def test_terminal_prompt_answered_no_changes_nothing(ws: Workspace) -> None:
    code, screen = _at_terminal(ws, "n", "revoke", "-m", "all", "--reason", "order")

    assert code == 64
    assert "nothing was changed" in screen
    assert all(ws.flag(r, m) is None for r in US + NON_US for m in MODELS)
