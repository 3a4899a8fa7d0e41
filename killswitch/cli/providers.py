"""Provider helpers: the least privilege each provider's levers need."""

from __future__ import annotations

from typing import Any

import click

from killswitch.cli.app import cli
from killswitch.cli.session import Session, session_options
from killswitch.errors import UsageError


@cli.group("aws")
def aws_group() -> None:
    """AWS helpers."""


@aws_group.command("policy")
@click.option(
    "--boundary",
    is_flag=True,
    help="Print the recommended permissions boundary for the operator role instead.",
)
@session_options
@click.pass_obj
def aws_policy(session: Session, /, boundary: bool) -> int:
    """Print the least-privilege IAM policy the inventory's AWS levers need (JSON)."""
    from killswitch import render
    from killswitch.anchor import anchor_permissions
    from killswitch.contract import LeastPrivilege
    from killswitch.state import state_permissions

    inv = session.load()
    statements: list[Any] = []
    for name in inv.provider_names:
        provider = inv.provider(name)
        if inv.spec.providers[name].type == "aws" and isinstance(provider, LeastPrivilege):
            # The boundary (optional, AWS's own) caps the operator role at these permissions.
            found = getattr(provider, "permissions_boundary", None) if boundary else None
            document = found() if callable(found) else provider.least_privilege()
            for statement in document["Statement"]:
                if statement not in statements:
                    statements.append(statement)
    if not statements:
        raise UsageError("the inventory has no aws provider")
    statements += state_permissions(inv.spec.state)
    statements += anchor_permissions(inv.spec.policy.audit.anchor)
    render.emit_json({"Version": "2012-10-17", "Statement": statements})
    return 0


@cli.group("kubernetes")
def kubernetes_group() -> None:
    """Kubernetes helpers."""


@kubernetes_group.command("rbac")
@click.option(
    "--provider",
    "-p",
    "providers",
    multiple=True,
    metavar="NAME",
    help="A kubernetes entry (repeatable; default: all of them).",
)
@session_options
@click.pass_obj
def kubernetes_rbac(session: Session, /, providers: tuple[str, ...]) -> int:
    """Print the least-privilege Roles the inventory's Kubernetes levers need (YAML).

    One Role per listed namespace; apply it per cluster, e.g.
    `killswitch kubernetes rbac -p k8s-eu | kubectl --context eu-prod apply -f -`.
    """
    import yaml

    from killswitch import render
    from killswitch.contract import LeastPrivilege

    inv = session.load()
    entries = [n for n in inv.provider_names if inv.spec.providers[n].type == "kubernetes"]
    if not entries:
        raise UsageError("the inventory has no kubernetes provider")
    for name in providers:
        if name not in entries:
            raise UsageError(
                f"--provider {name}: not a kubernetes entry (known: {', '.join(entries)})"
            )
    items: list[Any] = []
    for name in providers or entries:
        provider = inv.provider(name)
        if isinstance(provider, LeastPrivilege):
            items += provider.least_privilege()["items"]
    document = {"apiVersion": "v1", "kind": "List", "items": items}
    if session.output == "json":
        render.emit_json(document)
    else:
        click.echo(yaml.safe_dump(document, sort_keys=False, default_flow_style=False), nl=False)
    return 0


@cli.group("provider")
@click.argument("name")
def provider_group(name: str) -> None:
    """One provider entry of the inventory: `killswitch provider NAME policy`."""


@provider_group.command("policy")
@session_options
@click.pass_context
def provider_policy(ctx: click.Context, /) -> int:
    """Print the least privilege entry NAME's levers need: an IAM policy (JSON) for aws,
    Roles (YAML; JSON with -o json) for kubernetes. `aws policy` and `kubernetes rbac`
    print the same for every entry of their type at once."""
    session = ctx.find_object(Session)
    assert session is not None and ctx.parent is not None  # the group made both
    name = str(ctx.parent.params["name"])
    import yaml

    from killswitch import render
    from killswitch.contract import LeastPrivilege
    from killswitch.domain import did_you_mean

    inv = session.load()
    if name not in inv.provider_names:
        hint = did_you_mean(name, inv.provider_names)
        raise UsageError(f"no provider {name!r} in the inventory{hint}")
    provider = inv.provider(name)
    if not isinstance(provider, LeastPrivilege):
        raise UsageError(f"provider {name} ({inv.spec.providers[name].type}) declares no policy")
    document = provider.least_privilege()
    if session.output == "json" or "kind" not in document:
        render.emit_json(document)
    else:  # a Kubernetes List: YAML, ready for kubectl apply -f -
        click.echo(yaml.safe_dump(document, sort_keys=False, default_flow_style=False), nl=False)
    return 0
