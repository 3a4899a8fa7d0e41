"""Text that once broke the kill or the terminal, against the real moto server: a long
CJK reason still revokes everywhere; escape sequences and URL passwords that reach the
state by other means are never printed as they are."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.conftest import MODELS, NON_US, US, Workspace
from tests.support.servers import free_port

SSM_STANDARD_LIMIT = 4096


def test_a_long_cjk_reason_and_ticket_still_revoke_everywhere(ws: Workspace) -> None:
    reason = "輸出管理命令" * 116 + "終"  # 697 characters, 2,091 bytes of UTF-8
    ticket = "案件-" + "票" * 120

    result = ws.run("revoke", "-m", "all", "--reason", reason, "--ticket", ticket, "--yes",
                    "-o", "json")  # fmt: skip

    assert result.code == 0, result.stderr
    for region in US + NON_US:
        for model in MODELS:
            value = ws.ssm(region).get_parameter(Name=f"/killswitch/models/{model}")
            document = value["Parameter"]["Value"]
            assert len(document.encode("utf-8")) <= SSM_STANDARD_LIMIT
            flag = ws.flag(region, model)
            assert flag is not None and flag["posture"] == "revoked"
            assert reason.startswith(flag["reason"].rstrip("…"))
            assert flag["ticket"] == ticket
    # The whole reason stays in the op and the audit log.
    op = ws.run("ops", "show", result.json()["op"], "-o", "json").json()["operation"]
    assert op["reason"] == reason


def test_escape_sequences_in_the_state_are_shown_not_obeyed(ws: Workspace) -> None:
    assert ws.run("revoke", "-m", "mythos-5", "--reason", "order", "--yes").code == 0
    db = sqlite3.connect(ws.state_db)
    with db:  # written by an older version, or by hand
        db.execute("UPDATE ops SET reason = ?, actor = ?", ("\x1b]0;pwned\x07\x1b[2J", "\x1b[8m"))
    db.close()

    listed = ws.run("ops", "list")
    shown = ws.run("audit", "list")

    assert listed.code == 0 and shown.code == 0
    assert "\x1b" not in listed.stdout and "\x07" not in listed.stdout
    assert "\\x1b" in listed.stdout
    assert "\x1b" not in shown.stdout


def test_a_password_in_the_state_endpoint_never_reaches_the_terminal(ws: Workspace) -> None:
    closed = free_port()  # nothing listens: the shared store is down, break-glass runs
    ws.write_inventory(
        state=f"dynamodb://ks-state?region=us-east-1&connect_timeout=0.5"
        f"&endpoint_url=http://ops:hunter2@127.0.0.1:{closed}"
    )

    result = ws.run("revoke", "-m", "mythos-5", "-r", "eu-west-1", "--reason", "r", "--yes")
    status = ws.run("status")

    assert result.code == 0, result.stderr
    assert "BREAK-GLASS" in result.stderr
    for output in (result.stdout, result.stderr, status.stdout, status.stderr):
        assert "hunter2" not in output
    assert ws.posture("eu-west-1", "mythos-5") == "revoked"


def test_a_timing_garbled_in_the_state_is_ignored_not_printed_nor_exported(
    ws: Workspace, tmp_path: Path
) -> None:
    result = ws.run("revoke", "-m", "mythos-5", "--reason", "order", "--yes", "-o", "json")
    op = result.json()["op"]
    db = sqlite3.connect(ws.state_db)
    with db:  # a label value that would end the metrics line, and a terminal escape
        db.execute(
            "UPDATE ops SET timing = json_set(timing, '$.started_at', ?, '$.phases', json(?))",
            ("\x1b]0;pwned\x07", '{"apply\\n# pwned": 1}'),
        )
    db.close()
    metrics = tmp_path / "killswitch.prom"

    shown = ws.run("ops", "show", op)
    listed = ws.run("ops", "list", "-o", "json")
    drift = ws.run("drift", "--metrics-file", str(metrics))

    assert (shown.code, listed.code, drift.code) == (0, 0, 0)
    assert "\x1b" not in shown.stdout and "time to kill" not in shown.stdout
    assert listed.json()["ops"][0]["timing"] is None
    assert "pwned" not in metrics.read_text()
    assert "killswitch_last_op_time_to_kill_seconds{" not in metrics.read_text()
