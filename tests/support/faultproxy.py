"""A fault-injecting HTTP reverse proxy on 127.0.0.1, for tests and benchmarks.

It forwards every request to an upstream server (moto, the partner simulator …)
and, for requests that match a rule, injects a real fault instead: an error
reply, added latency (real, or on a test's clock), a dropped connection, or a
reply lost after the upstream applied the change. It counts what passed through,
so tests can assert on the calls a server really received.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

REGION = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/")


@dataclass(frozen=True)
class Call:
    """What the proxy knows about one request."""

    method: str
    path: str
    region: str | None
    action: str | None  # X-Amz-Target's operation (PutParameter) or the query Action
    headers: dict[str, str]
    body: bytes


@dataclass
class Rule:
    """When ``match`` says so, do ``fault``; ``times`` bounds how often (None: always)."""

    match: Callable[[Call], bool]
    fault: str  # "error", "delay", "hold", "reset", "lose-reply", "drip"
    status: int = 500
    body: bytes = b""
    content_type: str = "application/x-amz-json-1.1"
    delay: float = 0.0
    # With "delay": move this clock by ``delay`` instead of waiting (a test's ManualClock).
    advance: Callable[[float], None] | None = None
    times: int | None = None
    fired: int = 0
    gate: threading.Event = field(default_factory=threading.Event)  # "hold" waits for it


def aws_error(code: str, message: str, status: int = 400) -> dict[str, object]:
    """Rule arguments for an AWS JSON-protocol error reply (SSM, DynamoDB …)."""
    body = f'{{"__type":"{code}","message":"{message}"}}'.encode()
    return {"fault": "error", "status": status, "body": body}


def aws_query_error(code: str, message: str, status: int = 400) -> dict[str, object]:
    """Rule arguments for an AWS query-protocol (XML) error reply (IAM, STS, ELBv2 …)."""
    body = (
        "<ErrorResponse><Error><Type>Sender</Type>"
        f"<Code>{code}</Code><Message>{message}</Message></Error>"
        "<RequestId>faultproxy</RequestId></ErrorResponse>"
    ).encode()
    return {"fault": "error", "status": status, "body": body, "content_type": "text/xml"}


def for_region(region: str, action: str | None = None) -> Callable[[Call], bool]:
    return lambda call: call.region == region and (action is None or call.action == action)


def for_action(action: str) -> Callable[[Call], bool]:
    return lambda call: call.action == action


@dataclass
class FaultProxy:
    upstream: str
    rules: list[Rule] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopped: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                proxy._serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()  # ends every drip
        with self._lock:
            for rule in self.rules:
                rule.gate.set()
        self._server.shutdown()
        self._server.server_close()

    def add(self, match: Callable[[Call], bool], **kwargs: object) -> Rule:
        rule = Rule(match=match, **kwargs)  # type: ignore[arg-type]
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.calls.clear()

    def count(self, action: str, region: str | None = None) -> int:
        with self._lock:
            if region is None:
                return sum(n for key, n in self.calls.items() if key.split("@")[0] == action)
            return self.calls[f"{action}@{region}"]

    def _pick(self, call: Call) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if (rule.times is None or rule.fired < rule.times) and rule.match(call):
                    rule.fired += 1
                    return rule
        return None

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = {k: v for k, v in handler.headers.items()}
        target = headers.get("X-Amz-Target", "")
        action = target.split(".")[-1] if target else _query_action(handler.path, body)
        found = REGION.search(headers.get("Authorization", ""))
        call = Call(
            handler.command, handler.path, found.group(1) if found else None, action, headers, body
        )
        with self._lock:
            self.calls[f"{action}@{call.region}"] += 1
        rule = self._pick(call)
        if rule is not None and rule.fault == "delay":
            (rule.advance or time.sleep)(rule.delay)
            rule = None
        elif rule is not None and rule.fault == "hold":
            rule.gate.wait(timeout=60)  # the test opens the gate when it is ready
            rule = None
        if rule is not None and rule.fault == "error":
            self._reply(handler, rule.status, {"Content-Type": rule.content_type}, rule.body)
            return
        if rule is not None and rule.fault == "reset":
            handler.close_connection = True
            handler.connection.close()
            return
        status, reply_headers, reply = self._forward(call)
        if rule is not None and rule.fault == "drip":
            self._drip(handler, status, reply_headers, reply, rule.delay)
            return
        if rule is not None and rule.fault == "lose-reply":
            # The upstream applied the change; the client never hears of it.
            handler.close_connection = True
            handler.connection.close()
            return
        self._reply(handler, status, reply_headers, reply)

    def _forward(self, call: Call) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(self.upstream)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
        try:
            headers = {k: v for k, v in call.headers.items() if k.lower() != "connection"}
            conn.request(call.method, call.path, body=call.body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            keep = {
                k: v
                for k, v in response.getheaders()
                if k.lower() not in ("transfer-encoding", "connection", "content-length")
            }
            return response.status, keep, data
        finally:
            conn.close()

    def _drip(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        headers: dict[str, str],
        body: bytes,
        every: float,
    ) -> None:
        """The upstream's reply, one byte every ``every`` seconds: each read gets a byte
        long before a read timeout, so only a bound on the whole reply ends it."""
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        try:
            for byte in body:
                if self._stopped.wait(every):
                    break
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
        except OSError:
            pass  # the client gave up
        handler.close_connection = True

    @staticmethod
    def _reply(
        handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes
    ) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)


def _query_action(path: str, body: bytes) -> str | None:
    for source in (path.partition("?")[2], body.decode("latin-1")):
        found = re.search(r"(?:^|&)Action=([A-Za-z]+)", source)
        if found:
            return found.group(1)
    return None
