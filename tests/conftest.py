"""Fixtures that start real servers on 127.0.0.1 and a workspace with an inventory."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from killswitch.clock import SYSTEM, Clock
from tests.support.faultproxy import FaultProxy
from tests.support.servers import MotoServer

US = ["us-east-1", "us-east-2", "us-west-1", "us-west-2"]
NON_US = ["eu-west-1", "eu-central-1", "ap-northeast-1", "ap-southeast-2"]
REGIONS = US + NON_US
MODELS = ["mythos-5", "fable-5"]

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(autouse=True)
def _offline_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials only: nothing here may ever reach a real AWS account."""
    for key, value in AWS_ENV.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "KILLSWITCH_INVENTORY", "KILLSWITCH_ACTOR",
                "KILLSWITCH_WORKERS"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(params=["threads", "workers"])
def fan_out(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test twice: lever calls made by threads in the CLI's process, then by two
    worker processes (killswitch/workers.py), forced on whatever the plan's size. The
    crash and fault tests use it: the journal, fencing, deadline and crash semantics
    are the same in both modes."""
    monkeypatch.setenv("KILLSWITCH_WORKERS", "0" if request.param == "threads" else "2")
    return str(request.param)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    yield server
    server.stop()


@pytest.fixture
def moto(moto_server: MotoServer) -> MotoServer:
    """A moto server with no state left over from earlier tests."""
    moto_server.reset()
    return moto_server


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of moto; the inventory points at it."""
    p = FaultProxy(moto.url).start()
    yield p
    p.stop()


MOTO_ACCOUNT = "123456789012"  # the account moto's IAM users live in


def person(name: str) -> str:
    """The principal killswitch records for ``name`` acting with their own credentials."""
    return f"{name}@{MOTO_ACCOUNT}"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


NEXT_STEP = re.compile(r"^next: \S", re.MULTILINE)


def shows_next_step(result: Result) -> bool:
    """Every exit but 0 and 64 names the command to run next (docs/exit-codes.md): a
    ``next:`` line on a terminal, ``next`` (a report) or ``error.hint`` in JSON. A 64
    changed nothing, and its message says what to fix on the command line."""
    if result.code in (0, 64):
        return True
    if NEXT_STEP.search(result.stdout) or NEXT_STEP.search(result.stderr):
        return True
    try:
        data = json.loads(result.stdout)
    except ValueError:
        return False
    if not isinstance(data, dict):
        return False
    error = data.get("error")
    return bool(data.get("next") or (isinstance(error, dict) and error.get("hint")))


@dataclass
class Workspace:
    """A folder with an inventory, and the ways a user or a test reaches it."""

    path: Path
    endpoint: str  # what the inventory talks to (moto, or the fault proxy in front of it)
    server: str  # moto itself, for checking what it really holds
    # person → their own AWS access keys (an IAM user on moto): who acts comes from a
    # credential (killswitch/identity.py), so each person of a test has their own.
    people: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def inventory(self) -> Path:
        return self.path / "killswitch.yaml"

    @property
    def state_db(self) -> Path:
        return self.path / ".killswitch" / "state.db"

    def write_inventory(self, **overrides: Any) -> Path:
        doc: dict[str, Any] = {
            "version": 1,
            "state": "sqlite:///./.killswitch/state.db",
            "models": {m: {} for m in MODELS},
            "providers": {
                "aws-prod": {
                    "type": "aws",
                    "regions": REGIONS,
                    "mechanisms": ["ssm-flag"],
                    "endpoint_url": self.endpoint,
                }
            },
            "scopes": {
                "export-control": {"models": MODELS, "regions": ["*"]},
                "outside-us": {"models": MODELS, "regions": ["!us-*"]},
            },
            "policy": {
                "restore": {"approvals": 2},
                "retry": {"attempts": 3, "max_seconds": 5, "base_seconds": 0.05},
            },
        }
        doc.update(overrides)
        self.inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
        return self.inventory

    def credentials(self, person: str) -> dict[str, str]:
        """``person``'s own AWS access keys: an IAM user on the moto server, made once."""
        if person not in self.people:
            iam = boto3.client("iam", region_name="us-east-1", endpoint_url=self.server)
            with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
                iam.create_user(UserName=person)
            key = iam.create_access_key(UserName=person)["AccessKey"]
            self.people[person] = {
                "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            }
        return self.people[person]

    def run(
        self,
        *args: str,
        actor: str = "alice",
        env: dict[str, str] | None = None,
        clock: Clock = SYSTEM,
    ) -> Result:
        """The CLI in this process, exactly as main() runs it (exit codes included), as
        ``actor`` (their credentials; the name is also given as the --actor label), the
        engine on ``clock``."""
        from killswitch.cli import main

        out, err = io.StringIO(), io.StringIO()
        argv = ["--inventory", str(self.inventory), "--actor", actor, *args]
        changed = self.credentials(actor) | (env or {})
        before = {k: os.environ.get(k) for k in changed}
        os.environ.update(changed)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    main(argv, clock=clock)
                except SystemExit as exc:
                    code = int(exc.code or 0)
        finally:
            for k, v in before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        result = Result(code, out.getvalue(), err.getvalue())
        assert shows_next_step(result), f"exit {code} of {args} names no next step:\n{result}"
        return result

    def spawn(self, *args: str, actor: str = "alice", **kwargs: Any) -> subprocess.Popen[str]:
        """The installed ``killswitch`` command as its own process, as ``actor``."""
        env = {**(kwargs.pop("env", None) or os.environ), **self.credentials(actor)}
        return subprocess.Popen(
            [killswitch_command(), "--inventory", str(self.inventory), "--actor", actor, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=self.path,
            env=env,
            **kwargs,
        )

    def ssm(self, region: str) -> Any:
        """A boto3 client straight at the server, to check what it really holds."""
        return boto3.client("ssm", region_name=region, endpoint_url=self.server)

    def flag(self, region: str, model: str) -> dict[str, Any] | None:
        try:
            reply = self.ssm(region).get_parameter(Name=f"/killswitch/models/{model}")
        except self.ssm(region).exceptions.ParameterNotFound:
            return None
        document: dict[str, Any] = json.loads(reply["Parameter"]["Value"])
        document["_version"] = reply["Parameter"]["Version"]
        return document

    def posture(self, region: str, model: str) -> str:
        flag = self.flag(region, model)
        return "open" if flag is None else str(flag["posture"])


def killswitch_command() -> str:
    found = shutil.which("killswitch", path=str(Path(sys.executable).parent))
    assert found, "the killswitch console script is not installed in this environment"
    return found


@pytest.fixture
def ws(tmp_path: Path, moto: MotoServer) -> Workspace:
    """A workspace whose inventory talks to moto directly."""
    w = Workspace(tmp_path, moto.url, moto.url)
    w.write_inventory()
    return w


@pytest.fixture
def faulty_ws(tmp_path: Path, proxy: FaultProxy, moto: MotoServer) -> Workspace:
    """A workspace whose inventory talks to moto through the fault proxy."""
    w = Workspace(tmp_path, proxy.url, moto.url)
    w.write_inventory()
    return w
