"""Baseline: a plain threaded boto3 script making the calls a verified revoke makes.

What an engineer who knows boto3 well writes for speed: one boto3 session, the role
assumed once per account, one client per (account, region) made up front, a pool of
32 threads. First it reads every flag (the plan), then for each one not revoked it
writes the flag and reads it back. No journal, no lock, no rate limiting, no retries:
the CPU it spends per call is what botocore costs, the floor a client written in
Python can reach. killswitch's CPU per call is measured against it in the same run.

    python -m bench.boto3_threaded --endpoint URL --targets targets.json [--threads 32]

prints one JSON line: {"seconds": …, "reads": …, "writes": …, "wrong": …, "cpu": …}.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config

from bench.boto3_loop import PREFIX, ROLE, flag


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--targets", required=True, help="JSON list of [account, region, model]")
    parser.add_argument("--threads", type=int, default=32)
    args = parser.parse_args()
    with open(args.targets) as f:
        # [account, region, model] or [account, region, model, SSM prefix]
        targets = [(*t[:3], t[3] if len(t) > 3 else PREFIX) for t in json.load(f)]

    started = time.perf_counter()
    config = Config(max_pool_connections=args.threads, retries={"total_max_attempts": 1})
    session = boto3.Session()
    sts = session.client("sts", endpoint_url=args.endpoint, config=config)
    accounts = sorted({t[0] for t in targets})
    regions = sorted({t[1] for t in targets})

    def assume(account: str) -> dict[str, str]:
        creds = sts.assume_role(RoleArn=ROLE.format(account=account), RoleSessionName="oncall")
        c = creds["Credentials"]
        return {
            "aws_access_key_id": c["AccessKeyId"],
            "aws_secret_access_key": c["SecretAccessKey"],
            "aws_session_token": c["SessionToken"],
        }

    with ThreadPoolExecutor(args.threads) as pool:
        credentials = dict(zip(accounts, pool.map(assume, accounts), strict=True))
        # boto3 sessions are not thread-safe: the clients are made in this thread.
        clients: dict[tuple[str, str], Any] = {
            (a, r): session.client(
                "ssm", region_name=r, endpoint_url=args.endpoint, config=config, **credentials[a]
            )
            for a in accounts
            for r in regions
        }

        def read(target: tuple[str, str, str, str]) -> str:
            account, region, model, prefix = target
            ssm = clients[(account, region)]
            try:
                value = ssm.get_parameter(Name=f"{prefix}/{model}")["Parameter"]["Value"]
            except ssm.exceptions.ParameterNotFound:
                return "open"
            return str(json.loads(value)["posture"])

        def revoke(target: tuple[str, str, str, str]) -> bool:
            account, region, model, prefix = target
            ssm = clients[(account, region)]
            ssm.put_parameter(
                Name=f"{prefix}/{model}", Value=flag(model), Type="String", Overwrite=True
            )
            return read(target) == "revoked"

        seen = list(pool.map(read, targets))
        todo = [t for t, posture in zip(targets, seen, strict=True) if posture != "revoked"]
        done = list(pool.map(revoke, todo))
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "seconds": seconds,
                "reads": len(targets) + len(todo),
                "writes": len(todo),
                "wrong": done.count(False),
            }
        )
    )


if __name__ == "__main__":
    main()
