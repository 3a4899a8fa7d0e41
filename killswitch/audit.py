"""Hash-chained audit events and their verification.

Each event's hash covers its content and the previous event's hash; the store
keeps the newest (seq, hash) beside the chain, so an edited, deleted,
reordered or truncated row breaks either the chain or the head.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from killswitch.domain import AuditEvent

GENESIS = "0" * 64


def event_hash(
    prev_hash: str,
    seq: int,
    at: str,
    actor: str,
    kind: str,
    op_id: str | None,
    payload: dict[str, object],
) -> str:
    body = json.dumps(
        [prev_hash, seq, at, actor, kind, op_id, payload],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(body.encode()).hexdigest()


def verify(events: Sequence[AuditEvent], head: tuple[int, str]) -> list[str]:
    """Every break in the chain, as sentences; empty when the log is intact."""
    problems: list[str] = []
    prev_hash, expected_seq = GENESIS, 1
    for event in events:
        if event.seq != expected_seq:
            problems.append(
                f"event {event.seq}: expected seq {expected_seq} (row missing or moved)"
            )
        if event.prev_hash != prev_hash:
            problems.append(f"event {event.seq}: does not follow the previous event's hash")
        recomputed = event_hash(
            event.prev_hash,
            event.seq,
            event.at,
            event.actor,
            event.kind,
            event.op_id,
            event.payload,
        )
        if recomputed != event.hash:
            problems.append(f"event {event.seq}: content does not match its hash (edited)")
        prev_hash, expected_seq = event.hash, event.seq + 1
    head_seq, head_hash = head
    last = (events[-1].seq, events[-1].hash) if events else (0, GENESIS)
    if (head_seq, head_hash) != last:
        problems.append(
            f"chain head says event {head_seq} but the log ends at event {last[0]} "
            "(rows deleted from the end, or head edited)"
        )
    return problems
