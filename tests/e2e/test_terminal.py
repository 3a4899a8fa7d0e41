"""At a terminal: one confirmation that shows the blast radius; 'no' changes nothing; a
bar per phase while an op runs, then a report that fits the terminal's width."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time

from tests.conftest import MODELS, NON_US, US, Workspace, killswitch_command
from tests.support.faultproxy import FaultProxy, aws_error, for_region

ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
COLOR = re.compile(r"\x1b\[[0-9;]*m")


def _at_terminal(
    ws: Workspace,
    answer: str,
    *args: str,
    columns: int = 80,
    color: bool = False,
    stdout_too: bool = False,
) -> tuple[int, str]:
    """Run killswitch with a pseudo-terminal ``columns`` wide for stdin and stderr (and
    stdout, with ``stdout_too``); type ``answer`` when asked."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env |= ws.credentials("alice") | ({} if color else {"NO_COLOR": "1"})
    process = subprocess.Popen(
        [killswitch_command(), "--inventory", str(ws.inventory), "--actor", "alice", *args],
        stdin=follower,
        stderr=follower,
        stdout=follower if stdout_too else subprocess.PIPE,
        text=True,
        env=env,
    )
    os.close(follower)
    screen = b""
    deadline = time.monotonic() + 60
    answered = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
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
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode, screen.decode(errors="replace")


def _lines(screen: str) -> list[str]:
    """What is left on the screen, line by line, as a terminal shows it: the bars redraw
    in place (carriage return, cursor up, erase line), so only their last frame stays."""
    rows: list[list[str]] = [[]]
    row = col = 0
    for token in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n|[^\x1b\r\n]", screen):
        if token == "\r":
            col = 0
        elif token == "\n":
            row += 1
            rows += [[] for _ in range(row + 1 - len(rows))]
        elif token.startswith("\x1b["):
            count = int(token[2:-1]) if token[2:-1].isdigit() else 1
            if token.endswith("A"):
                row = max(0, row - count)
            elif token.endswith("K"):
                del rows[row][0 if token == "\x1b[2K" else col :]
        else:
            line = rows[row]
            line += [" "] * (col + 1 - len(line))
            line[col] = token
            col += 1
    return ["".join(line).rstrip() for line in rows]


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


def test_a_revoke_at_a_terminal_shows_each_phase_done_then_a_clean_report(ws: Workspace) -> None:
    code, screen = _at_terminal(
        ws, "y", "revoke", "-s", "outside-us", "--reason", "order", "--yes", stdout_too=True
    )

    assert code == 0
    assert not COLOR.search(screen)  # NO_COLOR
    lines = _lines(screen)
    # One finished bar per phase, left on screen with its count: read under the lock,
    # then the writes and their read-backs.
    finished = [line.split()[0] for line in lines if re.search(r"━ 8/8 \d+:\d\d:\d\d", line)]
    assert finished == ["read", "apply", "verify"]
    # The report comes after the bars, whole: no cursor tricks inside it, every row on it.
    shown = "\x1b[?25h"  # the cursor, shown again as the last bar stops
    report = screen[screen.rindex(shown) + len(shown) :]
    assert report.startswith("revoke")
    assert not ESCAPE.search(report)
    rows = [line for line in _lines(report) if line.startswith("✓")]
    assert len(rows) == 8
    assert all("revoked" in row and row.rstrip().endswith("verified") for row in rows)


def test_the_bar_counts_failed_targets_as_they_fail(
    faulty_ws: Workspace, proxy: FaultProxy
) -> None:
    ws = faulty_ws
    proxy.add(for_region("eu-west-1", "PutParameter"), **aws_error("AccessDeniedException", "no"))

    code, screen = _at_terminal(ws, "y", "revoke", "-s", "outside-us", "--reason", "o", "--yes")

    assert code == 3
    verify = next(line for line in _lines(screen) if line.startswith("verify"))
    assert "8/8" in verify and verify.rstrip().endswith("2 failed")
    assert ws.posture("eu-west-1", "mythos-5") == "open"
    assert ws.posture("eu-central-1", "mythos-5") == "revoked"


def test_without_no_color_the_terminal_gets_colors(ws: Workspace) -> None:
    # The other runs here set NO_COLOR and assert there is none: this shows it matters.
    _, screen = _at_terminal(ws, "y", "status", color=True, stdout_too=True)

    assert COLOR.search(screen)
    assert "━" in screen


def test_with_json_output_a_terminal_gets_a_plain_line_per_target_and_no_bars(
    ws: Workspace,
) -> None:
    code, screen = _at_terminal(
        ws, "y", "revoke", "-s", "outside-us", "--reason", "o", "-y", "-o", "json"
    )

    assert code == 0
    assert "━" not in screen
    assert not ESCAPE.search(screen)
    lines = [line for line in screen.splitlines() if line.startswith("[")]
    assert [line.split()[0] for line in lines] == [f"[{n}/8]" for n in range(1, 9)]
    assert all(line.endswith(" verified") for line in lines)
    assert {line.split()[1] for line in lines} == {
        f"aws:aws-prod/{r}/ssm-flag/{m}" for r in NON_US for m in MODELS
    }


def _export_control(ws: Workspace) -> None:
    """Outside the US revoked; inside it, restricted to US persons."""
    reason = "Commerce export order: block mythos-5 and fable-5 outside the US, now"
    assert ws.run("revoke", "-s", "outside-us", "--reason", reason, "--yes").code == 0
    restrict = ("restrict", "-m", "all", "-r", "us-*", "-a", "us-person", "--reason", reason)
    assert ws.run(*restrict, "--yes").code == 0


def test_after_an_export_order_every_table_reads_whole_at_80_and_120_columns(
    ws: Workspace,
) -> None:
    _export_control(ws)

    shown = {
        command: _at_terminal(ws, "y", *command.split(), columns=80, stdout_too=True)[1]
        for command in ("status", "ops list", "audit list")
    }
    _, wide = _at_terminal(ws, "y", "status", columns=120, stdout_too=True)

    for command, screen in shown.items():
        lines = _lines(screen)
        assert all(len(line) <= 80 for line in lines), (command, [len(x) for x in lines])
        assert "…" not in screen, command
    # 80 columns: the target ids and postures wrap where they may, never inside a word.
    status = " ".join(_lines(shown["status"]))
    assert status.count("restricted(") == 16 and status.count("us-person)") == 16
    assert status.count("revoked") == 16 and len(re.findall(r"\bin-sync\b", status)) == 17
    ops = shown["ops list"]
    op_ids = [op["id"] for op in ws.run("ops", "list", "-o", "json").json()["ops"]]
    assert all(op_id in ops for op_id in op_ids)
    words = " ".join(_lines(ops)).split()
    reason = ["Commerce", "export", "order:", "block", "mythos-5", "and", "fable-5", "outside"]
    assert all(word in words for word in reason)
    # 120 columns: a target a line, a column for each part of it.
    rows = [line.split() for line in _lines(wide) if line.startswith("=")]
    assert len(rows) == 16
    assert {(r[1], r[3], r[5], r[6], r[7]) for r in rows} == {
        (m, region, posture, posture, "in-sync")
        for m in MODELS
        for region, posture in [(r, "revoked") for r in NON_US]
        + [(r, "restricted(us-person)") for r in US]
    }


def test_two_accounts_are_told_apart_by_an_account_column(ws: Workspace) -> None:
    ws.write_inventory(
        providers={
            "aws-prod": {
                "type": "aws",
                "regions": ["eu-west-1"],
                "mechanisms": ["ssm-flag"],
                "endpoint_url": ws.endpoint,
                "role_arn": "arn:aws:iam::{account}:role/killswitch-operator",
                "accounts": [{"id": "111111111111"}, {"id": "222222222222"}],
            }
        },
        scopes={},
    )

    revoke = ws.run("revoke", "-m", "mythos-5", "--reason", "order", "--yes")

    assert revoke.code == 0, revoke.stderr
    header = revoke.stdout.splitlines()[1].split()
    table = [line.split() for line in revoke.stdout.splitlines() if line.startswith("✓")]
    assert header == ["model", "provider", "account", "region", "mechanism", "observed",
                      "desired", "result"]  # fmt: skip
    assert sorted(row[3] for row in table) == ["111111111111", "222222222222"]
    assert "1 region(s) at 1 provider(s) (aws-prod) in 2 accounts" in revoke.stdout
