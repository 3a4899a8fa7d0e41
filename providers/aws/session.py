"""Sessions and clients: per account (profile or assumed role), service and region.

boto3 sessions are not thread-safe, clients are: both are built under a lock
and then shared by the fan-out threads. botocore's own retries are off; the
engine's tenacity policy is the one budget. An assumed role's session name
carries the actor and op id, so CloudTrail shows who pulled the switch.

Each request through an assumed role is signed with the credentials of its own role
session (``signed_as``), so one client per service and region serves every account
and session name: a client costs milliseconds of CPU to make, and a fleet of 50
accounts in 30 regions would otherwise need 1,500 of them. A role's client holds
placeholder keys that AWS rejects, so a request sent without its session's
credentials fails; it is never signed as another account.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
from botocore.credentials import Credentials

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

_writing = threading.local()


@contextmanager
def fenced(fence: Callable[[], None]) -> Iterator[None]:
    """Within this block, every request this thread sends is preceded by ``fence()``."""
    _writing.fence = fence
    try:
        yield
    finally:
        _writing.fence = None


@contextmanager
def signed_as(credentials: Credentials | None) -> Iterator[None]:
    """Within this block, every request this thread sends is signed with ``credentials``
    (None: the client's own)."""
    _writing.credentials = credentials
    try:
        yield
    finally:
        _writing.credentials = None


def _sign_as_the_session(request: Any, **_: Any) -> None:
    """botocore signs with ``signing.request_credentials`` when a request carries them."""
    credentials = getattr(_writing, "credentials", None)
    if credentials is not None:
        request.context.setdefault("signing", {})["request_credentials"] = credentials


def _fence_before_send(**_: Any) -> None:
    """botocore's last hook before the bytes go out: a write checks its op still holds
    the lock here, as late as it can (a retry of the request checks again)."""
    fence = getattr(_writing, "fence", None)
    if fence is not None:
        fence()


def session_name(actor: str | None, op_id: str | None) -> str:
    """A RoleSessionName (2-64 of [\\w+=,.@-]) naming who acts and in which op."""
    if actor is None:
        return OBSERVER
    raw = f"ks.{op_id}.{actor}" if op_id else f"ks.{actor}"
    return re.sub(r"[^\w+=,.@-]", "-", raw)[:64]


# What a role's shared client holds instead of credentials: AWS rejects a request
# signed with it (InvalidClientTokenId), so none can act as an account by accident.
PLACEHOLDER_KEYS = {
    "aws_access_key_id": "ASIAKILLSWITCHNOROLESESSION",
    "aws_secret_access_key": "signed-with-no-role-session",
    "aws_session_token": "signed-with-no-role-session",
}


class Clients:
    """Clients per service and region (one set for the base identity, one shared by
    every assumed role), all made from one boto3 session, and the credentials of each
    (role, session name), which sign that session's requests (``signed_as``).

    One session: botocore parses its endpoint and service models once, not once per
    account and session name. AssumeRole is a network call; it runs under a lock of its
    own (role, name), so threads working for other accounts never wait on it.
    """

    def __init__(
        self, *, profile: str | None, endpoint_url: str | None, timeout: float = 15.0
    ) -> None:
        self.profile = profile
        self.endpoint_url = endpoint_url
        self.config = client_config(timeout)
        self._lock = threading.Lock()  # the boto3 session (not thread-safe) and the maps
        self._base: boto3.Session | None = None
        self._assuming: dict[tuple[str, str], threading.Lock] = {}
        self._credentials: dict[tuple[str, str], Credentials] = {}
        self._clients: dict[tuple[bool, str, str], Any] = {}

    def client(self, service: str, region: str, role_arn: str | None, name: str) -> Any:
        """A client for ``service`` in ``region``, for ``role_arn`` (or the base identity).

        With a role, send its requests inside ``signed_as(self.credentials(role_arn,
        name))``: the client is shared by every role and session name, and signs with
        placeholder keys otherwise."""
        key = (role_arn is not None, service, region)
        client = self._clients.get(key)
        if client is not None:
            return client
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                keys = PLACEHOLDER_KEYS if role_arn is not None else {}
                client = self._session_locked().client(
                    service,  # type: ignore[call-overload]
                    region_name=region,
                    endpoint_url=self.endpoint_url,
                    config=self.config,
                    **keys,
                )
                client.meta.events.register("before-sign", _sign_as_the_session)
                client.meta.events.register("before-send", _fence_before_send)
                self._clients[key] = client
        return client

    def _session_locked(self) -> boto3.Session:
        if self._base is None:
            with aws_call(f"AWS profile {self.profile or '(default chain)'}"):
                self._base = boto3.Session(profile_name=self.profile)
        return self._base

    def credentials(self, role_arn: str, name: str) -> Credentials:
        """Credentials for ``role_arn`` as session ``name``: one AssumeRole per pair."""
        key = (role_arn, name)
        found = self._credentials.get(key)
        if found is not None:
            return found
        with self._lock:
            gate = self._assuming.setdefault(key, threading.Lock())
            region = self._session_locked().region_name or "us-east-1"
        with gate:
            found = self._credentials.get(key)
            if found is None:
                sts = self.client("sts", region, None, "")
                with aws_call(f"sts:AssumeRole {role_arn}"):
                    creds = sts.assume_role(RoleArn=role_arn, RoleSessionName=name)["Credentials"]
                found = Credentials(
                    creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]
                )
                self._credentials[key] = found
        return found
