"""AWS clients: one per service and region serves every account; a request is signed as
its own role session, and never, by accident, as another account."""

from __future__ import annotations

from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.credentials import Credentials

from providers.aws.session import PLACEHOLDER_KEYS, Clients, signed_as

ROLE_A = "arn:aws:iam::111111111111:role/killswitch-operator"
ROLE_B = "arn:aws:iam::222222222222:role/killswitch-operator"


def signed_by(client: Any, credentials: Credentials | None) -> str:
    """The access key that signs a GetParameter sent by ``client`` (answered here, before
    it leaves: botocore's before-send may return the response)."""
    seen: list[str] = []

    def answer(request: Any, **_: Any) -> AWSResponse:
        seen.append(request.headers["Authorization"].decode().split("Credential=")[1].split("/")[0])
        return AWSResponse(request.url, 200, {}, None)  # type: ignore[arg-type]

    client.meta.events.register_first("before-send", answer)
    try:
        with signed_as(credentials):
            client.get_parameter(Name="/killswitch/models/mythos-5")
    except Exception:  # the empty reply does not parse; the request was signed already
        pass
    finally:
        client.meta.events.unregister("before-send", answer)
    return seen[0]


def test_every_role_shares_one_client_per_service_and_region() -> None:
    clients = Clients(profile=None, endpoint_url="http://127.0.0.1:9", timeout=1.0)
    shared = clients.client("ssm", "eu-west-1", ROLE_A, "killswitch-observe")
    assert clients.client("ssm", "eu-west-1", ROLE_B, "ks.op-1.alice") is shared
    assert clients.client("ssm", "us-east-1", ROLE_A, "killswitch-observe") is not shared
    assert clients.client("ssm", "eu-west-1", None, "") is not shared  # the base identity


def test_a_request_is_signed_as_its_own_session_and_never_as_another_account() -> None:
    clients = Clients(profile=None, endpoint_url="http://127.0.0.1:9", timeout=1.0)
    ssm = clients.client("ssm", "eu-west-1", ROLE_A, "killswitch-observe")
    a = Credentials("ASIA111111111111AAAA", "secret-a", "token-a")
    b = Credentials("ASIA222222222222BBBB", "secret-b", "token-b")

    assert signed_by(ssm, a) == a.access_key
    assert signed_by(ssm, b) == b.access_key
    # Without its session's credentials, a role's request carries keys AWS rejects.
    assert signed_by(ssm, None) == PLACEHOLDER_KEYS["aws_access_key_id"]
