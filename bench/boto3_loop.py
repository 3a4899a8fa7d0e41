"""Baseline: the plain sequential boto3 loop an engineer writes under pressure.

For each account (assume the operator role once), each region, each model: read the
flag, write it when it is not revoked yet, read it back. ``--check`` only reads and
compares (a re-run with nothing to do, and a drift check, are that same loop). No
threads, no rate limiting, boto3's default retries: what people do today.

    python -m bench.boto3_loop --endpoint URL --targets targets.json [--check]

prints one JSON line: {"seconds": …, "reads": …, "writes": …, "wrong": …}.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime

import boto3

ROLE = "arn:aws:iam::{account}:role/killswitch-operator"
PREFIX = "/killswitch/models"


def flag(model: str) -> str:
    return json.dumps(
        {
            "schema": "killswitch.flag/v1",
            "model": model,
            "posture": "revoked",
            "audience": [],
            "op": "by-hand",
            "actor": "oncall@laptop",
            "reason": "bench",
            "ticket": None,
            "updated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        sort_keys=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--targets", required=True, help="JSON list of [account, region, model]")
    parser.add_argument("--check", action="store_true", help="read and compare only")
    args = parser.parse_args()
    with open(args.targets) as f:
        # [account, region, model] or [account, region, model, SSM prefix]
        targets = [(*t[:3], t[3] if len(t) > 3 else PREFIX) for t in json.load(f)]

    started = time.perf_counter()
    reads = writes = wrong = 0
    sts = boto3.client("sts", endpoint_url=args.endpoint)
    account = region = None
    session = ssm = None
    for target_account, target_region, model, prefix in targets:
        if target_account != account:
            account = target_account
            creds = sts.assume_role(RoleArn=ROLE.format(account=account), RoleSessionName="oncall")[
                "Credentials"
            ]
            session = boto3.Session(
                aws_access_key_id=creds["AccessKeyId"],
                aws_secret_access_key=creds["SecretAccessKey"],
                aws_session_token=creds["SessionToken"],
            )
            region = None
        if target_region != region:
            region = target_region
            assert session is not None
            ssm = session.client("ssm", region_name=region, endpoint_url=args.endpoint)
        assert ssm is not None
        name = f"{prefix}/{model}"
        try:
            posture = json.loads(ssm.get_parameter(Name=name)["Parameter"]["Value"])["posture"]
        except ssm.exceptions.ParameterNotFound:
            posture = "open"
        reads += 1
        if posture == "revoked":
            continue
        if args.check:
            wrong += 1
            continue
        ssm.put_parameter(Name=name, Value=flag(model), Type="String", Overwrite=True)
        writes += 1
        after = json.loads(ssm.get_parameter(Name=name)["Parameter"]["Value"])["posture"]
        reads += 1
        if after != "revoked":
            wrong += 1
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "reads": reads, "writes": writes, "wrong": wrong}))


if __name__ == "__main__":
    main()
