"""Lever ``access-api``: set and read a model's posture in a region at a partner.

Writes carry an idempotency key made from the op and the target, reused on every
retry and after ``ops resume``, so a lost reply never applies twice. A 202 is
followed to the end of its operation within the entry's deadline. Replies are
classified once, here: 429/5xx/timeouts are retryable (Retry-After honoured),
other 4xx are permanent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import urllib3

from killswitch.contract import ApplyContext, Permission
from killswitch.domain import Access, Observed, Posture, Target
from killswitch.errors import PermanentError, ProviderError, RetryableError
from killswitch.sdk import Wave, within

if TYPE_CHECKING:
    from providers.partner import PartnerProvider

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def canonical_string(method: str, path: str, idempotency_key: str, body: bytes, ts: str) -> str:
    """docs/partner-guide.md, "Signing requests": six lines, no trailing newline."""
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join(["v1", ts, method.upper(), path, idempotency_key, digest])


def sign(
    secret: bytes, method: str, path: str, idempotency_key: str, body: bytes
) -> dict[str, str]:
    ts = str(int(time.time()))
    message = canonical_string(method, path, idempotency_key, body, ts).encode()
    return {
        "X-Killswitch-Timestamp": ts,
        "X-Killswitch-Signature": "v1=" + hmac.new(secret, message, hashlib.sha256).hexdigest(),
    }


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


class AccessApi:
    name: ClassVar[str] = "partner.access-api"
    supports: ClassVar[frozenset[Posture]] = frozenset(Posture)
    wave: ClassVar[int] = Wave.EDGE
    permissions: ClassVar[tuple[Permission, ...]] = (
        Permission("GET", "/v1/models/*/regions/*/access"),
        Permission("PUT", "/v1/models/*/regions/*/access"),
        Permission("GET", "/v1/operations/*"),
    )

    def __init__(self, provider: PartnerProvider) -> None:
        self.provider = provider
        self.config = provider.config
        self._pool: urllib3.PoolManager | None = None
        self._lock = threading.Lock()

    # -- HTTP ----------------------------------------------------------------------
    def _http(self) -> urllib3.PoolManager:
        with self._lock:
            if self._pool is None:
                self._pool = urllib3.PoolManager(
                    num_pools=4,
                    maxsize=16,
                    cert_reqs="CERT_REQUIRED",
                    ca_certs=self.config.ca_bundle,
                    timeout=urllib3.Timeout(
                        connect=min(5.0, self.config.timeout_seconds),
                        read=self.config.timeout_seconds,
                    ),
                    retries=False,
                )
            return self._pool

    def _path(self, target: Target) -> str:
        model = urllib.parse.quote(self.config.models[target.model], safe="")
        region = urllib.parse.quote(target.region, safe="")
        return f"/v1/models/{model}/regions/{region}/access"

    def request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        idempotency_key: str = "",
    ) -> Reply:
        """One signed request; the reply's status is classified into typed errors."""
        prefix = urllib.parse.urlsplit(self.config.base_url).path.rstrip("/")
        target_path = prefix + path
        raw = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {
            "Accept": "application/json",
            "X-Killswitch-Key-Id": self.config.key_id,
            **sign(self.provider.secret(), method, target_path, idempotency_key, raw),
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        url = self.config.base_url + path
        what = f"partner {self.provider.name}: {method} {path}"
        bound = self.provider.call_bound_seconds()
        try:
            response = within(
                bound,
                what,
                lambda: self._http().request(method, url, body=raw or None, headers=headers),
            )
        except urllib3.exceptions.SSLError as exc:
            raise PermanentError(f"{what}: TLS verification failed: {_short(exc)}") from None
        except urllib3.exceptions.HTTPError as exc:
            # Refused, reset, timed out, reply lost: the write may or may not have landed;
            # the retry carries the same idempotency key, so it cannot apply twice.
            raise RetryableError(f"{what}: {type(exc).__name__}: {_short(exc)}") from None
        reply = Reply(response.status, _json(response.data), dict(response.headers))
        if reply.status < 300:
            return reply
        error = reply.body.get("error", {}) if isinstance(reply.body.get("error"), dict) else {}
        text = f"{what}: HTTP {reply.status} {error.get('code', '')}: {error.get('message', '')}"
        if reply.status in RETRYABLE_STATUS:
            raise RetryableError(text.rstrip(": "), retry_after=_retry_after(reply.headers))
        raise PermanentError(text.rstrip(": "))

    # -- the lever -------------------------------------------------------------------
    def observe(self, target: Target) -> Observed:
        reply = self.request("GET", self._path(target))
        access = _access(reply.body, self.provider.name)
        return Observed(access, f"version {reply.body.get('version')}")

    def apply(self, target: Target, desired: Access, ctx: ApplyContext) -> None:
        if self.observe(target).access == desired:
            return
        body: dict[str, Any] = {
            "posture": desired.posture.value,
            "reason": ctx.reason[:1000],
            "op": ctx.op_id,
        }
        if desired.posture is Posture.RESTRICTED:
            body["audience"] = list(desired.audience)
        key = f"{ctx.op_id}:{self.provider.name}/{target.region}/{target.model}"
        ctx.fence()
        reply = self.request("PUT", self._path(target), body=body, idempotency_key=key)
        if reply.status == 202:
            self._follow(reply, target)

    def _follow(self, reply: Reply, target: Target) -> None:
        """Poll the operation until it ends, within the entry's deadline."""
        operation = reply.body
        location = reply.headers.get("Location") or f"/v1/operations/{operation.get('id')}"
        path = urllib.parse.urlsplit(location).path
        prefix = urllib.parse.urlsplit(self.config.base_url).path.rstrip("/")
        if prefix and path.startswith(prefix):
            path = path[len(prefix) :]
        deadline = time.monotonic() + self.config.operation_deadline_seconds
        while operation.get("status") not in ("succeeded", "failed"):
            if time.monotonic() > deadline:
                raise RetryableError(
                    f"partner {self.provider.name}: operation {operation.get('id')} for "
                    f"{target.id} still {operation.get('status')} after "
                    f"{self.config.operation_deadline_seconds:.0f}s"
                )
            time.sleep(
                min(_retry_after(reply.headers) or 0.5, 5.0, max(0.0, deadline - time.monotonic()))
            )
            reply = self.request("GET", path)
            operation = reply.body
        if operation["status"] == "failed":
            error = operation.get("error") or {}
            raise PermanentError(
                f"partner {self.provider.name}: operation {operation.get('id')} failed: "
                f"{error.get('code', '?')}: {error.get('message', '')}"
            )


def _access(body: dict[str, Any], partner: str) -> Access:
    try:
        return Access.from_json({"posture": body["posture"], "audience": body.get("audience")})
    except (KeyError, ValueError, TypeError):
        raise PermanentError(f"partner {partner}: reply is not an access resource") from None


def _json(data: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(data or b"{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _retry_after(headers: dict[str, str]) -> float | None:
    for key, value in headers.items():
        if key.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return None
    return None


def _short(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc)[:200]


__all__ = ["AccessApi", "ProviderError", "canonical_string", "sign"]
