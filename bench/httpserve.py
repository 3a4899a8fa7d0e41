"""The HTTP plumbing the latency proxy and the lean server share: a threaded server on
127.0.0.1 with a deep listen backlog, and a quiet keep-alive handler with TCP_NODELAY."""

from __future__ import annotations

import socket
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # listen() backlog: the default 5 drops the SYNs of a burst of new connections, and
    # each dropped one costs the client a 1 s retransmit.
    request_queue_size = 1024


def serve(port: int, answer: Callable[[BaseHTTPRequestHandler], None]) -> Server:
    """A server on 127.0.0.1:``port`` (0: any free one) that hands every request to ``answer``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def setup(self) -> None:
            super().setup()
            # Without it, Nagle's algorithm and the client's delayed ACK add ~40 ms
            # to replies written in more than one segment.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_POST(self) -> None:
            answer(self)

        do_GET = do_PUT = do_DELETE = do_HEAD = do_POST  # noqa: N815

    return Server(("127.0.0.1", port), Handler)
