"""Property: however a server drips its reply, one provider call ends on its whole-call
bound, never on the sum of its socket reads. A real HTTP server on 127.0.0.1 writes
each reply a byte at a time with the generated pause; the client is urllib3 with a
per-read timeout far longer than any pause, exactly the shape that once ran for
minutes (issue: "Every input and every call is bounded")."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import urllib3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from killswitch.errors import RetryableError
from providers.base import within

BOUND = 0.4  # seconds a whole call may take
READ_TIMEOUT = 5.0  # per socket read: longer than any pause, so it never fires


class DripServer(ThreadingHTTPServer):
    daemon_threads = True
    pause = 0.0  # between two bytes of a reply; 0: the whole reply at once
    size = 0
    stopped = threading.Event()  # ends every drip at teardown


class Drip(BaseHTTPRequestHandler):
    server: DripServer

    def do_GET(self) -> None:
        body = b"x" * self.server.size
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            if not self.server.pause:
                self.wfile.write(body)
                return
            for byte in body:  # the fault itself: one byte, then a pause
                if self.server.stopped.wait(self.server.pause):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
        except OSError:
            pass  # the client gave up

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def dripping() -> Iterator[DripServer]:
    server = DripServer(("127.0.0.1", 0), Drip)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.stopped.set()
    server.shutdown()


@settings(
    max_examples=int(os.environ.get("KILLSWITCH_DRIP_EXAMPLES", "8")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    drips=st.booleans(),
    pause=st.floats(min_value=0.01, max_value=0.3),
    size=st.integers(min_value=1, max_value=400),
)
def test_a_dripping_reply_ends_on_the_whole_call_bound(
    dripping: DripServer, drips: bool, pause: float, size: int
) -> None:
    """A reply that drips for at least three bounds ends on the bound (a loaded machine
    only makes it slower); one sent at once comes back whole."""
    if drips:
        size = max(size, math.ceil(3 * BOUND / pause) + 1)  # the whole reply: > 3 bounds
    dripping.pause, dripping.size = (pause if drips else 0.0), size
    url = f"http://127.0.0.1:{dripping.server_address[1]}/"
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=1.0, read=READ_TIMEOUT), retries=False
    )

    def call() -> bytes:
        return bytes(http.request("GET", url).data)

    if drips:
        with pytest.raises(RetryableError, match=r"no complete reply within 0\.4s"):
            within(BOUND, "GET drip", call)
    else:
        assert within(READ_TIMEOUT, "GET at once", call) == b"x" * size
