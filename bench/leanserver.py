"""A lean stand-in for the AWS calls the ssm-flag lever makes, for timing only.

moto does everything and checks a lot, at about 3 ms of CPU per request in one
interpreter: on a 2-core machine it saturates near 300 requests/s, so a run of
thousands of concurrent calls would time moto, not the client. AWS itself has no
such ceiling; the round trip is what a client waits for. This server answers the
same wire protocol (botocore cannot tell) for exactly what the benchmark needs, at
a small fraction of moto's cost, so that behind the latency proxy the time a client
sees is the round trip, as it is at AWS.

- SSM (JSON 1.1): GetParameter, PutParameter (Overwrite), GetParametersByPath
  (one level, paginated), per account and region; ParameterNotFound and
  ParameterAlreadyExists as AWS sends them.
- STS (query): AssumeRole returns credentials whose access key names the role's
  account, so later calls signed with them land in that account.
- ``POST /moto-api/reset`` empties it, as moto's does.

Correctness is tested against moto (tests/); here only speed is measured, and every
benchmark run still reads each target back from this server to check the result.

    python -m bench.leanserver        # prints ``listening <url>``
"""

from __future__ import annotations

import json
import re
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs

from bench.httpserve import serve

SCOPE = re.compile(r"Credential=([^/]+)/\d{8}/([a-z0-9-]+)/([a-z0-9-]+)/")
DEFAULT_ACCOUNT = "123456789012"
Key = tuple[str, str, str]  # account, region, parameter name


class Parameters:
    def __init__(self) -> None:
        self.values: dict[Key, tuple[str, int, float]] = {}
        self.lock = threading.Lock()

    def get(self, key: Key) -> tuple[str, int, float] | None:
        return self.values.get(key)

    def put(self, key: Key, value: str, overwrite: bool) -> int | None:
        with self.lock:
            old = self.values.get(key)
            if old is not None and not overwrite:
                return None
            version = old[1] + 1 if old else 1
            self.values[key] = (value, version, time.time())
            return version

    def under(self, account: str, region: str, path: str) -> list[tuple[str, str, int, float]]:
        prefix = path.rstrip("/") + "/"
        with self.lock:
            found = [
                (name, value, version, at)
                for (a, r, name), (value, version, at) in self.values.items()
                if a == account
                and r == region
                and name.startswith(prefix)
                and "/" not in name[len(prefix) :]
            ]
        return sorted(found)


class LeanServer:
    def __init__(self, port: int = 0) -> None:
        self.parameters = Parameters()

        self.server = serve(port, self.serve)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        if handler.path.startswith("/moto-api/"):
            if handler.path.startswith("/moto-api/reset"):
                self.parameters = Parameters()
            self.reply(handler, 200, "application/json", b"{}")
            return
        found = SCOPE.search(handler.headers.get("Authorization", ""))
        if found is None:
            self.reply(handler, 403, "text/plain", b"unsigned request")
            return
        key_id, region, service = found.groups()
        account = key_id[4:16] if key_id.startswith("ASIA") and key_id[4:16].isdigit() else None
        if service == "sts":
            self.sts(handler, body)
            return
        target = handler.headers.get("X-Amz-Target", "")
        if service != "ssm" or not target.startswith("AmazonSSM."):
            self.reply(handler, 400, "text/plain", f"not served here: {service} {target}".encode())
            return
        request = json.loads(body or b"{}")
        status, reply = self.ssm(target[10:], account or DEFAULT_ACCOUNT, region, request)
        self.reply(handler, status, "application/x-amz-json-1.1", json.dumps(reply).encode())

    def ssm(
        self, action: str, account: str, region: str, request: dict[str, object]
    ) -> tuple[int, dict[str, object]]:
        name = str(request.get("Name", ""))
        arn = f"arn:aws:ssm:{region}:{account}:parameter{name}"
        if action == "GetParameter":
            held = self.parameters.get((account, region, name))
            if held is None:
                return 400, {"__type": "ParameterNotFound", "message": f"{name} not found"}
            value, version, at = held
            return 200, {"Parameter": _parameter(name, value, version, at, arn)}
        if action == "PutParameter":
            written = self.parameters.put(
                (account, region, name), str(request["Value"]), bool(request.get("Overwrite"))
            )
            if written is None:
                return 400, {"__type": "ParameterAlreadyExists", "message": f"{name} exists"}
            return 200, {"Version": written, "Tier": "Standard"}
        if action == "GetParametersByPath":
            every = self.parameters.under(account, region, str(request["Path"]))
            start = int(str(request.get("NextToken") or 0))
            size = int(str(request.get("MaxResults") or 10))
            page = every[start : start + size]
            reply: dict[str, object] = {
                "Parameters": [
                    _parameter(n, v, ver, at, f"arn:aws:ssm:{region}:{account}:parameter{n}")
                    for n, v, ver, at in page
                ]
            }
            if start + size < len(every):
                reply["NextToken"] = str(start + size)
            return 200, reply
        return 400, {"__type": "InvalidAction", "message": f"{action} is not served here"}

    def sts(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        role = form.get("RoleArn", "")
        found = re.match(r"arn:aws:iam::(\d{12}):role/(.+)", role)
        if form.get("Action") != "AssumeRole" or found is None:
            self.reply(
                handler,
                400,
                "text/xml",
                b"<ErrorResponse><Error><Code>InvalidAction</Code></Error></ErrorResponse>",
            )
            return
        account, role_name = found.groups()
        session = form.get("RoleSessionName", "")
        key_id = f"ASIA{account}{secrets.token_hex(2).upper()}"
        xml = (
            '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            "<AssumeRoleResult><Credentials>"
            f"<AccessKeyId>{key_id}</AccessKeyId>"
            f"<SecretAccessKey>{secrets.token_hex(20)}</SecretAccessKey>"
            f"<SessionToken>{secrets.token_hex(32)}</SessionToken>"
            "<Expiration>2099-01-01T00:00:00Z</Expiration>"
            "</Credentials><AssumedRoleUser>"
            f"<AssumedRoleId>AROA{account}:{session}</AssumedRoleId>"
            f"<Arn>arn:aws:sts::{account}:assumed-role/{role_name}/{session}</Arn>"
            "</AssumedRoleUser></AssumeRoleResult>"
            "<ResponseMetadata><RequestId>lean</RequestId></ResponseMetadata>"
            "</AssumeRoleResponse>"
        )
        self.reply(handler, 200, "text/xml", xml.encode())

    @staticmethod
    def reply(handler: BaseHTTPRequestHandler, status: int, content_type: str, body: bytes) -> None:
        handler.send_response_only(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("x-amzn-RequestId", "lean")
        handler._headers_buffer.append(b"\r\n" + body)  # type: ignore[attr-defined]
        handler.flush_headers()  # headers and body in one segment


def _parameter(name: str, value: str, version: int, at: float, arn: str) -> dict[str, object]:
    return {
        "Name": name,
        "Type": "String",
        "Value": value,
        "Version": version,
        "LastModifiedDate": at,
        "ARN": arn,
        "DataType": "text",
    }


def main() -> None:
    server = LeanServer()
    print(f"listening {server.url}", flush=True)
    try:
        server.server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
