"""An independent IAM policy evaluator: AWS's evaluation logic as implemented by the npm
package ``@cloud-copilot/iam-simulate`` (validated against the Service Authorization
Reference), on node.

It installs nothing: `.ci/run` (or `make iamsim`) puts the package under
``.iamsim/node_modules`` in the repository root. One node process evaluates a whole
batch, so a matrix of thousands of requests costs one process start.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PREFIX = ROOT / ".iamsim"
SCRIPT = Path(__file__).with_name("iam_simulate.cjs")
INSTALL_HINT = (
    "the IAM evaluator is not installed: run `make iamsim` "
    "(npm install --prefix .iamsim @cloud-copilot/iam-simulate) and make sure `node` is on the PATH"
)


@dataclass(frozen=True)
class Ask:
    """One request: who asks for what, where."""

    action: str
    resource: str
    region: str
    principal: str
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def account(self) -> str:
        return self.principal.split(":")[4]


def evaluate(
    asks: Sequence[Ask],
    identity: Mapping[str, Sequence[Mapping[str, Any]]],
    scps: Sequence[Mapping[str, Any]] = (),
    boundary: Sequence[Mapping[str, Any]] = (),
    context: Mapping[str, str] | None = None,
) -> list[str]:
    """ "Allowed", "ExplicitlyDenied" or "ImplicitlyDenied" for each ask. ``identity``
    maps a principal ARN to the policy documents attached to it; ``scps`` apply to every
    principal (one level of the organisation); ``context`` adds keys to every request."""
    node = shutil.which("node")
    package = PREFIX / "node_modules" / "@cloud-copilot" / "iam-simulate" / "package.json"
    if node is None or not package.is_file():
        raise RuntimeError(INSTALL_HINT)
    cases = []
    for ask in asks:
        request: dict[str, Any] = {"aws:RequestedRegion": ask.region, **(context or {})}
        request.update({f"aws:PrincipalTag/{k}": v for k, v in ask.tags.items()})
        case: dict[str, Any] = {
            "action": ask.action,
            "principal": ask.principal,
            "resource": ask.resource,
            "accountId": ask.account,
            "context": request,
            "identityPolicies": [
                {"name": f"p{i}", "policy": doc} for i, doc in enumerate(identity[ask.principal])
            ],
            "unvalidated": ask.resource.startswith("arn:aws:bedrock:::"),
        }
        if scps:
            case["serviceControlPolicies"] = [
                {
                    "orgIdentifier": "r-root",
                    "policies": [{"name": f"s{i}", "policy": d} for i, d in enumerate(scps)],
                }
            ]
        if boundary:
            case["permissionBoundaryPolicies"] = [
                {"name": f"b{i}", "policy": d} for i, d in enumerate(boundary)
            ]
        cases.append(case)
    done = subprocess.run(
        [node, str(SCRIPT)],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "IAMSIM_PREFIX": str(PREFIX)},
    )
    if done.returncode != 0:
        raise RuntimeError(f"iam-simulate failed: {done.stderr[-2000:]}")
    results: list[Any] = json.loads(done.stdout)
    errors = [(a, r) for a, r in zip(asks, results, strict=True) if not isinstance(r, str)]
    if errors:
        raise AssertionError(f"the evaluator refused {len(errors)} requests, e.g. {errors[0]}")
    return [str(r) for r in results]
