"""The servers a benchmark runs against: an AWS stand-in (the lean server, or moto),
and the latency proxy in front of it.

Both run as their own processes on 127.0.0.1, so the process being measured
(killswitch, or a baseline) is the only thing in its own interpreter. The rig also
talks to the server directly, bypassing the proxy, to check what a run left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.fleet import PREFIX, ROLE, Shape
from tests.support.servers import MotoServer

# Fake credentials only: nothing here may ever reach a real AWS account.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
CLEARED = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "KILLSWITCH_INVENTORY", "KILLSWITCH_ACTOR")


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(AWS_ENV)
    env.update(extra)
    return env


def cpu_seconds(pid: int) -> float:
    """User + system CPU a live process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Child:
    """A ``python -m bench.<module>`` server that prints ``listening <url>`` when ready."""

    def __init__(self, module: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith("listening "):
            self.stop()
            raise RuntimeError(f"{module} did not start: {line!r}")
        self.url = line.split(" ", 1)[1]

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


class Proxy(Child):
    """The latency proxy (bench/latency.py) and its call counters."""

    def __init__(self, upstream: str, rtt: float, jitter: float) -> None:
        super().__init__(
            "bench.latency", "--upstream", upstream, "--rtt", str(rtt), "--jitter", str(jitter)
        )
        self.rtt, self.jitter = rtt, jitter

    def calls(self) -> dict[str, int]:
        # Generous: after a run with thousands of clients the proxy holds as many
        # kept-alive connections, each a thread, and answers slowly on a busy machine.
        with urllib.request.urlopen(self.url + "/__bench__/calls", timeout=120) as reply:
            counts: dict[str, int] = json.load(reply)
        return counts

    def reset(self) -> None:
        request = urllib.request.Request(self.url + "/__bench__/reset", method="POST")
        urllib.request.urlopen(request, timeout=120).close()


class Upstream:
    """The server behind the proxy: moto, or the lean stand-in (bench/leanserver.py)."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self._moto: MotoServer | None = None
        self._lean: Child | None = None
        if kind == "moto":
            self._moto = MotoServer(workdir / "moto.log").start()
            self.url = self._moto.url
        elif kind == "lean":
            self._lean = Child("bench.leanserver")
            self.url = self._lean.url
        else:
            raise ValueError(f"unknown server {kind!r} (moto or lean)")

    @property
    def pid(self) -> int:
        if self._moto is not None:
            assert self._moto._process is not None
            return self._moto._process.pid
        assert self._lean is not None
        return self._lean.pid

    def reset(self) -> None:
        request = urllib.request.Request(self.url + "/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()

    def stop(self) -> None:
        if self._moto is not None:
            self._moto.stop()
        if self._lean is not None:
            self._lean.stop()


class Rig:
    def __init__(self, workdir: Path, rtt: float, jitter: float, server: str = "lean") -> None:
        os.environ.update(AWS_ENV)  # for the checking clients made in this process
        for key in CLEARED:
            os.environ.pop(key, None)
        self.server = Upstream(server, workdir)
        try:
            self.proxy = Proxy(self.server.url, rtt, jitter)
        except BaseException:
            self.server.stop()
            raise
        self._clients: dict[tuple[str, str], Any] = {}

    @property
    def endpoint(self) -> str:
        return self.proxy.url

    def stop(self) -> None:
        self.proxy.stop()
        self.server.stop()

    def reset(self) -> None:
        """Empty the server and zero the proxy's counters."""
        self.server.reset()
        self._clients.clear()
        self.proxy.reset()

    def server_cpu(self) -> float:
        """CPU seconds the server and the proxy have used so far."""
        return cpu_seconds(self.server.pid) + cpu_seconds(self.proxy.pid)

    @contextmanager
    def server_cpu_during(self, into: dict[str, float]) -> Iterator[None]:
        before = self.server_cpu()
        yield
        into["server_cpu"] = self.server_cpu() - before

    # -- checking what the server holds, straight at it (no proxy, no latency) ----
    def ssm(self, account: str, region: str) -> Any:
        import boto3

        key = (account, region)
        if key not in self._clients:
            sts = boto3.client("sts", region_name="us-east-1", endpoint_url=self.server.url)
            creds = sts.assume_role(
                RoleArn=ROLE.format(account=account), RoleSessionName="bench-check"
            )["Credentials"]
            self._clients[key] = boto3.client(
                "ssm",
                region_name=region,
                endpoint_url=self.server.url,
                aws_access_key_id=creds["AccessKeyId"],
                aws_secret_access_key=creds["SecretAccessKey"],
                aws_session_token=creds["SessionToken"],
            )
        return self._clients[key]

    def postures(self, shape: Shape) -> dict[tuple[str, str, str], str]:
        """(account, region, model) → the posture its flag holds ("open" when missing)."""

        def read(where: tuple[str, str]) -> dict[tuple[str, str, str], str]:
            account, region = where
            found = {}
            pages = self.ssm(account, region).get_paginator("get_parameters_by_path")
            for page in pages.paginate(Path=PREFIX, PaginationConfig={"PageSize": 10}):
                for parameter in page["Parameters"]:
                    model = parameter["Name"].rsplit("/", 1)[-1]
                    found[(account, region, model)] = json.loads(parameter["Value"])["posture"]
            return found

        places = [(a, r) for a in shape.account_ids() for r in shape.region_names()]
        for place in places:  # make the clients serially (boto3 sessions are not thread-safe)
            self.ssm(*place)
        held: dict[tuple[str, str, str], str] = {}
        with ThreadPoolExecutor(8) as pool:
            for found in pool.map(read, places):
                held.update(found)
        return {t: held.get(t, "open") for t in shape.targets()}

    def set_posture(self, target: tuple[str, str, str], posture: str) -> None:
        """Someone changes a flag by hand (drift)."""
        account, region, model = target
        document: dict[str, object] = {
            "schema": "killswitch.flag/v1",
            "model": model,
            "posture": posture,
            "audience": [],
            "op": None,
            "actor": "someone@console",
            "reason": "opened by hand",
            "ticket": None,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self.ssm(account, region).put_parameter(
            Name=f"{PREFIX}/{model}", Value=json.dumps(document), Type="String", Overwrite=True
        )
