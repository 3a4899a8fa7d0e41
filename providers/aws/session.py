"""Sessions and clients: per account (profile or assumed role), service and region.

boto3 sessions are not thread-safe, clients are: both are built under a lock
and then shared by the fan-out threads. botocore's own retries are off; the
engine's tenacity policy is the one budget. An assumed role's session name
carries the actor and op id, so CloudTrail shows who pulled the switch.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import boto3
from botocore.config import Config

from providers.aws.errors import aws_call


def client_config(timeout: float) -> Config:
    """botocore's retries off (the engine's policy is the one budget); every call bounded:
    a server that hangs costs at most ``timeout`` per try."""
    return Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=min(5.0, timeout),
        read_timeout=timeout,
        max_pool_connections=32,
    )


OBSERVER = "killswitch-observe"


def session_name(actor: str | None, op_id: str | None) -> str:
    """A RoleSessionName (2-64 of [\\w+=,.@-]) naming who acts and in which op."""
    if actor is None:
        return OBSERVER
    raw = f"ks.{op_id}.{actor}" if op_id else f"ks.{actor}"
    return re.sub(r"[^\w+=,.@-]", "-", raw)[:64]


class Clients:
    def __init__(
        self, *, profile: str | None, endpoint_url: str | None, timeout: float = 15.0
    ) -> None:
        self.profile = profile
        self.endpoint_url = endpoint_url
        self.config = client_config(timeout)
        self._lock = threading.Lock()
        self._base: boto3.Session | None = None
        self._sessions: dict[tuple[str | None, str], boto3.Session] = {}
        self._clients: dict[tuple[str | None, str, str, str], Any] = {}

    def client(self, service: str, region: str, role_arn: str | None, name: str) -> Any:
        """A client for ``service`` in ``region``, as ``role_arn`` (or the base identity)."""
        key = (role_arn, name if role_arn else "", service, region)
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key)
                if client is None:
                    session = self._session_locked(role_arn, name)
                    client = session.client(
                        service,  # type: ignore[call-overload]
                        region_name=region,
                        endpoint_url=self.endpoint_url,
                        config=self.config,
                    )
                    self._clients[key] = client
        return client

    def _session_locked(self, role_arn: str | None, name: str) -> boto3.Session:
        if self._base is None:
            with aws_call(f"AWS profile {self.profile or '(default chain)'}"):
                self._base = boto3.Session(profile_name=self.profile)
        if role_arn is None:
            return self._base
        key = (role_arn, name)
        if key not in self._sessions:
            sts = self._base.client(
                "sts",
                endpoint_url=self.endpoint_url,
                config=self.config,
                region_name=self._base.region_name or "us-east-1",
            )
            with aws_call(f"sts:AssumeRole {role_arn}"):
                creds = sts.assume_role(RoleArn=role_arn, RoleSessionName=name)["Credentials"]
            self._sessions[key] = boto3.Session(
                aws_access_key_id=creds["AccessKeyId"],
                aws_secret_access_key=creds["SecretAccessKey"],
                aws_session_token=creds["SessionToken"],
            )
        return self._sessions[key]
