"""The safety state as the audit log tells it: big ops stay within a store's item size,
and drift never reads a ledger looser than both the table and the log."""

from __future__ import annotations

import json

from killswitch.domain import OPEN, Access, AuditEvent, LedgerEntry, Posture
from killswitch.replay import ledger_batches, replay, safest

REVOKED = Access(Posture.REVOKED)
AT = "2026-11-30T00:00:00.000Z"


def test_a_five_thousand_target_op_is_logged_in_events_a_store_can_hold() -> None:
    target = "aws:aws-prod@123456789012/ap-southeast-2/ssm-flag/a-model-with-a-long-name-{}"
    entries = [LedgerEntry(target.format(i), REVOKED, "op-1", AT) for i in range(5000)]

    batches = ledger_batches(entries)
    events = [
        AuditEvent(seq, AT, "alice", "ledger.set", "op-1", batch)
        for seq, batch in enumerate(batches, start=1)
    ]

    assert all(len(json.dumps(b).encode()) < 100_000 for b in batches)  # DynamoDB: 400 KB
    assert replay(events).ledger == {e.target_id: e for e in entries}


def test_the_safest_ledger_is_the_meet_of_table_and_log_when_neither_is_tighter() -> None:
    us, eu = Access(Posture.RESTRICTED, ("us-person",)), Access(Posture.RESTRICTED, ("eu",))
    table = {"t": LedgerEntry("t", us, "op-1", AT), "u": LedgerEntry("u", OPEN, "op-2", AT)}
    logged = {"t": LedgerEntry("t", eu, "op-1", AT), "u": LedgerEntry("u", REVOKED, "op-2", AT)}

    merged = safest(table, logged)

    assert merged["t"].desired == us.meet(eu)  # nobody both do not let in gets in
    assert merged["u"].desired == REVOKED  # a row opened by hand hides nothing


def test_the_log_is_read_in_chain_order_not_by_a_writers_clock() -> None:
    fast = {"ledger": [["t", REVOKED.to_json()]], "ledger_at": "2026-11-30T00:03:00.000Z"}
    later = {"ledger": [["t", OPEN.to_json()]], "ledger_at": "2026-11-30T00:01:00.000Z"}
    events = [
        AuditEvent(1, AT, "alice", "ledger.set", "op-1", fast),  # a host 3 minutes fast
        AuditEvent(2, AT, "bob", "ledger.set", "op-2", later),  # the approved restore after it
    ]

    assert replay(events).ledger["t"].desired == OPEN
