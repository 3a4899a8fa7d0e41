"""``inventory validate``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from killswitch.cli.app import cli
from killswitch.cli.session import Session, session_options

if TYPE_CHECKING:
    from killswitch.domain import Target
    from killswitch.inventory import Inventory


@cli.group("inventory")
def inventory_group() -> None:
    """The inventory file."""


@inventory_group.command("validate")
@click.option(
    "--reach",
    is_flag=True,
    help="Also call every provider and the state store, reading only: credentials, "
    "roles, secrets and network as a kill would use them (exit 3 naming what fails).",
)
@session_options
@click.pass_obj
def inventory_validate(session: Session, /, reach: bool) -> int:
    """Check the inventory; errors name file, line and field (exit 64). Then check what
    the providers need at run time and no file can show (a partner's secret set, …):
    missing, it is exit 64 too, naming what to set. With --reach, call them too."""
    from killswitch import render
    from killswitch.contract import Readiness
    from killswitch.errors import InventoryError
    from killswitch.selectors import all_targets

    inv = session.load()
    targets = all_targets(inv)
    missing = [
        f"providers.{name}: {problem}"
        for name in inv.provider_names
        if isinstance(provider := inv.provider(name), Readiness)
        for problem in provider.readiness()
    ]
    if missing:
        raise InventoryError([f"{inv.path}: {m} (needed at run time)" for m in missing])
    problems = _unreachable(inv, targets, session.concurrency) if reach else {}
    from killswitch.cli.nextstep import rerun

    then = f"{rerun(session.argv)}  # again, once what failed is fixed"
    if session.output == "json":
        document: dict[str, object] = {
            "valid": True,
            "path": str(inv.path),
            "models": inv.models,
            "providers": inv.provider_names,
            "targets": len(targets),
        }
        if reach:
            document["unreachable"] = problems
            document["next"] = then if problems else None
        render.emit_json(document)
    else:
        from killswitch.text import printable

        click.echo(f"{inv.path}: valid — {render.blast_radius(targets)}")
        for where, found in problems.items():
            click.echo(printable(f"unreachable: {where}: " + "; ".join(found)))
        if reach and not problems:
            click.echo("reachable: the state store and every provider answered")
        if problems:
            click.echo(f"next: {then}")
    return 3 if problems else 0


def _unreachable(
    inv: Inventory, targets: list[Target], concurrency: int | None
) -> dict[str, list[str]]:
    """What a kill would need and cannot reach: the state store; per provider, one target
    of each lever and account read as a kill reads it, and what the provider itself
    checks (``Reachability``). Reads only."""
    from concurrent.futures import ThreadPoolExecutor

    from killswitch.contract import Reachability
    from killswitch.errors import KillswitchError
    from killswitch.fleet import Fleet
    from killswitch.state import open_store

    problems: dict[str, list[str]] = {}
    try:
        store = open_store(inv.state)
        try:
            store.lock_status()
        finally:
            store.close()
    except KillswitchError as exc:
        problems["state"] = [str(exc)]
    except Exception as exc:  # the store's own error, unclassified: still a finding
        problems["state"] = [f"{type(exc).__name__}: {exc}"]
    sample = list({(t.provider, t.account, t.mechanism): t for t in targets}.values())
    seen = Fleet(inv, concurrency=concurrency).observe_all(sample)
    for target in sample:
        if isinstance(failed := seen[target.id], KillswitchError):
            problems.setdefault(f"providers.{target.provider}", []).append(f"{target.id}: {failed}")
    checking = [name for name in inv.provider_names if isinstance(inv.provider(name), Reachability)]
    with ThreadPoolExecutor(max_workers=max(1, len(checking))) as pool:
        found = pool.map(lambda name: (name, _reach(inv.provider(name))), checking)
        for name, gaps in found:
            if gaps:
                problems.setdefault(f"providers.{name}", []).extend(gaps)
    return problems


def _reach(provider: object) -> list[str]:
    from killswitch.contract import Reachability
    from killswitch.errors import KillswitchError

    assert isinstance(provider, Reachability)
    try:
        return provider.reach()
    except KillswitchError as exc:
        return [str(exc)]
