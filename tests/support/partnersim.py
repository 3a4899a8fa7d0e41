"""A partner platform that implements docs/partner-api.yaml, for tests and demos.

One ``PartnerSim`` is one partner: a real HTTP server on a free 127.0.0.1 port
that checks signatures, keeps the access posture of each model in each region it
serves, honours idempotency keys and runs asynchronous operations, exactly as the
document says. Tests read what it holds directly (``access``, ``state``), count
what it received (``counters``, ``requests``) and switch faults on and off while
it runs (``behave``)::

    sim = PartnerSim(secret="s3cret", regions=["eu-west", "us-east"],
                     models={"mythos-5": "acme.mythos-5-v1"}).start()
    sim.behave(slow_ops=2, poll_after=0)      # 202, done on the 2nd poll
    sim.behave(rate_limit=3, retry_after=1)   # the next 3 requests get 429
    sim.access("mythos-5", "eu-west")["posture"]
    sim.stop()

``sign`` is the client side of the signature scheme, kept here so the canonical
string is written down in code next to the server that checks it. It exists for
tests; killswitch's adapter has its own signer.

The shared secret is held privately and never logged, echoed or put in a repr.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

SCHEME = "v1"
KEY_ID_HEADER = "X-Killswitch-Key-Id"
TIMESTAMP_HEADER = "X-Killswitch-Timestamp"
SIGNATURE_HEADER = "X-Killswitch-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
SIGNING_HEADERS = (KEY_ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)

POSTURES = ("open", "restricted", "revoked")
WINDOW_SECONDS = 300
MAX_BODY_BYTES = 64 * 1024
IDEMPOTENCY_TTL_SECONDS = 24 * 3600
FINAL = ("succeeded", "failed")

IDEMPOTENCY_KEY = re.compile(r"[!-~]{1,255}")
AUDIENCE_TAG = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
TIMESTAMP = re.compile(r"[0-9]{1,15}")
CHANGE_FIELDS = frozenset({"posture", "audience", "reason", "op"})


# --------------------------------------------------------------------------- signing


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def body_digest(body: str | bytes) -> str:
    """Lowercase hex SHA-256 of the exact body bytes (of b"" for no body)."""
    return hashlib.sha256(_as_bytes(body)).hexdigest()


def canonical_string(
    method: str,
    path: str,
    body: str | bytes,
    timestamp: int | str,
    idempotency_key: str | None = None,
) -> str:
    """The string that is signed: six lines joined by "\\n", no trailing newline.

    ``v1``, the timestamp (as sent), the method in upper case, the request target
    exactly as sent (path, percent-encoding and any query), the Idempotency-Key
    (empty when there is none) and the hex SHA-256 of the body.
    """
    return "\n".join(
        [SCHEME, str(timestamp), method.upper(), path, idempotency_key or "", body_digest(body)]
    )


def signature(
    secret: str | bytes,
    method: str,
    path: str,
    body: str | bytes,
    timestamp: int | str,
    idempotency_key: str | None = None,
) -> str:
    """Lowercase hex HMAC-SHA256 of the canonical string, keyed with the secret's UTF-8 bytes."""
    message = canonical_string(method, path, body, timestamp, idempotency_key).encode("utf-8")
    return hmac.new(_as_bytes(secret), message, hashlib.sha256).hexdigest()


def sign(
    secret: str | bytes,
    method: str,
    path: str,
    body: str | bytes = b"",
    timestamp: int | None = None,
    *,
    key_id: str = "killswitch",
    idempotency_key: str | None = None,
) -> dict[str, str]:
    """The headers that sign one request (plus Idempotency-Key when one is given)."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    headers = {
        KEY_ID_HEADER: key_id,
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: f"{SCHEME}={signature(secret, method, path, body, ts, idempotency_key)}",
    }
    if idempotency_key is not None:
        headers[IDEMPOTENCY_HEADER] = idempotency_key
    return headers


# --------------------------------------------------------------------------- behaviour


@dataclass(frozen=True)
class Behaviour:
    """What the partner does besides behaving well. Change it with ``PartnerSim.behave``.

    Counted faults (``rate_limit``, ``unavailable``, ``errors``) hit the next N
    authenticated API requests that ``faults_on`` selects ("all", "writes" or
    "reads"); ``GET /v1/health`` is never counted.
    """

    slow_ops: int = 0  # writes answer 202; the operation succeeds on its Nth poll
    slow_ops_seconds: float = 0.0  # ... or once this many seconds have passed
    fail_ops: bool = False  # writes answer 202 and their operation ends failed
    poll_after: int = 1  # Retry-After on 202s and on unfinished operations
    rate_limit: int = 0  # the next N requests get 429 with Retry-After
    retry_after: int = 1  # Retry-After seconds on 429 and 503
    unavailable: int = 0  # the next N requests get 503 with Retry-After
    errors: int = 0  # the next N requests get 500
    lose_replies: int = 0  # the next N accepted writes are applied, then the connection drops
    faults_on: str = "all"  # which requests the counted faults hit: all, writes, reads
    reject_signatures: bool = False  # every signed request gets 401 bad_signature
    clock_skew: float = 0.0  # the partner's clock runs this many seconds ahead (or behind)
    latency: float = 0.0  # seconds to wait before answering each request
    down: bool = False  # refuse connections (and cut open ones)

    def check(self) -> None:
        if self.faults_on not in ("all", "writes", "reads"):
            raise ValueError("faults_on must be 'all', 'writes' or 'reads'")
        for name in (
            "slow_ops",
            "slow_ops_seconds",
            "poll_after",
            "rate_limit",
            "retry_after",
            "unavailable",
            "errors",
            "lose_replies",
            "latency",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


@dataclass(frozen=True)
class Received:
    """One request as the partner saw it, and the status it answered (None: no reply)."""

    method: str
    path: str
    status: int | None
    idempotency_key: str | None
    key_id: str | None
    body: Any  # the parsed JSON body, the raw bytes when not JSON, None when empty


@dataclass
class _Access:
    posture: str = "open"
    audience: tuple[str, ...] = ()
    updated_at: str | None = None
    version: int = 0
    op: str | None = None
    reason: str | None = None


@dataclass
class _Operation:
    id: str
    model: str
    region: str
    posture: str
    audience: tuple[str, ...]
    op: str
    reason: str
    created_at: str
    updated_at: str
    started: float  # monotonic
    need_polls: int
    need_seconds: float
    fail: bool
    status: str = "pending"
    polls: int = 0
    error: dict[str, str] | None = None
    access: dict[str, Any] | None = None


@dataclass
class _Reply:
    status: int
    payload: Any
    headers: dict[str, str] = field(default_factory=dict)
    lose: bool = False  # apply done; drop the connection instead of answering


@dataclass
class _Stored:
    fingerprint: str
    status: int
    payload: Any
    headers: dict[str, str]
    expires: float


def _error(status: int, code: str, message: str, **extra: Any) -> _Reply:
    body: dict[str, Any] = {"code": code, "message": message}
    details = extra.pop("details", None)
    if details is not None:
        body["details"] = details
    return _Reply(status, {"error": body}, dict(extra.pop("headers", {})))


def _rfc3339(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{int(unix * 1000) % 1000:03d}Z"
    )


# --------------------------------------------------------------------------- the server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False


class PartnerSim:
    """One partner platform speaking the killswitch partner API on 127.0.0.1."""

    def __init__(
        self,
        *,
        secret: str | bytes,
        key_id: str = "killswitch",
        regions: Iterable[str],
        models: Mapping[str, str] | Iterable[str],
        postures: Iterable[str] = POSTURES,
        audiences: Iterable[str] | None = None,
        window: int = WINDOW_SECONDS,
        idempotency_ttl: float = IDEMPOTENCY_TTL_SECONDS,
        port: int = 0,
    ) -> None:
        if not secret:
            raise ValueError("the shared secret must not be empty")
        self.key_id = key_id
        self._secrets = {key_id: _as_bytes(secret)}
        self.regions = tuple(regions)
        # The path carries the partner's model id; killswitch's name is accepted too.
        if isinstance(models, Mapping):
            self._names = {str(pid): str(name) for name, pid in models.items()}
        else:
            self._names = {str(m): str(m) for m in models}
        self.models = tuple(self._names)
        self.postures = tuple(p for p in POSTURES if p in set(postures))
        self.audiences = None if audiences is None else tuple(sorted(set(audiences)))
        self.window = window
        self.idempotency_ttl = idempotency_ttl
        self._port = port
        self._lock = threading.RLock()
        self._server_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._started = False
        self._clear()

    def _clear(self) -> None:
        self._behaviour = Behaviour()
        self._access: dict[tuple[str, str], _Access] = {}
        self._operations: dict[str, _Operation] = {}
        self._idempotency: dict[tuple[str, str], _Stored] = {}
        self._counters: Counter[str] = Counter()
        self._received: list[Received] = []
        self._next_op = 0

    def __repr__(self) -> str:
        return f"PartnerSim(url={self.url!r}, key_id={self.key_id!r}, regions={self.regions!r})"

    # ----------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> PartnerSim:
        self._started = True
        self._listen()
        return self

    def stop(self) -> None:
        self._started = False
        self._close()

    def __enter__(self) -> PartnerSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _listen(self) -> None:
        sim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 60

            def setup(self) -> None:
                super().setup()
                with sim._server_lock:
                    sim._connections.add(self.connection)

            def finish(self) -> None:
                with sim._server_lock:
                    sim._connections.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def log_message(self, format: str, *args: object) -> None:
                pass  # nothing is logged: requests carry signatures

            def _handle(self) -> None:
                sim._serve(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle  # noqa: N815

        with self._server_lock:
            if self._server is not None:
                return
            try:
                server = _Server(("127.0.0.1", self._port), Handler)
            except OSError as exc:
                raise RuntimeError(
                    f"the partner simulator cannot listen on {self.url}: {exc}"
                ) from exc
            self._port = int(server.server_address[1])
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()

    def _close(self) -> None:
        with self._server_lock:
            server, self._server = self._server, None
            connections, self._connections = list(self._connections), set()
        if server is not None:
            server.shutdown()
            server.server_close()
        for conn in connections:
            _drop(conn)

    # ----------------------------------------------------------------- behaviour

    @property
    def behaviour(self) -> Behaviour:
        with self._lock:
            return self._behaviour

    def behave(self, **changes: Any) -> Behaviour:
        """Change some behaviours, keep the others; ``behave()`` alone changes nothing."""
        with self._lock:
            new = replace(self._behaviour, **changes)
            new.check()
            was_down, self._behaviour = self._behaviour.down, new
        if self._started and new.down and not was_down:
            self._close()
        elif self._started and was_down and not new.down:
            self._listen()
        return new

    def behave_well(self) -> Behaviour:
        """Every behaviour back to its default (and up again if it was down)."""
        return self.behave(**{f.name: f.default for f in fields(Behaviour)})

    def reset(self) -> None:
        """Forget everything: access, operations, idempotency keys, counters, behaviour."""
        self.behave_well()
        with self._lock:
            self._clear()

    # ----------------------------------------------------------------- what it holds

    def _model_id(self, model: str) -> str:
        if model in self._names:
            return model
        for pid, name in self._names.items():
            if name == model:
                return pid
        raise KeyError(f"the partner does not serve model {model!r}")

    def _region(self, region: str) -> str:
        if region not in self.regions:
            raise KeyError(f"the partner does not serve region {region!r}")
        return region

    def _now(self) -> float:
        return time.time() + self._behaviour.clock_skew

    def access(self, model: str, region: str) -> dict[str, Any]:
        """The access resource as ``GET .../access`` would return it (model: id or name)."""
        with self._lock:
            self._tick()
            return self._access_doc(self._model_id(model), self._region(region))

    def posture(self, model: str, region: str) -> str:
        return str(self.access(model, region)["posture"])

    def state(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Every access resource: ``{model id: {region: access}}``."""
        with self._lock:
            self._tick()
            return {m: {r: self._access_doc(m, r) for r in self.regions} for m in self.models}

    def set_access(
        self,
        model: str,
        region: str,
        posture: str,
        audience: Iterable[str] = (),
        *,
        reason: str = "changed in the partner console",
        op: str | None = None,
    ) -> dict[str, Any]:
        """Change a posture behind killswitch's back (as a partner's console would)."""
        if posture not in POSTURES:
            raise ValueError(f"unknown posture {posture!r}")
        with self._lock:
            mid, reg = self._model_id(model), self._region(region)
            self._supersede(mid, reg)
            self._apply(mid, reg, posture, tuple(sorted(set(audience))), op, reason, count=False)
            return self._access_doc(mid, reg)

    def operations(self) -> list[dict[str, Any]]:
        with self._lock:
            self._tick()
            return [self._operation_doc(o) for o in self._operations.values()]

    def operation(self, operation_id: str) -> dict[str, Any]:
        with self._lock:
            self._tick()
            return self._operation_doc(self._operations[operation_id])

    def finish_operations(self) -> int:
        """Bring every unfinished operation to its end now; returns how many there were."""
        with self._lock:
            unfinished = [o for o in self._operations.values() if o.status not in FINAL]
            for o in unfinished:
                self._finish(o)
            return len(unfinished)

    @property
    def counters(self) -> dict[str, int]:
        """What it received and did, e.g. ``writes`` (PUTs that arrived), ``accepted``
        (PUTs answered 200/202 afresh), ``applied`` (changes made), ``noops``,
        ``replayed``, ``conflicts``, ``operations``, ``polls``, ``reads``, ``health``,
        ``unauthenticated``, ``rate_limited``, ``unavailable``, ``server_errors``,
        ``lost_replies``, ``requests``."""
        with self._lock:
            return dict(self._counters)

    def count(self, name: str) -> int:
        with self._lock:
            return self._counters[name]

    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    @property
    def writes(self) -> list[Received]:
        """Every PUT that arrived, in order, with the status it was answered."""
        return [r for r in self.requests if r.method == "PUT"]

    # ----------------------------------------------------------------- documents

    def _access_doc(self, model: str, region: str) -> dict[str, Any]:
        a = self._access.get((model, region), _Access())
        return {
            "model": model,
            "region": region,
            "posture": a.posture,
            "audience": list(a.audience),
            "updated_at": a.updated_at,
            "version": a.version,
            "op": a.op,
            "reason": a.reason,
        }

    @staticmethod
    def _operation_doc(o: _Operation) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": o.id,
            "status": o.status,
            "model": o.model,
            "region": o.region,
            "posture": o.posture,
            "audience": list(o.audience),
            "op": o.op,
            "created_at": o.created_at,
            "updated_at": o.updated_at,
        }
        if o.error is not None:
            doc["error"] = dict(o.error)
        if o.access is not None:
            doc["access"] = dict(o.access)
        return doc

    # ----------------------------------------------------------------- state changes

    def _apply(
        self,
        model: str,
        region: str,
        posture: str,
        audience: tuple[str, ...],
        op: str | None,
        reason: str | None,
        *,
        count: bool = True,
    ) -> bool:
        current = self._access.get((model, region), _Access())
        if (current.posture, current.audience) == (posture, audience):
            return False
        self._access[(model, region)] = _Access(
            posture, audience, _rfc3339(self._now()), current.version + 1, op, reason
        )
        if count:
            self._counters["applied"] += 1
        return True

    def _supersede(self, model: str, region: str) -> None:
        for o in self._operations.values():
            if o.status not in FINAL and (o.model, o.region) == (model, region):
                o.status = "failed"
                o.error = {
                    "code": "superseded",
                    "message": "a later write to this model and region replaced this one",
                }
                o.updated_at = _rfc3339(self._now())

    def _finish(self, o: _Operation) -> None:
        if o.fail:
            o.status = "failed"
            o.error = {"code": "apply_failed", "message": "the partner could not apply the change"}
        else:
            self._apply(o.model, o.region, o.posture, o.audience, o.op, o.reason)
            o.status = "succeeded"
            o.access = self._access_doc(o.model, o.region)
        o.updated_at = _rfc3339(self._now())

    def _advance(self, o: _Operation, polled: bool) -> None:
        if o.status in FINAL:
            return
        if polled:
            o.polls += 1
        done = (o.need_polls > 0 and o.polls >= o.need_polls) or (
            o.need_seconds > 0 and time.monotonic() - o.started >= o.need_seconds
        )
        if done:
            self._finish(o)
        elif polled and o.status == "pending":
            o.status = "running"
            o.updated_at = _rfc3339(self._now())

    def _tick(self) -> None:
        for o in list(self._operations.values()):
            self._advance(o, polled=False)

    # ----------------------------------------------------------------- HTTP

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        with self._lock:
            behaviour = self._behaviour
        if behaviour.down:
            h.close_connection = True
            _drop(h.connection)
            return
        headers = {k.lower(): v for k, v in h.headers.items()}
        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES or "transfer-encoding" in headers:
            reply = (
                _error(413, "payload_too_large", f"bodies are limited to {MAX_BODY_BYTES} bytes")
                if length > MAX_BODY_BYTES
                else _error(400, "invalid_request", "send the body with a valid Content-Length")
            )
            h.close_connection = True
            self._record(h.command, h.path, reply.status, headers, b"")
            self._send(h, reply)
            return
        body = h.rfile.read(length) if length else b""
        if behaviour.latency:
            time.sleep(behaviour.latency)
        with self._lock:
            self._counters["requests"] += 1
            reply = self._handle(h.command, h.path, headers, body)
            if reply.lose:
                self._counters["lost_replies"] += 1
            self._record(h.command, h.path, None if reply.lose else reply.status, headers, body)
        if reply.lose:
            h.close_connection = True
            _drop(h.connection)
            return
        self._send(h, reply)

    def _record(
        self, method: str, path: str, status: int | None, headers: dict[str, str], body: bytes
    ) -> None:
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = body
        with self._lock:
            self._received.append(
                Received(
                    method,
                    path,
                    status,
                    headers.get("idempotency-key"),
                    headers.get(KEY_ID_HEADER.lower()),
                    parsed,
                )
            )

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, reply: _Reply) -> None:
        data = json.dumps(reply.payload).encode()
        try:
            h.send_response(reply.status)
            h.send_header("Content-Type", "application/json")
            for name, value in reply.headers.items():
                h.send_header(name, value)
            h.send_header("Content-Length", str(len(data)))
            if h.close_connection:
                h.send_header("Connection", "close")
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(data)
        except OSError:
            h.close_connection = True

    def _handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> _Reply:
        path = target.partition("?")[0]
        parts = path.split("/")
        allowed: tuple[str, ...]
        try:
            if path == "/v1/health":
                route, args, allowed = "health", [], ("GET",)
            elif (
                len(parts) == 7
                and parts[:3] == ["", "v1", "models"]
                and parts[4] == "regions"
                and parts[6] == "access"
                and parts[3]
                and parts[5]
            ):
                route, args, allowed = (
                    "access",
                    [_segment(parts[3]), _segment(parts[5])],
                    ("GET", "PUT"),
                )
            elif len(parts) == 4 and parts[:3] == ["", "v1", "operations"] and parts[3]:
                route, args, allowed = "operation", [_segment(parts[3])], ("GET",)
            else:
                return _error(404, "not_found", f"no such path: {path}")
        except ValueError as exc:
            return _error(400, "invalid_request", str(exc))
        if method not in allowed:
            return _error(
                405,
                "method_not_allowed",
                f"{method} is not allowed on {path}",
                headers={"Allow": ", ".join(allowed)},
            )
        self._tick()
        if route == "health":
            self._counters["health"] += 1
            return self._health(method, target, headers, body)
        if route == "access" and method == "PUT":
            self._counters["writes"] += 1
        elif route == "access":
            self._counters["reads"] += 1
        else:
            self._counters["polls"] += 1
        denied = self._authenticate(method, target, headers, body)
        if denied is not None:
            return denied
        fault = self._fault(method)
        if fault is not None:
            return fault
        if route == "operation":
            return self._get_operation(args[0])
        model, region = args
        if model not in self._names:
            return _error(404, "unknown_model", f"this partner does not serve model {model!r}")
        if region not in self.regions:
            return _error(404, "unknown_region", f"this partner does not serve region {region!r}")
        if method == "GET":
            return _Reply(200, self._access_doc(model, region))
        return self._put_access(model, region, headers, body)

    def _authenticate(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> _Reply | None:
        missing = [name for name in SIGNING_HEADERS if not headers.get(name.lower())]
        if missing:
            return self._unauthenticated("missing_signature", f"missing {', '.join(missing)}")
        key_id = headers[KEY_ID_HEADER.lower()]
        stamp = headers[TIMESTAMP_HEADER.lower()]
        if not TIMESTAMP.fullmatch(stamp):
            return self._unauthenticated(
                "missing_signature", f"{TIMESTAMP_HEADER} must be unix seconds (decimal digits)"
            )
        offered = [
            value.strip()
            for scheme, _, value in (
                entry.strip().partition("=")
                for entry in headers[SIGNATURE_HEADER.lower()].split(",")
            )
            if scheme == SCHEME
        ]
        if not offered:
            return self._unauthenticated(
                "missing_signature", f"{SIGNATURE_HEADER} has no {SCHEME}= entry"
            )
        secret = self._secrets.get(key_id)
        if secret is None:
            return self._unauthenticated("unknown_key", f"no key with id {key_id!r}")
        now = self._now()
        if abs(now - int(stamp)) > self.window:
            return self._unauthenticated(
                "stale_timestamp",
                f"the timestamp is more than {self.window} s from the partner's clock",
                details={"server_time": int(now), "window_seconds": self.window},
            )
        if self._behaviour.reject_signatures:
            return self._unauthenticated("bad_signature", "the signature does not verify")
        expected = signature(secret, method, target, body, stamp, headers.get("idempotency-key"))
        if not any(hmac.compare_digest(expected, value.lower()) for value in offered):
            return self._unauthenticated("bad_signature", "the signature does not verify")
        return None

    def _unauthenticated(self, code: str, message: str, **extra: Any) -> _Reply:
        self._counters["unauthenticated"] += 1
        return _error(401, code, message, **extra)

    def _fault(self, method: str) -> _Reply | None:
        b = self._behaviour
        if b.faults_on != "all" and (b.faults_on == "writes") != (method == "PUT"):
            return None
        retry = {"Retry-After": str(b.retry_after)}
        if b.rate_limit:
            self._behaviour = replace(b, rate_limit=b.rate_limit - 1)
            self._counters["rate_limited"] += 1
            return _error(429, "rate_limited", "too many requests", headers=retry)
        if b.unavailable:
            self._behaviour = replace(b, unavailable=b.unavailable - 1)
            self._counters["unavailable"] += 1
            return _error(503, "unavailable", "the partner is unavailable", headers=retry)
        if b.errors:
            self._behaviour = replace(b, errors=b.errors - 1)
            self._counters["server_errors"] += 1
            return _error(500, "internal", "internal error")
        return None

    def _health(self, method: str, target: str, headers: dict[str, str], body: bytes) -> _Reply:
        signed = any(headers.get(name.lower()) for name in SIGNING_HEADERS)
        if signed:
            denied = self._authenticate(method, target, headers, body)
            if denied is not None:
                return denied
        return _Reply(
            200,
            {
                "status": "ok",
                "api_version": "1",
                "server_time": int(self._now()),
                "authenticated": signed,
                "capabilities": {
                    "postures": list(self.postures),
                    "audiences": None if self.audiences is None else list(self.audiences),
                },
            },
        )

    def _get_operation(self, operation_id: str) -> _Reply:
        o = self._operations.get(operation_id)
        if o is None:
            return _error(404, "unknown_operation", f"no operation {operation_id!r}")
        self._advance(o, polled=True)
        headers = {} if o.status in FINAL else {"Retry-After": str(self._behaviour.poll_after)}
        return _Reply(200, self._operation_doc(o), headers)

    def _put_access(self, model: str, region: str, headers: dict[str, str], body: bytes) -> _Reply:
        key = headers.get("idempotency-key")
        if key is None or not IDEMPOTENCY_KEY.fullmatch(key):
            return _error(
                400,
                "idempotency_key_required",
                "a PUT needs an Idempotency-Key of 1-255 visible ASCII characters",
            )
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            return _error(415, "unsupported_media_type", "send the body as application/json")
        try:
            doc = json.loads(body)
        except ValueError:
            return _error(400, "invalid_request", "the body is not JSON")
        fingerprint = json.dumps(["PUT", model, region, doc], sort_keys=True)
        slot = (headers[KEY_ID_HEADER.lower()], key)
        stored = self._idempotency.get(slot)
        if stored is not None and stored.expires < time.monotonic():
            del self._idempotency[slot]
            stored = None
        if stored is not None:
            if stored.fingerprint != fingerprint:
                self._counters["conflicts"] += 1
                return _error(
                    409,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with a different request",
                )
            self._counters["replayed"] += 1
            return _Reply(
                stored.status, stored.payload, {**stored.headers, REPLAYED_HEADER: "true"}
            )
        problem = _check_change(doc)
        if problem:
            return _error(400, "invalid_request", problem)
        posture, reason, op = doc["posture"], doc["reason"], doc["op"]
        audience = tuple(sorted(doc.get("audience", [])))
        if posture not in self.postures:
            return _error(
                422, "unsupported_posture", f"this partner cannot enforce posture {posture!r}"
            )
        if self.audiences is not None:
            unknown = sorted(set(audience) - set(self.audiences))
            if unknown:
                return _error(
                    422,
                    "unsupported_audience",
                    f"this partner cannot enforce audience {', '.join(unknown)}",
                )
        reply = self._change(model, region, posture, audience, op, reason)
        self._counters["accepted"] += 1
        self._idempotency[slot] = _Stored(
            fingerprint,
            reply.status,
            reply.payload,
            dict(reply.headers),
            time.monotonic() + self.idempotency_ttl,
        )
        b = self._behaviour
        if b.lose_replies:
            self._behaviour = replace(b, lose_replies=b.lose_replies - 1)
            reply.lose = True
        return reply

    def _change(
        self,
        model: str,
        region: str,
        posture: str,
        audience: tuple[str, ...],
        op: str,
        reason: str,
    ) -> _Reply:
        self._supersede(model, region)
        current = self._access.get((model, region), _Access())
        b = self._behaviour
        if (current.posture, current.audience) == (posture, audience):
            self._counters["noops"] += 1
            return _Reply(200, self._access_doc(model, region))
        if not (b.slow_ops or b.slow_ops_seconds or b.fail_ops):
            self._apply(model, region, posture, audience, op, reason)
            return _Reply(200, self._access_doc(model, region))
        self._next_op += 1
        stamp = _rfc3339(self._now())
        o = _Operation(
            id=f"opr-{self._next_op:06d}",
            model=model,
            region=region,
            posture=posture,
            audience=audience,
            op=op,
            reason=reason,
            created_at=stamp,
            updated_at=stamp,
            started=time.monotonic(),
            need_polls=b.slow_ops or (0 if b.slow_ops_seconds else 1),
            need_seconds=b.slow_ops_seconds,
            fail=b.fail_ops,
        )
        self._operations[o.id] = o
        self._counters["operations"] += 1
        return _Reply(
            202,
            self._operation_doc(o),
            {"Location": f"/v1/operations/{o.id}", "Retry-After": str(b.poll_after)},
        )


def _segment(raw: str) -> str:
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError as exc:
        raise ValueError("a path segment is not valid percent-encoded UTF-8") from exc


def _check_change(doc: Any) -> str | None:
    """Why the body is not an AccessChange, or None when it is one."""
    if not isinstance(doc, dict):
        return "the body must be a JSON object"
    unknown = sorted(set(doc) - CHANGE_FIELDS)
    if unknown:
        return f"unknown field(s): {', '.join(unknown)}"
    for name in ("posture", "reason", "op"):
        if name not in doc:
            return f"{name} is required"
    if doc["posture"] not in POSTURES:
        return f"posture must be one of {', '.join(POSTURES)}"
    for name, longest in (("reason", 1000), ("op", 200)):
        value = doc[name]
        if not isinstance(value, str) or not 1 <= len(value) <= longest:
            return f"{name} must be a string of 1 to {longest} characters"
    audience = doc.get("audience", [])
    if not isinstance(audience, list) or len(audience) > 32:
        return "audience must be a list of at most 32 tags"
    for tag in audience:
        if not isinstance(tag, str) or not AUDIENCE_TAG.fullmatch(tag):
            return f"audience tag {tag!r} must match {AUDIENCE_TAG.pattern}"
    if len(set(audience)) != len(audience):
        return "audience tags must be unique"
    if doc["posture"] == "restricted" and not audience:
        return "a restricted posture needs a non-empty audience"
    if doc["posture"] != "restricted" and audience:
        return f"a {doc['posture']} posture takes no audience"
    return None


def _drop(conn: socket.socket) -> None:
    """Cut a connection at once, without a reply."""
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        conn.close()
