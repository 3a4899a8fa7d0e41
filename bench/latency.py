"""A latency-injecting HTTP proxy on 127.0.0.1, run as its own process.

Every request waits ``rtt`` seconds, give or take ``jitter`` (uniform), then goes to
the upstream (moto) over a kept-alive connection; the reply comes straight back. It
counts requests per AWS action, so the benchmark can say how many writes a run made.

It runs in a process of its own so that its work never competes for the GIL of the
process being measured. ``tests/support/faultproxy.py`` does faults for tests; this
one does only delay, and cheaply (one upstream connection per thread, no rule list).

    python -m bench.latency --upstream http://127.0.0.1:5000 --rtt 0.05 --jitter 0.005

prints ``listening <url>`` once ready. ``GET /__bench__/calls`` returns the counters
as JSON (``{"PutParameter": 1000, ...}``); ``POST /__bench__/reset`` zeroes them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import re
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from bench.httpserve import serve

QUERY_ACTION = re.compile(rb"(?:^|&)Action=([A-Za-z]+)")
CONTROL = "/__bench__/"
HOP_BY_HOP = ("transfer-encoding", "connection", "content-length", "keep-alive")


class LatencyProxy:
    def __init__(self, upstream: str, rtt: float, jitter: float, port: int = 0) -> None:
        if jitter > rtt:
            raise ValueError("jitter must not exceed the round trip")
        parts = urlsplit(upstream)
        if parts.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError("the upstream must be on 127.0.0.1")
        self.upstream = (parts.hostname, parts.port or 80)
        self.rtt, self.jitter = rtt, jitter
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._local = threading.local()

        self.server = serve(port, self.serve)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def delay(self) -> float:
        return self.rtt + random.uniform(-self.jitter, self.jitter)

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        if handler.path.startswith(CONTROL):
            self._control(handler)
            return
        target = handler.headers.get("X-Amz-Target")
        if target:
            action = target.rpartition(".")[2]
        else:
            found = QUERY_ACTION.search(body) or QUERY_ACTION.search(
                handler.path.partition("?")[2].encode()
            )
            action = found.group(1).decode() if found else "other"
        with self._lock:
            self.calls[action] += 1
        time.sleep(self.delay())
        headers = {k: v for k, v in handler.headers.items() if k.lower() != "connection"}
        status, reply_headers, reply = self._forward(handler.command, handler.path, headers, body)
        handler.send_response_only(status)
        for key, value in reply_headers:
            if key.lower() not in HOP_BY_HOP:
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(reply)))
        # Headers and body in one write: one segment for a small reply.
        handler._headers_buffer.append(b"\r\n")  # type: ignore[attr-defined]
        if handler.command != "HEAD":
            handler._headers_buffer.append(reply)  # type: ignore[attr-defined]
        handler.flush_headers()

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        for attempt in (1, 2):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = http.client.HTTPConnection(*self.upstream, timeout=60)
                self._local.conn = conn
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                return response.status, response.getheaders(), response.read()
            except (http.client.HTTPException, ConnectionError):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _control(self, handler: BaseHTTPRequestHandler) -> None:
        if handler.path == CONTROL + "reset":
            with self._lock:
                self.calls.clear()
        with self._lock:
            reply = json.dumps(dict(self.calls)).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(reply)))
        handler.end_headers()
        handler.wfile.write(reply)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--rtt", type=float, default=0.05, help="seconds (default 0.05)")
    parser.add_argument("--jitter", type=float, default=0.005, help="± seconds, uniform")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    proxy = LatencyProxy(args.upstream, args.rtt, args.jitter, args.port)
    print(f"listening {proxy.url}", flush=True)
    try:
        proxy.server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        proxy.server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
