"""IAM's SimulatePrincipalPolicy, which moto does not serve, answered by the independent
evaluator (@cloud-copilot/iam-simulate) over the policies moto holds for the role; every
other request goes on to moto. A real HTTP server on 127.0.0.1, so killswitch's boto3
client talks to it as it would to AWS."""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

import boto3

from tests.support.iam_simulator import Ask, evaluate

DECISIONS = {"Allowed": "allowed", "ExplicitlyDenied": "explicitDeny"}


class SimulateEndpoint:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.asked = 0  # SimulatePrincipalPolicy calls answered
        # Resources AWS is to say are allowed whatever the policies hold: an AWS that
        # evaluates differently from the document, which the read-back must believe.
        self.allowed_anyway: set[str] = set()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                endpoint._serve(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> SimulateEndpoint:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        form = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
        if form.get("Action") == "SimulatePrincipalPolicy":
            self.asked += 1
            status, headers, reply = 200, {"Content-Type": "text/xml"}, self._simulate(form)
        else:
            status, headers, reply = self._forward(handler, body)
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(reply)))
        handler.end_headers()
        handler.wfile.write(reply)

    def _forward(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(self.upstream)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() != "connection"}
            conn.request(handler.command, handler.path, body=body, headers=headers)
            response = conn.getresponse()
            skip = ("transfer-encoding", "connection", "content-length")
            kept = {k: v for k, v in response.getheaders() if k.lower() not in skip}
            return response.status, kept, response.read()
        finally:
            conn.close()

    def _simulate(self, form: dict[str, str]) -> bytes:
        role_arn = form["PolicySourceArn"]
        actions = _members(form, "ActionNames")
        resources = _members(form, "ResourceArns")
        context: dict[str, str] = {}
        for i in range(1, 20):
            name = form.get(f"ContextEntries.member.{i}.ContextKeyName")
            if name is None:
                break
            context[name] = form[f"ContextEntries.member.{i}.ContextKeyValues.member.1"]
        region = context.pop("aws:RequestedRegion", "us-east-1")
        tags = {
            k.split("/", 1)[1]: v for k, v in context.items() if k.startswith("aws:PrincipalTag/")
        }
        asks = [Ask(a, r, region, role_arn, tags) for a in actions for r in resources]
        answers = evaluate(asks, {role_arn: self._attached(role_arn)})
        decisions: dict[str, list[tuple[str, str]]] = {}
        for ask, answer in zip(asks, answers, strict=True):
            decisions.setdefault(ask.action, []).append((ask.resource, self._decision(ask, answer)))
        members = "".join(
            "<member>"
            f"<EvalActionName>{escape(action)}</EvalActionName>"
            f"<EvalResourceName>*</EvalResourceName>"
            f"<EvalDecision>{_overall([d for _, d in found])}</EvalDecision>"
            "<ResourceSpecificResults>"
            + "".join(
                "<member>"
                f"<EvalResourceName>{escape(resource)}</EvalResourceName>"
                f"<EvalResourceDecision>{decision}</EvalResourceDecision>"
                "</member>"
                for resource, decision in found
            )
            + "</ResourceSpecificResults></member>"
            for action, found in decisions.items()
        )
        return (
            '<SimulatePrincipalPolicyResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">'
            "<SimulatePrincipalPolicyResult><IsTruncated>false</IsTruncated>"
            f"<EvaluationResults>{members}</EvaluationResults></SimulatePrincipalPolicyResult>"
            "<ResponseMetadata><RequestId>simulate-endpoint</RequestId></ResponseMetadata>"
            "</SimulatePrincipalPolicyResponse>"
        ).encode()

    def _decision(self, ask: Ask, answer: str) -> str:
        if ask.resource in self.allowed_anyway:
            return "allowed"
        return DECISIONS.get(answer, "implicitDeny")

    def _attached(self, role_arn: str) -> list[dict[str, Any]]:
        iam = boto3.client("iam", region_name="us-east-1", endpoint_url=self.upstream)
        name = role_arn.rsplit("/", 1)[1]
        documents = []
        for policy in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
            arn = policy["PolicyArn"]
            version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
            raw = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]
            document = raw["Document"]
            documents.append(document if isinstance(document, dict) else json.loads(document))
        return documents


def _members(form: dict[str, str], name: str) -> list[str]:
    found = []
    for i in range(1, 1000):
        value = form.get(f"{name}.member.{i}")
        if value is None:
            return found
        found.append(value)
    return found


def _overall(decisions: list[str]) -> str:
    """AWS's decision for an action over several resources: allowed only if every one is."""
    if all(d == "allowed" for d in decisions):
        return "allowed"
    return "explicitDeny" if "explicitDeny" in decisions else "implicitDeny"
