"""``python -m bench.effect``: time to effect at a fleet of gateways.

A revoke is verified when its flags read back; it is *effective* when the gateways
that serve the model refuse callers. Each gateway here is the reference enforcer
(killswitch/enforcer) reading its region's SSM flag with a cache TTL, in front of a
stand-in model server, all on 127.0.0.1 against a moto server. The revoke's probes ask
every gateway until it refuses; the report gives each target's time from read-back to
effect, against the bound a TTL sets (a cached posture lives at most TTL seconds, and
the probes look every ``--every`` seconds).

python -m bench.effect                       # 8 gateways, TTL 2 s
python -m bench.effect --gateways 16 --ttl 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from killswitch.enforcer import Enforcer, SsmSource  # noqa: E402
from killswitch.probes import effect_seconds  # noqa: E402
from tests.support.gateway import Gateway  # noqa: E402
from tests.support.servers import MotoServer  # noqa: E402

REGIONS = [
    "us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1", "eu-west-2",
    "eu-central-1", "eu-north-1", "ap-northeast-1", "ap-southeast-1", "ap-southeast-2",
    "ap-south-1", "ca-central-1", "sa-east-1", "eu-west-3", "ap-northeast-2",
]  # fmt: skip
TOKENS = {"contractor": ""}
FAKE_AWS = {  # moto takes any credentials; none from this machine are ever used
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def inventory(endpoint: str, gateways: dict[str, str], every: float) -> str:
    lines = [
        "version: 1",
        "state: sqlite:///./state.db",
        "models: {mythos-5: {}}",
        "providers:",
        "  aws-prod:",
        "    type: aws",
        f"    regions: [{', '.join(gateways)}]",
        "    mechanisms: [ssm-flag]",
        f"    endpoint_url: {endpoint}",
        "probes:",
    ]
    for region, url in gateways.items():
        lines += [
            f"  gw-{region}:",
            f"    url: {url}/v1/models/{{model}}/generate",
            "    method: POST",
            f"    targets: {{regions: [{region}]}}",
            f"    every_seconds: {every}",
            "    callers: {contractor: {token_env: BENCH_TOKEN}}",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.effect", description=__doc__)
    parser.add_argument("--gateways", type=int, default=8, help=f"at most {len(REGIONS)}")
    parser.add_argument("--ttl", type=float, default=2.0, help="the gateways' cache TTL")
    parser.add_argument("--every", type=float, default=0.2, help="seconds between probes")
    args = parser.parse_args(argv)
    regions = REGIONS[: max(1, min(args.gateways, len(REGIONS)))]
    os.environ.update(FAKE_AWS)  # the gateways' SSM reads, in this process
    work = Path(tempfile.mkdtemp(prefix="killswitch-effect-"))
    server = MotoServer(work / "moto.log").start()
    started: list[Gateway] = []
    try:
        for region in regions:
            source = SsmSource(region, endpoint_url=server.url, timeout=10)
            started.append(Gateway(region, Enforcer(source, ttl=args.ttl), TOKENS))
        for gateway in started:  # each caches "open" first, as a busy gateway would
            assert gateway.call("mythos-5", "contractor")[0] == 200
        urls = {g.name: g.url for g in started}
        (work / "killswitch.yaml").write_text(inventory(server.url, urls, args.every))
        env = {**os.environ, **FAKE_AWS, "BENCH_TOKEN": "contractor"}
        command = [sys.executable, "-m", "killswitch", "--inventory",
                   str(work / "killswitch.yaml"), "revoke", "-m", "mythos-5",
                   "--reason", "bench", "--yes", "-o", "json"]  # fmt: skip
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, cwd=work, check=False
        )
        report = json.loads(done.stdout)
        seconds = [
            s
            for t in report["targets"]
            if (s := effect_seconds(t["result"], t["error"])) is not None
        ]
    finally:
        for gateway in started:
            gateway.served.stop()
        server.stop()
    bound = args.ttl + args.every
    print(
        f"time to effect at {len(regions)} gateways, cache TTL {args.ttl:g}s, probes every "
        f"{args.every:g}s (exit {done.returncode}, {len(seconds)} of {len(regions)} effective)"
    )
    if seconds:
        print(
            f"  median {statistics.median(seconds):.2f}s, max {max(seconds):.2f}s; bound "
            f"TTL + probe interval {bound:.2f}s: max is {max(seconds) / bound:.2f}× it"
        )
    return 0 if len(seconds) == len(regions) else 3


if __name__ == "__main__":
    sys.exit(main())
