"""A stand-in serving path for the enforcer's tests (and, later, for probes): a model
server, an identity layer in front of it, the reference enforcer between them, all
served by uvicorn on 127.0.0.1; and a ConfigMap laid out on disk as kubelet mounts it.

A gateway is reached over real HTTP only, so a probe can call ``Gateway.url`` exactly as
the tests do."""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from killswitch.enforcer import AUDIENCE_HEADER, Enforcer, KillswitchMiddleware
from killswitch.enforcer.asgi import App, Receive, Scope, Send, send_json


async def model_server(scope: Scope, receive: Receive, send: Send) -> None:
    """The stand-in model: ``/v1/models/{model}/generate`` answers 200 with a completion."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    parts = str(scope["path"]).strip("/").split("/")
    if len(parts) == 4 and parts[:2] == ["v1", "models"] and parts[3] == "generate":
        body = json.dumps({"model": parts[2], "completion": "ok"}).encode()
        await send_json(send, 200, body)
    else:
        await send_json(send, 404, b'{"error":"not_found"}')


class IdentityLayer:
    """What sits at the edge: drops any audience header the caller sent, then sets it
    from the caller's credential (a bearer token here; mTLS or a JWT in real life)."""

    def __init__(self, app: App, audiences_by_token: Mapping[str, str]) -> None:
        self.app = app
        self.audiences_by_token = dict(audiences_by_token)
        self.header = AUDIENCE_HEADER.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != self.header]
            token = dict(scope["headers"]).get(b"authorization", b"").removeprefix(b"Bearer ")
            labels = self.audiences_by_token.get(token.decode("latin-1"), "")
            if labels:
                headers.append((self.header, labels.encode()))
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


@dataclass
class Served:
    """An ASGI app served by uvicorn in a thread, on a free 127.0.0.1 port."""

    app: Any
    url: str = ""
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    def start(self) -> Served:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, args=([sock],), daemon=True)
        self._thread.start()
        started = threading.Event()
        while not self._server.started:  # uvicorn flips it once it listens
            assert self._thread.is_alive(), "uvicorn exited before it listened"
            started.wait(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)


@dataclass
class Gateway:
    """One serving path: identity layer → enforcer (unless it ignores the flags) → model."""

    name: str
    enforcer: Enforcer | None
    tokens: Mapping[str, str]
    served: Served = field(init=False)

    def __post_init__(self) -> None:
        app: App = model_server
        if self.enforcer is not None:
            app = KillswitchMiddleware(app, self.enforcer)
        self.served = Served(IdentityLayer(app, self.tokens)).start()

    @property
    def url(self) -> str:
        return self.served.url

    def call(
        self, model: str, token: str | None = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """POST a generation request as the caller holding ``token``: (status, JSON body)."""
        return call(self.url, f"/v1/models/{model}/generate", token, headers)


def call(
    url: str,
    path: str,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, dict[str, Any]]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    sent = dict(headers or {})
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    try:
        connection.request(method, path, body=b"" if method == "POST" else None, headers=sent)
        reply = connection.getresponse()
        return reply.status, json.loads(reply.read() or b"{}")
    finally:
        connection.close()


class MountedConfigMap:
    """A ConfigMap volume laid out as kubelet's atomic writer does: the data in a
    timestamped folder, ``..data`` a symlink to it, each key a symlink through ``..data``.
    An update writes a new folder and swaps ``..data`` with one rename."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.version = 0

    def update(self, data: Mapping[str, str]) -> None:
        self.version += 1
        payload = self.directory / f"..2026_11_30_00_00_00.{self.version:06d}"
        payload.mkdir()
        for key, value in data.items():
            (payload / key).write_text(value, encoding="utf-8")
        old = os.readlink(self.directory / "..data") if self._has("..data") else None
        os.symlink(payload.name, self.directory / "..data_tmp")
        os.replace(self.directory / "..data_tmp", self.directory / "..data")
        for key in data:
            if not self._has(key):
                os.symlink(f"..data/{key}", self.directory / key)
        for entry in os.listdir(self.directory):
            if not entry.startswith("..") and entry not in data:
                os.unlink(self.directory / entry)
        if old is not None:
            for stale in (self.directory / old).iterdir():
                stale.unlink()
            (self.directory / old).rmdir()

    def _has(self, name: str) -> bool:
        return os.path.lexists(self.directory / name)
