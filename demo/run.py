"""`make demo`: the export-control incident, end to end, against a local moto server.

Starts moto in server mode on 127.0.0.1, writes an inventory for two models in
ten regions, then runs the real `killswitch` command the way an on-call
engineer would, checking each exit code as it goes.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from demo.fleet import (  # noqa: E402
    MODELS_YAML,
    fleet_entries,
    killswitch_rules,
    make_alb,
    make_cluster,
    replicas,
)
from tests.support.dynamodb_local import DynamoDbLocal  # noqa: E402
from tests.support.partnersim import PartnerSim  # noqa: E402
from tests.support.servers import MotoServer  # noqa: E402

WORK = ROOT / ".demo"
STATE = os.environ.get("STATE") or "sqlite"  # `make demo STATE=dynamodb`: shared state
MODELS = ["mythos-5", "fable-5"]
US = ["us-east-1", "us-east-2", "us-west-1", "us-west-2"]
ELSEWHERE = [
    "eu-west-1",
    "eu-central-1",
    "eu-north-1",
    "ap-northeast-1",
    "ap-southeast-2",
    "sa-east-1",
]
ENV = {
    **os.environ,
    "AWS_ACCESS_KEY_ID": "demo",
    "AWS_SECRET_ACCESS_KEY": "demo",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
    "KILLSWITCH_INVENTORY": str(WORK / "killswitch.yaml"),
    "ACME_KILLSWITCH_SECRET": "demo-only-shared-secret",  # the partner's HMAC key
    # The probes' callers: bearer tokens the gateways' identity layer knows.
    "DEMO_US_TOKEN": "us-analyst",
    "DEMO_CONTRACTOR_TOKEN": "contractor",
}
GATEWAY_REGIONS = US + ELSEWHERE  # a serving gateway with the reference enforcer in each
TOKENS = {"us-analyst": "us-person", "contractor": ""}
FLEET_REGIONS = ["us-east-1", "eu-west-1"]
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def probes(gateways: dict[str, str]) -> str:
    """One probe per gateway: an anonymous caller, a contractor and a US person."""
    lines = ["probes:"]
    for region, url in gateways.items():
        lines += [
            f"  gw-{region}:",
            f"    url: {url}/v1/models/{{model}}/generate",
            "    method: POST",
            f"    targets: {{targets: ['aws:aws-prod/{region}/ssm-flag/*']}}",  # the flags it reads
            "    every_seconds: 0.2",
            "    callers:",
            "      anonymous: {}",
            "      contractor: {token_env: DEMO_CONTRACTOR_TOKEN}",
            "      us-person: {audience: [us-person], token_env: DEMO_US_TOKEN}",
        ]
    return "\n".join(lines) + "\n"


def start_gateways(endpoint: str) -> tuple[dict[str, str], list[Any]]:
    """A serving gateway per region: the reference enforcer reading that region's flags
    (cached for a second), in front of a stand-in model server."""
    from killswitch.enforcer import Enforcer, SsmSource
    from tests.support.gateway import Gateway

    started = [
        Gateway(region, Enforcer(SsmSource(region, endpoint_url=endpoint), ttl=1.0), TOKENS)
        for region in GATEWAY_REGIONS
    ]
    return {g.name: g.url for g in started}, started


def inventory(endpoint: str, partner_url: str, kubeconfig: Path, state: str) -> str:
    regions = ", ".join(US + ELSEWHERE)
    fleet = fleet_entries(endpoint, FLEET_REGIONS, kubeconfig)
    return f"""\
version: 1
state: {state}
{MODELS_YAML}providers:
  aws-prod:                      # Bedrock and the gateways' flags, every region
    type: aws
    regions: [{regions}]
    mechanisms: [ssm-flag, iam-deny]
    endpoint_url: {endpoint}
    iam: {{roles: [bedrock-callers]}}
{fleet}  acme:                          # a partner platform reselling both models
    type: partner
    base_url: {partner_url}
    key_id: killswitch-demo
    secret_env: ACME_KILLSWITCH_SECRET
    regions: [eu-west, us-east]
    models: {{mythos-5: acme.mythos-5-v1, fable-5: acme.fable-5-v1}}
scopes:
  export-control: {{models: [mythos-5, fable-5], regions: ["*"]}}
  outside-us: {{models: [mythos-5, fable-5], regions: ["!us-*"]}}
  inside-us: {{models: [mythos-5, fable-5], regions: ["us-*"], providers: [aws-prod, acme]}}
policy:
  restore:                       # two people, each signing with their own SSH key
    approvals: 2
    signed: true
    allowed_signers: keys/allowed_signers
  audit:                         # every op checkpoints the audit chain outside the store
    anchor: file:anchor/checkpoints.jsonl
"""


def make_keys(folder: Path, people: list[str]) -> None:
    """An SSH key each (as on their laptops), and the allowed_signers file that says whose
    key is whose: the same format git uses for signed commits."""
    folder.mkdir()
    lines = []
    for name in people:
        key = folder / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key],
                       check=True)  # fmt: skip
        kind, blob = (folder / f"{name}.pub").read_text().split()[:2]
        lines.append(f"{name}@example.com {kind} {blob}")
    (folder / "allowed_signers").write_text("\n".join(lines) + "\n")


def say(text: str) -> None:
    print(f"\n{BOLD}## {text}{RESET}", flush=True)


def killswitch(command_line: str, *, expect: int, into: Path | None = None) -> str:
    """Run ``killswitch COMMAND_LINE`` as a user would; stop the demo on a surprise exit code.
    With ``into``, its stdout goes to that file (as `> FILE` would), not the screen."""
    args = shlex.split(command_line)
    command = shutil.which("killswitch", path=str(Path(sys.executable).parent)) or "killswitch"
    shown = f" > {into.name}" if into else ""
    print(f"{DIM}$ killswitch {command_line}{shown}{RESET}", flush=True)
    result = subprocess.run(
        [command, *args],
        env=ENV,
        cwd=WORK,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if into is not None:
        into.write_text(result.stdout)
    else:
        sys.stdout.write(result.stdout)
    sys.stdout.write(result.stderr)
    print(f"{DIM}(exit {result.returncode}){RESET}", flush=True)
    if result.returncode != expect:
        raise SystemExit(f"demo: expected exit {expect}, got {result.returncode}")
    return result.stdout


def reopen_by_hand(endpoint: str, region: str, model: str) -> None:
    """An out-of-band change, straight at the AWS API, bypassing killswitch."""
    import boto3

    ssm = boto3.client("ssm", region_name=region, endpoint_url=endpoint)
    ssm.put_parameter(
        Name=f"/killswitch/models/{model}",
        Value=json.dumps({"posture": "open", "audience": []}),
        Type="String",
        Overwrite=True,
    )


def show_iam_policy(endpoint: str, model: str) -> None:
    """What IAM now holds: one deny policy per model, one statement per closed region."""
    import boto3

    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=endpoint)
    account = boto3.client("sts", region_name="us-east-1", endpoint_url=endpoint)
    arn = (
        f"arn:aws:iam::{account.get_caller_identity()['Account']}"
        f":policy/killswitch/killswitch-deny-{model}"
    )
    policy = iam.get_policy(PolicyArn=arn)["Policy"]
    document = iam.get_policy_version(PolicyArn=arn, VersionId=policy["DefaultVersionId"])[
        "PolicyVersion"
    ]["Document"]
    print(f"{DIM}IAM {arn} ({policy['DefaultVersionId']}, attached to bedrock-callers):{RESET}")
    for statement in document["Statement"]:
        condition = statement.get("Condition", {}).get("StringNotEquals")
        spared = f" except {next(iter(condition.values()))}" if condition else ""
        print(f"  {statement['Sid']}: Deny {len(statement['Action'])} bedrock actions{spared}")


def show_fleet(endpoint: str, listeners: dict[str, str], partner: PartnerSim, kube: Any) -> None:
    """What the load balancers and the partner now hold, read from them directly."""
    for region, listener in listeners.items():
        rules = killswitch_rules(endpoint, region, listener)
        paths = [r["Conditions"][0]["PathPatternConfig"]["Values"][0] for r in rules]
        print(f"{DIM}ALB listener in {region}: 403 rules for {paths or 'nothing'}{RESET}")
    for region in ("eu-west", "us-east"):
        access = partner.access("mythos-5", region)
        audience = f" {access['audience']}" if access["audience"] else ""
        print(f"{DIM}partner acme, mythos-5 in {region}: {access['posture']}{audience}{RESET}")
    for model in MODELS:
        print(
            f"{DIM}cluster k8s-eu, deployment {model}-api: {replicas(kube, model + '-api')} "
            f"replicas{RESET}"
        )


def main() -> None:
    started = time.monotonic()
    os.environ.update(ENV)  # the out-of-band boto3 call uses the same fake credentials
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    server = MotoServer(WORK / "moto.log").start()
    partner = PartnerSim(
        secret=ENV["ACME_KILLSWITCH_SECRET"],
        key_id="killswitch-demo",
        regions=["eu-west", "us-east"],
        models={"mythos-5": "acme.mythos-5-v1", "fable-5": "acme.fable-5-v1"},
    ).start()
    partner.behave(slow_ops=1, poll_after=0)  # the partner confirms asynchronously
    kube, kubeconfig = make_cluster(WORK, MODELS)
    order = "--reason 'Commerce export order' --ticket INC-2041 --yes"
    ddb: DynamoDbLocal | None = None
    try:
        state = "sqlite:///./state.db"
        if STATE == "dynamodb":
            ddb = DynamoDbLocal(WORK / "dynamodb-local.log").start()
            state = f"dynamodb://killswitch-demo?region=us-east-1&endpoint_url={ddb.url}"
        elif STATE != "sqlite":
            raise SystemExit(f"demo: STATE is sqlite or dynamodb, not {STATE!r}")
        urls, gateways = start_gateways(server.url)
        (WORK / "killswitch.yaml").write_text(
            inventory(server.url, partner.url, kubeconfig, state) + probes(urls)
        )
        make_keys(WORK / "keys", ["alice", "bob"])
        listeners = {region: make_alb(server.url, region, MODELS) for region in FLEET_REGIONS}
        import boto3

        boto3.client("iam", region_name="us-east-1", endpoint_url=server.url).create_role(
            RoleName="bedrock-callers", AssumeRolePolicyDocument="{}"
        )
        print(f"moto server (AWS APIs) on {server.url}; partner simulator on {partner.url}")
        print(f"inventory: {WORK / 'killswitch.yaml'}")
        if ddb is not None:
            say("Shared state: one DynamoDB table for every operator, runbook runner and cron job")
            print(f"DynamoDB Local (AWS's own implementation, on Java) on {ddb.url}")
            killswitch("state init", expect=0)

        say("The order: block mythos-5 and fable-5 outside the US, US persons only inside")
        killswitch("inventory validate", expect=0)
        killswitch("plan revoke --scope outside-us", expect=2)

        say("The runbook: revoke outside the US, restrict the US to us-person, verify, notify")
        lockdown = ROOT / "runbooks" / "export-control-lockdown.yaml"
        killswitch(f"runbook show {lockdown}", expect=0)
        killswitch(f"--actor alice runbook run {lockdown} --var ticket=INC-2041 --yes", expect=0)
        killswitch("status", expect=0)
        killswitch("status --output html", expect=0, into=WORK / "posture.html")
        print(f"the posture map, one self-contained page: {WORK / 'posture.html'}")
        say("Proof by effect: gateways refuse all outside the US, serve only US persons in it")
        killswitch("verify --effect --model all", expect=0)
        show_iam_policy(server.url, "mythos-5")
        show_fleet(server.url, listeners, partner, kube)

        say("Running the same revoke again changes nothing (zero writes)")
        killswitch(f"--actor alice revoke --scope outside-us {order}", expect=0)

        say("2 a.m.: someone re-opens mythos-5 in eu-west-1 by hand, bypassing killswitch")
        reopen_by_hand(server.url, "eu-west-1", "mythos-5")
        killswitch("drift --region eu-west-1", expect=2)
        say("The scheduled drift check closes it again (an op by drift-check) and writes metrics")
        metrics = WORK / "killswitch.prom"
        killswitch(f"drift --fix --region eu-west-1 --metrics-file {metrics}", expect=0)
        killswitch("drift", expect=0)

        say("After review: restore needs two people, each signing (alice asks, bob approves)")
        out = killswitch(
            "restore --model all --reason 'review complete' --ticket INC-2041 "
            "--key keys/alice --yes --output json",
            expect=5,
        )
        op = json.loads(out)["op"]
        say("alice cannot approve her own request, whatever name she types")
        killswitch(f"--actor bob approve {op} --key keys/alice --yes", expect=5)
        say("bob approves with his key: the restore applies")
        killswitch(f"approve {op} --key keys/bob --yes", expect=0)
        killswitch(f"ops show {op}", expect=0)
        killswitch("status", expect=0)
        show_fleet(server.url, listeners, partner, kube)
        say("Proof by effect after the restore: every caller is served again")
        killswitch("verify --effect --model all", expect=0)

        say("The record: every op and the hash-chained audit log")
        killswitch("ops list", expect=0)
        killswitch("audit verify --anchor file:anchor/checkpoints.jsonl", expect=0)
        killswitch("lock status", expect=0)
    finally:
        for gateway in locals().get("gateways", []):
            gateway.served.stop()
        if ddb is not None:
            ddb.stop()
        kube.stop()
        partner.stop()
        server.stop()
    print(f"\n{BOLD}demo complete in {time.monotonic() - started:.1f}s{RESET}")


if __name__ == "__main__":
    main()
