"""``killswitch state …`` and ``killswitch lock …``: the state store and its apply lock.

Like every command module, nothing here imports a cloud SDK until a command runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from killswitch.cli.app import cli
from killswitch.cli.session import Session, session_options
from killswitch.domain import utcnow
from killswitch.errors import ExitCode, KillswitchError, LockInfo, UsageError


class LockChanged(KillswitchError):
    """The lock changed hands between showing it and breaking it."""

    exit_code = ExitCode.LOCKED


def _emit(session: Session, data: dict[str, Any], lines: list[str]) -> None:
    from killswitch import render

    if session.output == "json":
        render.emit_json(data)
    else:
        for line in lines:
            click.echo(line)


def _resolve(url: str, base: Path) -> str:
    """The URL as a store names it; a relative sqlite path is relative to ``base``."""
    from killswitch.state import parse_state_url

    try:
        return str(parse_state_url(url, base))
    except ValueError as exc:
        raise UsageError(f"state: {exc}") from None


# -- state ------------------------------------------------------------------------------


@cli.group("state")
def state() -> None:
    """The state store: create it, move it, upload a break-glass spool."""


@state.command("init")
@click.option("--url", metavar="URL", help="State URL to create (default: the inventory's).")
@click.option(
    "--template-only", is_flag=True, help="Only print the CloudFormation snippet; call nothing."
)
@session_options
@click.pass_obj
def state_init(session: Session, /, url: str | None, template_only: bool) -> int:
    """Create the state table (DynamoDB: on-demand, TTL, deletion protection) and print
    the equivalent CloudFormation snippet. Safe to run again."""
    import yaml

    from killswitch.state import open_store, parse_dynamodb_url

    url = _resolve(url, Path.cwd()) if url else session.load().state_url
    if not url.startswith("dynamodb://"):
        if template_only:
            raise UsageError("--template-only is for dynamodb:// state; SQLite has no template")
        open_store(url).close()  # creates the file and its schema
        _emit(session, {"state": url, "done": ["ready"]}, [f"{url}: ready"])
        return 0
    from killswitch.state.dynamodb import DynamoDbStore
    from killswitch.state.dynamodb_table import cloudformation

    parsed = parse_dynamodb_url(url)
    template = cloudformation(parsed.table)
    done: list[str] = []
    if not template_only:
        store = DynamoDbStore(parsed)
        try:
            done = store.create_table()
        except (ValueError, TimeoutError) as exc:
            raise UsageError(f"state init: {exc}") from None
        finally:
            store.close()
    if session.output == "json":
        _emit(session, {"state": url, "done": done, "cloudformation": template}, [])
    else:
        for line in done:
            click.echo(line, err=True)
        click.echo("# The same table in CloudFormation:")
        click.echo(yaml.safe_dump(template, sort_keys=False), nl=False)
    return 0


@state.command("migrate")
@click.option("--to", "destination", required=True, metavar="URL", help="Empty store to fill.")
@session_options
@click.pass_obj
def state_migrate(session: Session, /, destination: str) -> int:
    """Copy the inventory's state into another, empty store (SQLite ⇄ DynamoDB), with the
    audit chain verified on both sides. Then point `state:` at the new URL."""
    from killswitch.state import open_store
    from killswitch.state.migrate import migrate

    inventory = session.load()
    source_url = inventory.state_url
    destination = _resolve(destination, inventory.path.parent)
    if destination == source_url:
        raise UsageError("--to names the store the inventory already uses")
    source, target = open_store(source_url), open_store(destination)
    try:
        moved = migrate(
            source,
            target,
            source_url=source_url,
            destination_url=destination,
            actor=session.who(),
            ttl_seconds=inventory.spec.policy.lock.ttl_seconds,
        )
    finally:
        source.close()
        target.close()
    seq, head = moved.audit_head
    _emit(
        session,
        {
            "from": source_url,
            "to": destination,
            "ops": moved.ops,
            "journal": moved.journal,
            "ledger": moved.ledger,
            "approvals": moved.approvals,
            "audit_events": moved.audit_events,
            "audit_head": {"seq": seq, "hash": head},
            "verified": True,
        },
        [
            f"copied {moved.ops} ops, {moved.journal} journal records, {moved.ledger} ledger "
            f"entries, {moved.approvals} approvals and {moved.audit_events} audit events",
            f"  from {source_url}",
            f"  to   {destination}",
            f"audit chain verified on both sides (head: event {seq}, {head[:12]}…)",
            f"next: set `state: {destination}` in {inventory.path}",
        ],
    )
    return 0


@state.command("sync")
@session_options
@click.pass_obj
def state_sync(session: Session, /) -> int:
    """Upload this machine's break-glass spool (ops, journal, audit) into the shared store,
    in the order it was written. Safe to run again."""
    from killswitch.state import open_store
    from killswitch.state.migrate import sync
    from killswitch.state.spool import default_spool_dir

    inventory = session.load()
    url = inventory.state_url
    store = open_store(url)
    try:
        uploads = sync(
            store,
            default_spool_dir(inventory.path),
            url,
            actor=session.who(),
            ttl_seconds=inventory.spec.policy.lock.ttl_seconds,
        )
    finally:
        store.close()
    lines = [
        f"{u.spool} (from {u.host}): uploaded "
        + (", ".join(f"{n} {kind}" for kind, n in sorted(u.uploaded.items())) or "nothing new")
        + (f"; {u.skipped} already there or superseded" if u.skipped else "")
        for u in uploads
    ]
    _emit(
        session,
        {
            "state": url,
            "spools": [
                {
                    "spool": u.spool,
                    "host": u.host,
                    "uploaded": dict(u.uploaded),
                    "skipped": u.skipped,
                }
                for u in uploads
            ],
        },
        lines or ["nothing to sync: no break-glass spool on this machine"],
    )
    return 0


# -- lock ---------------------------------------------------------------------------------


@cli.group("lock")
def lock() -> None:
    """The apply lock: who holds it; break it when its holder is gone."""


def _lock_json(holder: LockInfo | None, url: str) -> dict[str, Any]:
    if holder is None:
        return {"state": url, "held": False}
    return {
        "state": url,
        "held": True,
        "owner": holder.owner,
        "op_id": holder.op_id,
        "acquired_at": holder.acquired_at,
        "expires_at": holder.expires_at,
        "expired": holder.expires_at < utcnow(),
        "token": holder.token,
    }


def _describe(holder: LockInfo) -> str:
    op = f"op {holder.op_id}" if holder.op_id else "no op"
    if holder.expires_at < utcnow():
        lease = f"its lease EXPIRED at {holder.expires_at}: the next apply takes it over"
    else:
        lease = f"lease expires {holder.expires_at}"
    return (
        f"lock held by {holder.owner} since {holder.acquired_at} for {op}; "
        f"{lease} (token {holder.token})"
    )


@lock.command("status")
@session_options
@click.pass_obj
def lock_status(session: Session, /) -> int:
    """Who holds the apply lock. Exit 0: free (or expired); 4: held."""
    from killswitch.state import open_store

    url = session.load().state_url
    store = open_store(url)
    try:
        holder = store.lock_status()
    finally:
        store.close()
    data = _lock_json(holder, url)
    live = holder is not None and not data["expired"]
    lines = [_describe(holder) if holder else "lock free"]
    if live and holder is not None:
        data["next"] = (
            f"killswitch ops show {holder.op_id}  # what it is doing; wait for it, or, if its "
            "holder is gone, `killswitch lock break --reason …`"
            if holder.op_id
            else "killswitch lock break --reason …  # only if its holder is gone"
        )
        lines.append(f"next: {data['next']}")
    _emit(session, data, lines)
    return int(ExitCode.LOCKED if live else ExitCode.OK)


@lock.command("break")
@click.option("--reason", required=True, help="Why (goes into the audit log).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask (required when not a TTY).")
@session_options
@click.pass_obj
def lock_break(session: Session, /, reason: str, yes: bool) -> int:
    """Free the apply lock of a holder that is gone. Its later writes are refused
    (fencing); `ops resume` finishes its op. Audited."""
    from killswitch.state import open_store

    if not reason.strip():
        raise UsageError("--reason must say why (it goes into the audit log)")
    url = session.load().state_url
    actor = session.who()
    store = open_store(url)
    try:
        holder = store.lock_status()
        if holder is None:
            _emit(
                session, _lock_json(None, url) | {"broken": None}, ["lock free; nothing to break"]
            )
            return 0
        _confirm_break(holder, yes)
        broken = store.break_lock(holder.token)
        if broken is None:
            raise LockChanged(
                "the lock changed hands since it was shown; nothing was broken. "
                "Look again: `killswitch lock status`"
            )
        store.append_audit(
            actor,
            "lock.broken",
            broken.op_id,
            {
                "reason": reason,
                "holder": broken.owner,
                "token": broken.token,
                "acquired_at": broken.acquired_at,
                "expires_at": broken.expires_at,
            },
        )
    finally:
        store.close()
    resume = f"; `killswitch ops resume {broken.op_id}` finishes its op" if broken.op_id else ""
    what = f"broke the lock of {broken.owner} (token {broken.token}): its writes are refused"
    _emit(
        session,
        _lock_json(None, url) | {"broken": _lock_json(broken, url)},
        [what + resume],
    )
    return 0


def _confirm_break(holder: LockInfo, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(
            f"{_describe(holder)}.\nBreaking it stops that run's writes; "
            "not a terminal, so nothing asks: add --yes (nothing was changed)"
        )
    click.echo(_describe(holder), err=True)
    if not click.confirm("break it?", default=False, err=True):
        raise UsageError("not confirmed; nothing was changed")
