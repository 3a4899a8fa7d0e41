"""The enforcer in front of a model server: ASGI middleware, and an authorisation
service that speaks Envoy's ext_authz HTTP protocol. Written against the ASGI 3 spec
alone (no framework): it runs under uvicorn, hypercorn, or inside Starlette / FastAPI.

Who a caller is comes from the identity layer, never from the caller: by default the
comma-separated labels in ``x-killswitch-audience``, which the edge must strip from
every client request before the identity layer sets it (docs/enforcer.md). With
``trusted_peers`` set, the header counts only on a connection from one of those
addresses (the identity proxy's); from anyone else the caller has no audience."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from killswitch.domain import is_valid_name
from killswitch.enforcer.cache import Enforcer, Reading
from killswitch.enforcer.decision import Decision

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]
ModelOf = Callable[[Scope], str | None]

AUDIENCE_HEADER = "x-killswitch-audience"
MAX_AUDIENCES = 64


def path_model(pattern: str = r"^/v1/models/(?P<model>[^/]+)(?:/|$)") -> ModelOf:
    """The model named in the request path (group ``model`` of ``pattern``); None when
    the path names no model (such requests are not the enforcer's to judge)."""
    compiled = re.compile(pattern)

    def model_of(scope: Scope) -> str | None:
        found = compiled.search(str(scope.get("path", "")))
        return found.group("model") if found else None

    return model_of


def header_model(name: str) -> ModelOf:
    """The model named in a request header (e.g. set by a router in front)."""
    wanted = name.lower().encode("latin-1")

    def model_of(scope: Scope) -> str | None:
        for key, value in scope.get("headers", []):
            if key.lower() == wanted:
                return bytes(value).decode("latin-1").strip()
        return None

    return model_of


@dataclass(frozen=True)
class Verdict:
    """One request judged: the model it asks for (None: none) and the decision."""

    model: str | None
    decision: Decision

    @property
    def allowed(self) -> bool:
        return self.decision.allowed


class Gate:
    """What the middleware and the ext_authz service share: request → verdict."""

    def __init__(
        self,
        enforcer: Enforcer,
        model_of: ModelOf | None = None,
        audience_header: str = AUDIENCE_HEADER,
        trusted_peers: Iterable[str] | None = None,
        require_model: bool = False,
    ) -> None:
        self.enforcer = enforcer
        self.require_model = require_model
        self.model_of = model_of or path_model()
        self.audience_header = audience_header.lower().encode("latin-1")
        self.trusted_peers = None if trusted_peers is None else frozenset(trusted_peers)

    def audiences(self, scope: Scope) -> set[str]:
        if self.trusted_peers is not None:
            client = scope.get("client") or ("", 0)
            if client[0] not in self.trusted_peers:
                return set()
        found: set[str] = set()
        for key, value in scope.get("headers", []):
            if key.lower() == self.audience_header:
                text = bytes(value).decode("latin-1")
                found.update(label.strip() for label in text.split(",") if label.strip())
        return set(sorted(found)[:MAX_AUDIENCES])

    async def judge(self, scope: Scope) -> Verdict:
        model = self.model_of(scope)
        if model is None:
            # Allowed unless told otherwise: a health check is not the enforcer's business.
            # A server that also answers paths the pattern misses (//v1/…) needs require_model.
            return Verdict(None, Decision(not self.require_model, "names no model"))
        if not is_valid_name(model):
            return Verdict(model, Decision(False, "not a model name"))
        reading: Reading | None = self.enforcer.cached(model)
        if reading is None:  # a read is due: off the event loop, bounded by read_timeout
            reading = await asyncio.to_thread(self.enforcer.reading, model)
        return Verdict(model, reading.decide(self.audiences(scope)))


def denial_body(model: str | None) -> bytes:
    """What a refused caller reads: which model, never why (the reason goes to on_decision)."""
    return json.dumps({"error": "model_unavailable", "model": model}).encode()


async def send_json(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[str, str]] = ()
) -> None:
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class KillswitchMiddleware:
    """Refuses requests for a model its flag closes to the caller; passes the rest on.

    ``on_decision(verdict)`` (optional) sees every judged request: log or count there."""

    def __init__(
        self,
        app: App,
        enforcer: Enforcer,
        model_of: ModelOf | None = None,
        audience_header: str = AUDIENCE_HEADER,
        trusted_peers: Iterable[str] | None = None,
        deny_status: int = 403,
        on_decision: Callable[[Verdict], None] | None = None,
        require_model: bool = False,
    ) -> None:
        self.app = app
        self.gate = Gate(enforcer, model_of, audience_header, trusted_peers, require_model)
        self.deny_status = deny_status
        self.on_decision = on_decision

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan and the like
            return
        verdict = await self.gate.judge(scope)
        if self.on_decision is not None and (verdict.model is not None or not verdict.allowed):
            self.on_decision(verdict)
        if verdict.allowed:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # before accept: a 403
        else:
            await send_json(send, self.deny_status, denial_body(verdict.model))


class ExtAuthzService:
    """Envoy's ext_authz ``http_service``: Envoy sends each client request's method,
    path (after ``path_prefix``) and allowed headers, with no body; 200 lets the request
    through, any other status is returned to the client with this body."""

    def __init__(
        self,
        enforcer: Enforcer,
        model_of: ModelOf | None = None,
        audience_header: str = AUDIENCE_HEADER,
        path_prefix: str = "",
        trusted_peers: Iterable[str] | None = None,
        deny_status: int = 403,
        on_decision: Callable[[Verdict], None] | None = None,
        require_model: bool = False,
    ) -> None:
        self.gate = Gate(enforcer, model_of, audience_header, trusted_peers, require_model)
        self.path_prefix = path_prefix.rstrip("/")
        self.deny_status = deny_status
        self.on_decision = on_decision

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = str(scope.get("path", ""))
        if self.path_prefix:
            if not path.startswith(self.path_prefix + "/"):
                await send_json(send, self.deny_status, denial_body(None))
                return
            path = path[len(self.path_prefix) :]
        verdict = await self.gate.judge({**scope, "path": path})
        if self.on_decision is not None and (verdict.model is not None or not verdict.allowed):
            self.on_decision(verdict)
        if verdict.allowed:
            await send_json(send, 200, b"{}")
        else:
            await send_json(send, self.deny_status, denial_body(verdict.model))


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
