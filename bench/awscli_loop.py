"""Baseline: the ``aws`` CLI in a shell loop, timed per call on a small subset.

Each ``aws`` invocation starts a Python interpreter and botocore afresh, so its cost
is nearly constant per call; the run measures it on a handful of targets and the
report scales it to N (marked as scaled). The aws CLI is not a dependency of the
project: pass ``--aws-cli PATH`` or set ``$AWS_CLI``, or have ``aws`` on PATH. It
must live in a virtualenv of its own (awscli v1 pins its own botocore).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.boto3_loop import PREFIX, ROLE, flag
from bench.rig import child_env


@dataclass(frozen=True)
class CliTiming:
    calls: int
    seconds: float
    targets: int

    @property
    def per_call(self) -> float:
        return self.seconds / self.calls


def find(explicit: str | None) -> str | None:
    return explicit or shutil.which("aws")


def script(aws: str, endpoint: str, targets: list[tuple[str, str, str]], *, check: bool) -> str:
    """A bash loop as an engineer would type it: read, write when needed, read back."""
    account = targets[0][0]
    q = shlex.quote
    lines = [
        "set -u",
        f"AWS={q(aws)}; E={q(endpoint)}",
        "read -r AK SK ST < <($AWS sts assume-role --endpoint-url $E "
        f"--role-arn {q(ROLE.format(account=account))} --role-session-name oncall "
        "--query 'Credentials.[AccessKeyId,SecretAccessKey,SessionToken]' --output text)",
        "export AWS_ACCESS_KEY_ID=$AK AWS_SECRET_ACCESS_KEY=$SK AWS_SESSION_TOKEN=$ST",
        "calls=1; wrong=0",
    ]
    for target_account, region, model in targets:
        assert target_account == account, "the subset stays in one account"
        name, value = f"{PREFIX}/{model}", flag(model)
        get = f"$AWS ssm get-parameter --endpoint-url $E --region {region} --name {name} "
        get += "--query Parameter.Value --output text 2>/dev/null"
        lines.append(f"v=$({get}); calls=$((calls+1))")
        if check:
            lines.append('case $v in *\'"posture": "revoked"\'*) ;; *) wrong=$((wrong+1));; esac')
            continue
        lines.append('case $v in *\'"posture": "revoked"\'*) ;; *)')
        lines.append(
            f"  $AWS ssm put-parameter --endpoint-url $E --region {region} --name {name} "
            f"--type String --overwrite --value {q(value)} >/dev/null; calls=$((calls+1))"
        )
        lines.append(f"  v=$({get}); calls=$((calls+1))")
        lines.append('  case $v in *\'"posture": "revoked"\'*) ;; *) wrong=$((wrong+1));; esac')
        lines.append(";; esac")
    lines.append('echo "{\\"calls\\": $calls, \\"wrong\\": $wrong}"')
    return "\n".join(lines) + "\n"


def run(
    aws: str, endpoint: str, targets: list[tuple[str, str, str]], workdir: Path, *, check: bool
) -> CliTiming:
    path = workdir / ("aws-check.sh" if check else "aws-revoke.sh")
    path.write_text(script(aws, endpoint, targets, check=check))
    started = time.perf_counter()
    done = subprocess.run(
        ["bash", str(path)], capture_output=True, text=True, env=child_env(), check=True
    )
    seconds = time.perf_counter() - started
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["wrong"]:
        raise RuntimeError(f"aws CLI loop left {result['wrong']} targets not revoked")
    return CliTiming(result["calls"], seconds, len(targets))
