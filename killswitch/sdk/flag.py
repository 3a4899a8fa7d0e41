"""The posture document gateways read (docs/flag-format.md): one public format, written
by every flag lever (the AWS SSM parameter, the Kubernetes ConfigMap, an outside
plug-in's). No cloud SDK here, so each provider imports it without pulling in another's."""

from __future__ import annotations

import json

from killswitch.contract import ApplyContext
from killswitch.domain import Access
from killswitch.errors import PermanentError
from killswitch.text import FLAG_REASON_CHARS, excerpt

FLAG_SCHEMA = "killswitch.flag/v1"


class CorruptFlag(PermanentError):
    """The key exists but does not hold a flag document we can read."""


def flag_document(model: str, desired: Access, ctx: ApplyContext) -> str:
    """The JSON a gateway reads; keys are stable (see docs/flag-format.md). UTF-8, not
    escaped, and bounded for any accepted input: the reason is an excerpt (the audit log
    holds all of it), so the document always fits a Standard SSM parameter (4 KB)."""
    return json.dumps(
        {
            "schema": FLAG_SCHEMA,
            "model": model,
            "posture": desired.posture.value,
            "audience": list(desired.audience),
            "op": ctx.op_id,
            "actor": ctx.actor,
            "reason": excerpt(ctx.reason, FLAG_REASON_CHARS),
            "ticket": ctx.ticket,
            "updated_at": ctx.at,
        },
        sort_keys=True,
        ensure_ascii=False,
    )


def parse_flag(where: str, value: str) -> Access:
    """The access a flag document holds; CorruptFlag (permanent) naming ``where`` when
    ``value`` is not one."""
    try:
        document = json.loads(value)
        if not isinstance(document, dict):
            raise TypeError("the value is JSON but not an object")
        return Access.from_json(document)
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptFlag(f"{where}: not a killswitch flag document ({exc})") from None
