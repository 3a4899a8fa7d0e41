"""`make sandbox`: a place to practise. Starts the local servers and keeps them up.

    python demo/sandbox.py up      start (or find) the sandbox; print the two shell lines
    python demo/sandbox.py env     print the two shell lines again
    python demo/sandbox.py down    stop every server and forget the sandbox

The sandbox is a small, whole organisation on 127.0.0.1: moto in server mode (AWS, two
accounts, six regions, the IAM role the deny policy goes on, a load balancer per fleet
region), a Kubernetes API test server (cluster `eu-prod`), two partner platforms
speaking the partner API, and a serving gateway per region of the first account that
reads the flags (the probes prove effect through them). Its inventory, state, keys and
logs live in .sandbox/ (or $KILLSWITCH_SANDBOX_DIR). Two people have their own AWS
credentials there: `alice` (the default profile) and `bob` (`AWS_PROFILE=bob`), so a
restore can be asked for by one and approved by the other.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from demo.fleet import MODELS_YAML, fleet_entries, make_alb, make_cluster  # noqa: E402
from tests.support.partnersim import PartnerSim  # noqa: E402
from tests.support.servers import MotoServer  # noqa: E402

# Where it lives: .sandbox/ (a test puts it elsewhere with KILLSWITCH_SANDBOX_DIR).
HOME = Path(os.environ.get("KILLSWITCH_SANDBOX_DIR") or ROOT / ".sandbox").resolve()
PID = HOME / "sandbox.pid"
READY = HOME / "ready"
LOG = HOME / "sandbox.log"
ENV_FILE = HOME / "env"
MARK = HOME / ".killswitch-sandbox"
MODELS = ["mythos-5", "fable-5"]
US = ["us-east-1", "us-west-2"]
ELSEWHERE = ["eu-west-1", "eu-central-1", "ap-northeast-1", "sa-east-1"]
FLEET_REGIONS = ["us-east-1", "eu-west-1"]
MAIN_ACCOUNT = "123456789012"  # moto's own: alice's and bob's IAM users live here
SECOND_ACCOUNT = "210987654321"  # reached through the operator role
OPERATOR = "arn:aws:iam::{account}:role/killswitch-operator"  # in each account
PARTNERS = {
    "acme": ["eu-west", "us-east"],
    "nimbus": ["ap-tokyo", "us-central"],
}
TOKENS = {"us-analyst": "us-person", "contractor": ""}
START_TIMEOUT = 120.0


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "up"
    if command == "up":
        return up()
    if command == "env":
        return env()
    if command == "down":
        return down()
    if command == "serve":
        return serve()
    print(f"sandbox: unknown command {command!r} (up, env or down)", file=sys.stderr)
    return 64


# -- the commands a person runs ---------------------------------------------------


def up() -> int:
    if _running():
        print(f"sandbox: already up (pid {PID.read_text().strip()}); its inventory:")
        return env()
    HOME.mkdir(parents=True, exist_ok=True)
    if any(HOME.iterdir()) and not MARK.exists():
        print(f"sandbox: {HOME} holds files that are not a sandbox's; not touching it",
              file=sys.stderr)  # fmt: skip
        return 64
    for leftover in HOME.iterdir():  # the last sandbox's servers are gone: so is its state
        if leftover.is_dir():
            import shutil

            shutil.rmtree(leftover)
        else:
            leftover.unlink()
    MARK.write_text("made by demo/sandbox.py; `make sandbox` empties this folder\n")
    with open(LOG, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "serve"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            start_new_session=True,  # outlives `make`, and Ctrl-C in this shell
        )
    deadline = time.monotonic() + START_TIMEOUT
    while not READY.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            print(f"sandbox: the servers did not start; see {LOG}:", file=sys.stderr)
            print(LOG.read_text()[-3000:], file=sys.stderr)
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
            return 1
        time.sleep(0.2)
    print(READY.read_text(), end="")
    print("\nUse it from this shell (bash or zsh):\n")
    return env()


def env() -> int:
    if not _running():
        print("sandbox: not running; start it with `make sandbox`", file=sys.stderr)
        return 1
    print(f'export PATH="{Path(sys.executable).parent}:$PATH"')
    print(f"set -a; . {ENV_FILE}; set +a")
    return 0


def down() -> int:
    if not _running():
        print("sandbox: not running")
        return 0
    pid = int(PID.read_text())
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
    PID.unlink(missing_ok=True)
    READY.unlink(missing_ok=True)
    print("sandbox: stopped (its state and logs stay in .sandbox/ until the next `up`)")
    return 0


def _running() -> bool:
    try:
        return _alive(int(PID.read_text()))
    except (OSError, ValueError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not running
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


# -- the long-lived process that holds the servers ---------------------------------


def serve() -> int:
    """Start every server, write the inventory and the env file, then wait for SIGTERM."""
    stopping: list[Any] = []
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(0)))
    try:
        lines = build(stopping)
        PID.write_text(str(os.getpid()))
        READY.write_text("\n".join(lines) + "\n")
        while True:
            signal.pause()
    finally:
        for server in reversed(stopping):
            try:
                server.stop()
            except Exception as exc:  # stop the others whatever one does
                print(f"sandbox: stopping {server!r}: {exc}", flush=True)


def build(stopping: list[Any]) -> list[str]:
    """The servers, the AWS resources the levers need, the inventory: what was made."""
    import boto3

    os.environ.update(_aws_env())
    moto = MotoServer(HOME / "moto.log").start()
    stopping.append(moto)
    people = _people(moto.url)
    _credentials(people)
    os.environ["AWS_PROFILE"] = "alice"
    boto3.setup_default_session(profile_name="alice")  # the gateways read flags as alice
    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=moto.url)
    iam.create_role(RoleName="bedrock-callers", AssumeRolePolicyDocument="{}")
    _iam_in(moto.url, SECOND_ACCOUNT).create_role(
        RoleName="bedrock-callers", AssumeRolePolicyDocument="{}"
    )
    for region in FLEET_REGIONS:
        make_alb(moto.url, region, MODELS)
    kube, kubeconfig = make_cluster(HOME, MODELS)
    stopping.append(kube)
    partners: dict[str, str] = {}
    for name, regions in PARTNERS.items():
        secret = HOME / f"{name}.secret"
        secret.write_text(f"sandbox-only-secret-for-{name}\n")
        secret.chmod(0o600)
        sim = PartnerSim(
            secret=secret.read_text().strip(),
            key_id="killswitch-sandbox",
            regions=regions,
            models={m: f"{name}.{m}-v1" for m in MODELS},
        ).start()
        stopping.append(sim)
        partners[name] = sim.url
    gateways = _gateways(moto.url)
    stopping += [g.served for g in gateways.values()]
    (HOME / "killswitch.yaml").write_text(
        inventory(moto.url, kubeconfig, partners, {r: g.url for r, g in gateways.items()})
    )
    ENV_FILE.write_text(
        "".join(f"{k}={_quote(v)}\n" for k, v in _shell_env().items())
        + "# the probes' callers: bearer tokens the gateways' identity layer knows\n"
        + "SANDBOX_US_TOKEN=us-analyst\nSANDBOX_CONTRACTOR_TOKEN=contractor\n"
    )
    return [
        f"sandbox up (pid {os.getpid()}); everything on 127.0.0.1, files in {HOME}:",
        f"  AWS (moto)          {moto.url}  accounts {MAIN_ACCOUNT}, {SECOND_ACCOUNT}; "
        f"{len(US + ELSEWHERE)} regions",
        f"  Kubernetes          {kube.url}  context eu-prod",
        *(f"  partner {n:<11} {u}" for n, u in partners.items()),
        f"  gateways            {len(gateways)} (one per region of account {MAIN_ACCOUNT})",
        f"  inventory           {HOME / 'killswitch.yaml'}",
        "  people              alice (default), bob (AWS_PROFILE=bob)",
        "  stop it             make sandbox-down",
    ]


def inventory(
    endpoint: str, kubeconfig: Path, partners: dict[str, str], gateways: dict[str, str]
) -> str:
    partner_entries = "".join(
        f"""\
  {name}:                       # a partner platform reselling both models
    type: partner
    base_url: {url}
    key_id: killswitch-sandbox
    secret_file: {HOME / f"{name}.secret"}
    regions: [{", ".join(PARTNERS[name])}]
    models: {{{", ".join(f"{m}: {name}.{m}-v1" for m in MODELS)}}}
"""
        for name, url in partners.items()
    )
    probe_entries = "".join(
        f"""\
  gw-{region}:
    url: {url}/v1/models/{{model}}/generate
    method: POST
    targets: {{targets: ['aws:aws-prod@{MAIN_ACCOUNT}/{region}/ssm-flag/*']}}
    every_seconds: 0.2
    callers:
      anonymous: {{}}
      contractor: {{token_env: SANDBOX_CONTRACTOR_TOKEN}}
      us-person: {{audience: [us-person], token_env: SANDBOX_US_TOKEN}}
"""
        for region, url in gateways.items()
    )
    fleet = fleet_entries(endpoint, FLEET_REGIONS, kubeconfig)
    return f"""\
# The sandbox's inventory (demo/sandbox.py writes it at every `make sandbox`).
version: 1
state: sqlite:///./state.db
{MODELS_YAML}providers:
  aws-prod:                      # Bedrock and the gateways' flags in two accounts
    type: aws
    regions: [{", ".join(US + ELSEWHERE)}]
    mechanisms: [ssm-flag, iam-deny]
    endpoint_url: {endpoint}
    role_arn: "{OPERATOR}"
    accounts: [{{id: "{MAIN_ACCOUNT}"}}, {{id: "{SECOND_ACCOUNT}"}}]
    iam: {{roles: [bedrock-callers]}}
{fleet}{partner_entries}scopes:
  outside-us: {{models: [mythos-5, fable-5], regions: ["!us-*"]}}
  inside-us: {{models: [mythos-5, fable-5], regions: ["us-*"]}}
policy:
  restore: {{approvals: 2}}      # two different people: alice asks, bob approves
  audit: {{anchor: "file:anchor/checkpoints.jsonl"}}
probes:
{probe_entries}"""


def _aws_env() -> dict[str, str]:
    return {
        "AWS_CONFIG_FILE": str(HOME / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(HOME / "aws-credentials"),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def _shell_env() -> dict[str, str]:
    return {
        "KILLSWITCH_INVENTORY": str(HOME / "killswitch.yaml"),
        **_aws_env(),
        "AWS_PROFILE": "alice",
    }


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def _people(endpoint: str) -> dict[str, tuple[str, str]]:
    """alice and bob: IAM users with their own access keys, so STS says who acts."""
    import boto3

    iam = boto3.client(
        "iam",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="sandbox",
        aws_secret_access_key="sandbox",
    )
    people = {}
    for name in ("alice", "bob"):
        iam.create_user(UserName=name)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        people[name] = (key["AccessKeyId"], key["SecretAccessKey"])
    return people


def _credentials(people: dict[str, tuple[str, str]]) -> None:
    lines = []
    for name, (key_id, secret) in people.items():
        lines += [f"[{name}]", f"aws_access_key_id = {key_id}", f"aws_secret_access_key = {secret}"]
    (HOME / "aws-credentials").write_text("\n".join(lines) + "\n")
    (HOME / "aws-credentials").chmod(0o600)
    (HOME / "aws-config").write_text(
        "".join(f"[profile {n}]\nregion = us-east-1\n" for n in people)
    )


def _iam_in(endpoint: str, account: str) -> Any:
    """An IAM client in ``account`` (moto maps assumed-role keys to the role's account)."""
    import boto3

    sts = boto3.client("sts", region_name="us-east-1", endpoint_url=endpoint)
    role = OPERATOR.replace("{account}", account)
    creds = sts.assume_role(RoleArn=role, RoleSessionName="sandbox-setup")["Credentials"]
    return boto3.client(
        "iam",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


def _gateways(endpoint: str) -> dict[str, Any]:
    """A serving gateway per region of the main account: the reference enforcer reading
    that region's flags (cached for a second), in front of a stand-in model server."""
    from killswitch.enforcer import Enforcer, SsmSource
    from tests.support.gateway import Gateway

    return {
        region: Gateway(region, Enforcer(SsmSource(region, endpoint_url=endpoint), ttl=1.0), TOKENS)
        for region in US + ELSEWHERE
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
