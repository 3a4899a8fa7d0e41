"""``inventory validate``."""

from __future__ import annotations

import click

from killswitch.cli.app import cli
from killswitch.cli.session import Session, session_options


@cli.group("inventory")
def inventory_group() -> None:
    """The inventory file."""


@inventory_group.command("validate")
@session_options
@click.pass_obj
def inventory_validate(session: Session, /) -> int:
    """Check the inventory; errors name file, line and field (exit 64). Then check what
    the providers need at run time and no file can show (a partner's secret set, …):
    missing, it is exit 64 too, naming what to set."""
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
    if session.output == "json":
        render.emit_json(
            {
                "valid": True,
                "path": str(inv.path),
                "models": inv.models,
                "providers": inv.provider_names,
                "targets": len(targets),
            }
        )
    else:
        click.echo(f"{inv.path}: valid — {render.blast_radius(targets)}")
    return 0
