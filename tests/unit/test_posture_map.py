"""The posture map's page as a pure function: what each cell shows when its levers
disagree, how columns group, and that nothing from the state becomes markup."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from killswitch import posture_map
from killswitch.domain import (
    OPEN,
    REVOKED,
    Access,
    Action,
    AuditEvent,
    LedgerEntry,
    Operation,
    OpStatus,
    Posture,
    Report,
    Target,
    TargetReport,
)
from killswitch.outcome import Outcome

US_ONLY = Access(Posture.RESTRICTED, ("us-person",))
EVIL = '<script>alert("x")</script>\u202e\x1b[31m'


def _target(
    lever: str, provider: str = "k8s-eu", account: str = "", region: str = "eu-west-1"
) -> Target:
    kind = "kubernetes" if provider.startswith("k8s") else "aws"
    return Target(kind, provider, region, lever, "mythos-5", account)


def _op(op_id: str, reason: str = "order", actor: str = "alice@123456789012") -> Operation:
    return Operation(
        op_id, Action.REVOKE, REVOKED, (), actor, reason, EVIL, "m", "2026-01-01T00:00:00.000Z",
        OpStatus.COMPLETE,
    )  # fmt: skip


def _map(
    rows: list[TargetReport],
    ledger: dict[str, LedgerEntry] | None = None,
    ops: dict[str, Operation] | None = None,
    events: list[AuditEvent] | None = None,
    recent: int = posture_map.RECENT,
) -> posture_map.PostureMap:
    return posture_map.survey(
        Report(None, Outcome.OK, tuple(rows)),
        ledger or {},
        (ops or {}).get,
        events or [],
        inventory="killswitch.yaml",
        generated_at="2026-01-01T00:00:00.000Z",
        recent=recent,
    )


def _only_cell(found: posture_map.PostureMap) -> posture_map.Cell:
    assert len(found.models) == 1 and len(found.columns) == 1
    return found.cell(found.models[0], found.columns[0])


def test_a_cell_shows_its_loosest_lever_and_drift_on_any_lever_marks_it() -> None:
    flag, policy = _target("configmap-flag"), _target("network-policy")
    at = "2026-01-01T00:00:01.000Z"
    ledger = {t.id: LedgerEntry(t.id, REVOKED, "op-1", at) for t in (flag, policy)}
    rows = [TargetReport(flag, None, REVOKED, "in-sync"), TargetReport(policy, None, US_ONLY, "")]

    cell = _only_cell(_map(rows, ledger, {"op-1": _op("op-1")}))

    assert cell.word == "restricted" and cell.shown == US_ONLY
    assert cell.drifted
    assert [lever.drifted for lever in cell.levers] == [False, True]


def test_one_unreadable_lever_makes_the_cell_unreadable_not_its_other_levers_posture() -> None:
    rows = [
        TargetReport(_target("configmap-flag"), None, REVOKED, "untouched"),
        TargetReport(_target("network-policy"), None, None, "unreadable", "403 Forbidden"),
    ]

    found = _map(rows)
    cell = _only_cell(found)

    assert cell.word == "unreadable" and cell.shown is None
    assert cell.drifted  # revoked where no op set it: the untouched target is expected open
    html = posture_map.page(found)
    assert "UNREADABLE" in html and "403 Forbidden" in html


def test_columns_group_by_provider_then_account_and_a_place_without_a_model_is_empty() -> None:
    rows = [
        TargetReport(_target("ssm-flag", "aws-org", "222222222222"), None, OPEN, "untouched"),
        TargetReport(_target("ssm-flag", "aws-prod", region="us-east-1"), None, OPEN, ""),
        TargetReport(_target("ssm-flag", "aws-org", "111111111111"), None, OPEN, "untouched"),
        TargetReport(_target("ssm-flag", "aws-org", "222222222222", "us-east-1"), None, OPEN, ""),
        TargetReport(Target("partner", "acme", "eu-west", "access-api", "fable-5"), None, OPEN, ""),
    ]

    found = _map(rows)

    assert [(c.provider, c.account, c.region) for c in found.columns] == [
        ("aws-org", "222222222222", "eu-west-1"),
        ("aws-org", "222222222222", "us-east-1"),
        ("aws-org", "111111111111", "eu-west-1"),
        ("aws-prod", "", "us-east-1"),
        ("acme", "", "eu-west"),
    ]
    assert found.cell("fable-5", found.columns[0]).word == "none"
    assert found.cell("mythos-5", found.columns[4]).word == "none"
    assert "account 222222222222" in posture_map.page(found)


def test_a_ledger_row_whose_op_is_gone_still_names_the_op() -> None:
    target = _target("configmap-flag")
    ledger = {target.id: LedgerEntry(target.id, REVOKED, "op-gone", "2026-01-01T00:00:01.000Z")}

    html = posture_map.page(_map([TargetReport(target, None, REVOKED, "")], ledger))

    assert "op-gone" in html and "not in the store" in html
    assert "never set by killswitch" not in html


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def test_hostile_strings_from_the_state_stay_text_and_the_page_fetches_nothing() -> None:
    target = _target("configmap-flag")
    ledger = {target.id: LedgerEntry(target.id, REVOKED, "op-1", "2026-01-01T00:00:01.000Z")}
    event = AuditEvent(
        1, "2026-01-01T00:00:00.000Z", EVIL, "op.requested", "op-1", {"reason": EVIL, "label": EVIL}
    )
    rows = [
        TargetReport(target, None, OPEN, "drift"),
        TargetReport(
            _target("network-policy"), None, None, "unreadable", EVIL + " https://u:pw@h/"
        ),
    ]
    found = _map(rows, ledger, {"op-1": _op("op-1", reason=EVIL, actor=EVIL)}, [event])

    html = posture_map.page(found)
    parser = _Elements()
    parser.feed(html)

    assert html.isascii()
    assert "script" not in parser.tags and "<script>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;\\u202e\\x1b[31m" in html
    assert "pw@" not in html
    assert set(parser.tags) <= {
        "html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "dl", "dt",
        "dd", "time", "section", "ul", "li", "span", "p", "div", "table", "thead", "tbody",
        "tr", "th", "td", "a", "br", "q", "code", "footer",
    }  # fmt: skip
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert csp is not None and "default-src 'none'" in csp.group(1)
    assert not re.search(r"(src|href)=\"(?!#)", html)  # no link leaves the page


def test_the_timeline_shows_the_latest_events_newest_first() -> None:
    events = [
        AuditEvent(n, f"2026-01-01T00:00:{n:02d}.000Z", "alice", "op.finished", f"op-{n}")
        for n in range(1, 8)
    ]

    found = _map([TargetReport(_target("scale"), None, OPEN, "")], events=events, recent=3)

    assert [m.seq for m in found.timeline] == [7, 6, 5]
    assert "3 of 7 events" in posture_map.page(found)
