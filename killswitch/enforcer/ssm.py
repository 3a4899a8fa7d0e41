"""The SSM parameter source: ``<prefix>/<model>`` in the gateway's own region.

The only enforcer module that touches boto3, and only when a read happens: importing
killswitch.enforcer (and deciding a request from the cache) never loads it."""

from __future__ import annotations

import threading
from typing import Any

from killswitch.domain import OPEN, Access
from killswitch.enforcer.decision import parse_document
from killswitch.enforcer.sources import SourceUnavailable, checked_model

DEFAULT_PREFIX = "/killswitch/models"


class SsmSource:
    """Reads with ``ssm:GetParameter`` only. ``ParameterNotFound`` reads as ``open``;
    every other failure (denied, throttled, timed out, unreachable) is a failed read,
    never ``open``. One attempt per read, bounded by ``timeout``: the cache is the retry."""

    def __init__(
        self,
        region: str,
        prefix: str = DEFAULT_PREFIX,
        endpoint_url: str | None = None,
        timeout: float = 2.0,
    ) -> None:
        self.region = region
        self.prefix = prefix.rstrip("/")
        self.endpoint_url = endpoint_url
        self.timeout = timeout
        self._client: Any = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"ssm {self.prefix} in {self.region}"

    def read(self, model: str) -> Access:
        from botocore.exceptions import BotoCoreError, ClientError

        name = f"{self.prefix}/{checked_model(model)}"
        try:
            reply = self._ssm().get_parameter(Name=name)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ParameterNotFound":
                return OPEN
            raise SourceUnavailable(f"GetParameter {name} in {self.region}: {code}") from None
        except BotoCoreError as exc:
            raise SourceUnavailable(
                f"GetParameter {name} in {self.region}: {exc.__class__.__name__}"
            ) from None
        return parse_document(model, str(reply["Parameter"]["Value"]))

    def _ssm(self) -> Any:
        with self._lock:  # one client per source, made on first use (clients are thread-safe)
            if self._client is None:
                import boto3
                from botocore.config import Config

                config = Config(
                    connect_timeout=self.timeout,
                    read_timeout=self.timeout,
                    retries={"total_max_attempts": 1},
                )
                self._client = boto3.session.Session().client(
                    "ssm", region_name=self.region, endpoint_url=self.endpoint_url, config=config
                )
            return self._client
