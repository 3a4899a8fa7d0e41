"""One table from a report's status word to its exit code, as docs/exit-codes.md
documents it, used by the CLI and the runbook runner alike."""

from __future__ import annotations

import re
from pathlib import Path

from killswitch.domain import OpStatus
from killswitch.outcome import Outcome

DOC = Path(__file__).resolve().parents[2] / "docs" / "exit-codes.md"


def documented() -> dict[str, int]:
    """The `status | code` table of docs/exit-codes.md."""
    table = DOC.read_text().split("| `status` | code |")[1].split("\n\n")[0]
    found = {}
    for words, code in re.findall(r"^\| (.+?) \| (\d+) \|$", table, flags=re.M):
        for word in re.findall(r"`([a-z-]+)`", words):
            found[word] = int(code)
    return found


def test_every_status_word_has_the_exit_code_the_docs_promise() -> None:
    assert {o.value: int(o.exit_code) for o in Outcome} == documented()


def test_every_op_status_is_a_report_status_with_an_exit_code() -> None:
    for status in OpStatus:
        assert Outcome(status.value).exit_code is not None
