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
    """Check the inventory; errors name file, line and field (exit 64)."""
    from killswitch import render
    from killswitch.selectors import all_targets

    inv = session.load()
    targets = all_targets(inv)
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
