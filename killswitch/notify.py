"""Slack-compatible webhook messages for drift and finished ops.

A webhook URL is a secret (it carries a token): it comes from a flag, an
environment variable or a file, and never reaches a log or an error message.
A notification that fails is logged; it never changes what the command did or
its exit code.
"""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from collections.abc import Sequence

import structlog

from killswitch.domain import Operation, Report, TargetReport

log = structlog.get_logger("killswitch.notify")


def drift_message(report: Report, healed: Sequence[Report] = ()) -> dict[str, object]:
    drifted = [r for r in report.rows if r.result in ("drift", "unmanaged")]
    lines = [f"• `{r.target.id}`: {r.error}" for r in drifted[:20]]
    if len(drifted) > 20:
        lines.append(f"• … and {len(drifted) - 20} more")
    summary = _counts(report.rows)
    text = (
        f":rotating_light: killswitch drift: {len(drifted)} target(s) differ "
        f"from the ledger ({summary})"
    )
    for op in healed:
        text += f"\nhealed by op {op.op_id}: {op.status}"
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines) or "-"}},
        ],
    }


def op_message(
    action: str, report: Report, actor: str, op: Operation | None = None
) -> dict[str, object]:
    """A finished op, and (given the op) its time to verified kill."""
    text = (
        f"killswitch {action} by {actor}: op {report.op_id} {report.status} "
        f"({_counts(report.rows)})"
    )
    from killswitch.probes import effect_seconds

    effects = [s for r in report.rows if (s := effect_seconds(r.result, r.error)) is not None]
    if effects:  # proof by effect (killswitch/probes.py): how long the serving path took
        text += f"; effective at the gateways within {max(effects):.1f}s"
    if op is not None and op.timing is not None:
        from killswitch.timing import headline

        text += f"; {headline(op.timing, op.action)}"
    return {"text": text}


def _counts(rows: Sequence[TargetReport]) -> str:
    counts = Counter(r.result for r in rows)
    return ", ".join(f"{n} {result}" for result, n in sorted(counts.items()))


def send(url: str, message: dict[str, object], timeout: float = 5.0) -> bool:
    """POST ``message`` as JSON; True when the receiver said 2xx."""
    request = urllib.request.Request(
        url,
        data=json.dumps(message).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = int(response.status)
            ok = 200 <= status < 300
    except OSError as exc:
        log.error("notification failed", error=type(exc).__name__)
        return False
    if not ok:
        log.error("notification refused", status=status)
    return ok
