"""Tables on an 80-column terminal: free text wraps, postures and results are never cut."""

from __future__ import annotations

import io
import re

import pytest

from killswitch import render
from killswitch.domain import Access, Posture, Report, Target, TargetReport
from killswitch.outcome import Outcome
from killswitch.terminal import Column, Layout, fit, wrapped

US_PERSON = Access(Posture.RESTRICTED, ("us-person",))
TWO_AUDIENCES = Access(Posture.RESTRICTED, ("eu-person", "us-person"))


class Terminal(io.StringIO):
    """What a terminal of $COLUMNS columns shows (NO_COLOR: the text alone)."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def columns(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("NO_COLOR", "1")
    return monkeypatch


def _report(*rows: tuple[str, str, Access]) -> Report:
    return Report(
        "op-1",
        Outcome.COMPLETE,
        tuple(
            TargetReport(
                Target("aws", "aws-prod", region, "ssm-flag", model), access, access, "verified"
            )
            for model, region, access in rows
        ),
    )


def _shown(report: Report, width: int, columns: pytest.MonkeyPatch) -> list[str]:
    columns.setenv("COLUMNS", str(width))
    screen = Terminal()
    render.report_table(report, "restrict", stream=screen)
    return screen.getvalue().splitlines()


def test_at_80_columns_a_restricted_posture_wraps_at_its_parenthesis_never_inside_a_word(
    columns: pytest.MonkeyPatch,
) -> None:
    report = _report(
        ("mythos-5", "ap-northeast-1", TWO_AUDIENCES), ("fable-5", "us-east-1", US_PERSON)
    )

    lines = _shown(report, 80, columns)

    assert all(len(line) <= 80 for line in lines), lines
    assert not any("…" in line for line in lines)
    text = " ".join(lines)
    assert text.count("restricted(") == 4  # observed and desired, two rows
    assert all(re.search(rf"\b{word}\b", text) for word in ("eu-person", "us-person", "verified"))
    assert text.count("verified") == 3  # two rows, and the summary


def test_at_120_columns_every_target_is_one_line_with_its_posture_whole(
    columns: pytest.MonkeyPatch,
) -> None:
    report = _report(("mythos-5", "ap-northeast-1", US_PERSON), ("fable-5", "us-east-1", US_PERSON))

    lines = _shown(report, 120, columns)

    rows = [line.split() for line in lines if line.startswith("✓")]
    assert rows == [
        ["✓", "mythos-5", "aws-prod", "ap-northeast-1", "ssm-flag",
         "restricted(us-person)", "restricted(us-person)", "verified"],
        ["✓", "fable-5", "aws-prod", "us-east-1", "ssm-flag",
         "restricted(us-person)", "restricted(us-person)", "verified"],
    ]  # fmt: skip


def test_off_a_terminal_a_row_is_one_line_however_long() -> None:
    report = _report(*[("mythos-5", f"region-{'x' * 200}-{i}", TWO_AUDIENCES) for i in range(3)])
    piped = io.StringIO()

    render.report_table(report, "restrict", stream=piped)

    rows = [line for line in piped.getvalue().splitlines() if line.startswith("✓")]
    assert len(rows) == 3 and all(line.rstrip().endswith("verified") for line in rows)


def test_a_layout_too_wide_wraps_free_text_first_and_ids_only_at_their_breaks() -> None:
    layout = Layout(
        [Column("op"), Column("target", breaks="/"), Column("reason", free=True, give=0)],
        [["op-7b70612b96f0", "aws:aws-prod/eu-west-1/ssm-flag/mythos-5", "export order " * 8]],
    )

    widths = fit(layout, 80)

    assert widths is not None
    assert widths[0] == len("op-7b70612b96f0")  # never shrinks
    assert sum(widths) + 2 * 2 <= 80
    assert wrapped("aws:aws-prod/eu-west-1/ssm-flag/mythos-5", 20, "/").split("\n") == [
        "aws:aws-prod/",
        "eu-west-1/ssm-flag/",
        "mythos-5",
    ]


def test_a_layout_that_cannot_fit_without_cutting_says_so() -> None:
    layout = Layout(
        [Column("op"), Column("status", breaks="-")], [["op-7b70612b96f0", "awaiting-approval"]]
    )

    assert fit(layout, 20) is None
    assert fit(layout, 26) == [15, 9]  # "awaiting-" / "approval"


def test_an_edited_store_cannot_move_the_cursor_through_a_table(
    columns: pytest.MonkeyPatch,
) -> None:
    forged = Target("aws", "aws-prod", "eu-west-1\x1b[2J", "ssm-flag", "mythos-5\x07")
    report = Report(
        "op-1", Outcome.COMPLETE, (TargetReport(forged, US_PERSON, US_PERSON, "verified"),)
    )

    shown = "\n".join(_shown(report, 80, columns))

    assert "\x1b" not in shown and "\x07" not in shown
    assert "eu-west-1\\x1b[2J" in shown.replace("\n", "").replace(" ", "")
