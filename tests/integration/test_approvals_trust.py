"""The two-person rule and the audit log against someone who can write the state store,
or who types another name: a forged approval, edited rows, a loosened ledger, one
person under several spellings, and the ways a request ends (declined, expired).

Each attack runs on both stores (SQLite, DynamoDB Local) against moto over HTTP. Who
acts comes from a credential: each person has their own moto IAM access keys, and in
the signed cases their own SSH key, listed in an OpenSSH allowed_signers file.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from killswitch.domain import Access, LedgerEntry, Posture
from killswitch.state import open_store, parse_dynamodb_url
from tests.conftest import MODELS, NON_US, US, Workspace, person
from tests.support.clocks import AheadClock
from tests.support.dynamodb_local import dynamodb_local_fixture  # noqa: F401

REGIONS = US + NON_US
EVERYWHERE = [(r, m) for r in REGIONS for m in MODELS]
PEOPLE = ("alice", "bob", "carol")  # in allowed_signers; mallory's key is not


@dataclass
class Keys:
    folder: Path
    allowed_signers: Path

    def key(self, name: str) -> str:
        return str(self.folder / name)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """An ed25519 key each, made by ssh-keygen; allowed_signers lists all but mallory."""
    folder = tmp_path_factory.mktemp("keys")
    lines = []
    for name in (*PEOPLE, "mallory"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", folder / name],
            check=True,
        )
        if name != "mallory":
            public = (folder / f"{name}.pub").read_text().split()
            lines.append(f"{name}@example.com {public[0]} {public[1]}")
    allowed = folder / "allowed_signers"
    allowed.write_text("\n".join(lines) + "\n")
    return Keys(folder, allowed)


@pytest.fixture(params=["sqlite", "dynamodb"])
def state(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return "sqlite:///./.killswitch/state.db"
    from killswitch.state.dynamodb import DynamoDbStore

    url: str = request.getfixturevalue("dynamodb_local").state_url()
    store = DynamoDbStore(parse_dynamodb_url(url))
    store.create_table()
    store.close()
    return url


def inventory(ws: Workspace, state: str, **restore: object) -> None:
    ws.write_inventory(
        state=state,
        policy={
            "restore": {"approvals": 2, **restore},
            "retry": {"attempts": 2, "max_seconds": 3, "base_seconds": 0.05},
        },
    )


@pytest.fixture
def signed(ws: Workspace, state: str, keys: Keys) -> Workspace:
    inventory(ws, state, signed=True, allowed_signers=str(keys.allowed_signers))
    return ws


@pytest.fixture
def plain(ws: Workspace, state: str) -> Workspace:
    inventory(ws, state)
    return ws


def revoked_then_requested(ws: Workspace, *key: str) -> str:
    assert ws.run("revoke", "-m", "all", "--reason", "export order", "--yes").code == 0
    asked = ws.run("restore", "-m", "all", "--reason", "review", "--yes", "-o", "json", *key)
    assert asked.code == 5, asked.stderr
    return str(asked.json()["op"])


def postures(ws: Workspace) -> set[str]:
    return {ws.posture(r, m) for r, m in EVERYWHERE}


def store_of(ws: Workspace):  # type: ignore[no-untyped-def]
    from killswitch.inventory import load

    return open_store(load(ws.inventory).state_url)


def verify(ws: Workspace) -> tuple[int, list[str]]:
    result = ws.run("audit", "verify", "-o", "json")
    return result.code, result.json()["problems"]


# ---------------------------------------------------------------- signed approvals


def test_a_signed_two_person_restore_opens_with_two_keys(signed: Workspace, keys: Keys) -> None:
    op = revoked_then_requested(signed, "--key", keys.key("alice"))

    approved = signed.run("approve", op, "--yes", "--key", keys.key("bob"), "-o", "json")

    assert approved.code == 0, approved.stderr
    assert postures(signed) == {"open"}
    shown = signed.run("ops", "show", op, "-o", "json").json()
    assert shown["approvals"] == ["alice@example.com", "bob@example.com"]
    assert shown["signed"] is True
    assert verify(signed) == (0, [])


def test_in_signed_mode_an_approval_without_a_key_or_with_an_unlisted_key_is_refused(
    signed: Workspace, keys: Keys
) -> None:
    op = revoked_then_requested(signed, "--key", keys.key("alice"))

    keyless = signed.run("approve", op, "--yes", actor="bob")
    stranger = signed.run("approve", op, "--yes", "--key", keys.key("mallory"), actor="mallory")
    herself = signed.run("approve", op, "--yes", "--key", keys.key("alice"), actor="carol")

    assert keyless.code == 64 and "--key" in keyless.stderr
    assert stranger.code == 64 and "not in" in stranger.stderr
    assert herself.code == 5 and "requested it" in herself.stderr  # her key, whoever types
    assert postures(signed) == {"revoked"}
    assert signed.run("ops", "show", op, "-o", "json").json()["approvals"] == ["alice@example.com"]


def test_a_forged_approval_appended_to_the_log_does_not_open_and_verify_reports_it(
    signed: Workspace, keys: Keys
) -> None:
    op = revoked_then_requested(signed, "--key", keys.key("alice"))
    store = store_of(signed)
    request = next(e for e in store.audit_events() if e.kind == "op.requested" and e.op_id == op)
    # The attacker writes both the row and a correctly hashed event, unsigned and forged.
    store.add_approval(op, "bob@example.com")
    store.append_audit("bob@example.com", "restore.approved", op, {"request": request.hash})
    store.add_approval(op, "carol@example.com")
    forged = "-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----\n"
    store.append_audit(
        "carol@example.com", "restore.approved", op, {"request": request.hash, "signature": forged}
    )
    store.close()

    resumed = signed.run("ops", "resume", op, "--yes")
    code, problems = verify(signed)

    assert resumed.code == 5
    assert postures(signed) == {"revoked"}
    assert code == 3
    assert any("carol@example.com" in p and "does not verify" in p for p in problems)
    assert any("bob@example.com" in p and "unsigned" in p for p in problems)


def test_a_signature_over_another_request_does_not_count(signed: Workspace, keys: Keys) -> None:
    """Bob's valid signature, copied from his approval of one restore onto another."""
    assert signed.run("revoke", "-m", "all", "--reason", "export order", "--yes").code == 0
    first = signed.run("restore", "-m", "mythos-5", "--reason", "a", "--yes", "-o", "json",
                       "--key", keys.key("alice")).json()["op"]  # fmt: skip
    second = signed.run("restore", "-m", "fable-5", "--reason", "b", "--yes", "-o", "json",
                        "--key", keys.key("alice")).json()["op"]  # fmt: skip
    assert signed.run("approve", first, "--yes", "--key", keys.key("bob")).code == 0
    store = store_of(signed)
    events = store.audit_events()
    stolen = next(e for e in events if e.kind == "restore.approved" and e.op_id == first)
    request = next(e for e in events if e.kind == "op.requested" and e.op_id == second)
    store.append_audit(
        "bob@example.com",
        "restore.approved",
        second,
        {"request": request.hash, "signature": stolen.payload["signature"]},
    )
    store.close()

    assert signed.run("ops", "resume", second, "--yes").code == 5
    assert {signed.posture(r, "fable-5") for r in REGIONS} == {"revoked"}
    assert verify(signed)[0] == 3


# ---------------------------------------------------------------- state outside the chain


def test_an_op_edited_to_need_one_approval_is_refused_and_reported(plain: Workspace) -> None:
    op = revoked_then_requested(plain)
    tamper_op(plain, op, required_approvals=1)

    resumed = plain.run("ops", "resume", op, "--yes")
    code, problems = verify(plain)

    assert resumed.code == 6
    assert postures(plain) == {"revoked"}
    assert code == 3
    assert any(op in p and "differ from its request" in p for p in problems)


def test_a_ledger_row_set_to_open_by_hand_hides_nothing_from_drift(plain: Workspace) -> None:
    assert plain.run("revoke", "-m", "all", "--reason", "export order", "--yes").code == 0
    target = "aws:aws-prod/eu-west-1/ssm-flag/mythos-5"
    # Someone opens the model by hand, and sets its ledger row to open to hide it.
    plain.ssm("eu-west-1").delete_parameter(Name="/killswitch/models/mythos-5")
    tamper_ledger(plain, target, "op-by-hand")

    drift = plain.run("drift", "-o", "json")
    code, problems = verify(plain)

    assert drift.code == 2
    row = next(t for t in drift.json()["targets"] if t["id"] == target)
    assert row["desired"]["posture"] == "revoked"
    assert code == 3
    assert any(target in p and "in the table" in p for p in problems)


def test_an_untouched_log_verifies_with_every_table_backed_by_it(plain: Workspace) -> None:
    op = revoked_then_requested(plain)
    assert plain.run("approve", op, "--yes", actor="bob").code == 0
    assert plain.run("revoke", "-m", "fable-5", "--reason", "again", "--yes").code == 0

    assert verify(plain) == (0, [])


# ---------------------------------------------------------------- who is a person


LABELS = ["Alice", "alice ", "ALICE", "alice\u200b", "\u0430lice", "bob", "bob@123456789012"]


def test_the_requester_is_not_a_second_person_under_any_label(plain: Workspace) -> None:
    op = revoked_then_requested(plain)

    for label in LABELS:
        by_flag = plain.run("--actor", label, "approve", op, "--yes", actor="alice")
        by_env = plain.run("approve", op, "--yes", actor="alice", env={"KILLSWITCH_ACTOR": label})
        for result in (by_flag, by_env):
            # the same person (5), or a label refused outright (64)
            assert result.code in (5, 64), (label, result.stderr)

    assert postures(plain) == {"revoked"}
    assert plain.run("ops", "show", op, "-o", "json").json()["approvals"] == [person("alice")]


def test_a_key_listed_under_a_lookalike_name_is_refused(ws: Workspace, keys: Keys) -> None:
    """Mallory's key, added to allowed_signers as "\u0430lice" (a Cyrillic a): not a second
    person, not alice either, but a name that is refused."""
    public = (keys.folder / "mallory.pub").read_text().split()
    lookalike = keys.folder / "lookalike_signers"
    lookalike.write_text(
        keys.allowed_signers.read_text() + f"\u0430lice@example.com {public[0]} {public[1]}\n"
    )
    inventory(ws, "sqlite:///./.killswitch/state.db", signed=True, allowed_signers=str(lookalike))
    op = revoked_then_requested(ws, "--key", keys.key("alice"))

    result = ws.run("approve", op, "--yes", "--key", keys.key("mallory"), actor="mallory")

    assert result.code == 64
    assert "scripts" in result.stderr
    assert postures(ws) == {"revoked"}


def test_one_key_listed_for_two_principals_is_refused(ws: Workspace, keys: Keys) -> None:
    public = (keys.folder / "mallory.pub").read_text().split()
    shared = keys.folder / "shared_signers"
    shared.write_text(
        keys.allowed_signers.read_text()
        + f"dave@example.com,erin@example.com {public[0]} {public[1]}\n"
    )
    inventory(ws, "sqlite:///./.killswitch/state.db", signed=True, allowed_signers=str(shared))
    op = revoked_then_requested(ws, "--key", keys.key("alice"))

    result = ws.run("approve", op, "--yes", "--key", keys.key("mallory"), actor="mallory")

    assert result.code == 64
    assert "one key, one person" in result.stderr
    assert postures(ws) == {"revoked"}


# ---------------------------------------------------------------- decline and expiry


def test_a_declined_restore_never_opens_and_a_new_request_starts_over(plain: Workspace) -> None:
    op = revoked_then_requested(plain)

    declined = plain.run("decline", op, "--reason", "the review is not done", actor="bob")
    approved = plain.run("approve", op, "--yes", actor="carol")
    resumed = plain.run("ops", "resume", op, "--yes", actor="carol")

    assert declined.code == 0, declined.stderr
    assert approved.code == 6 and "declined by" in approved.stderr
    assert resumed.code == 6
    assert postures(plain) == {"revoked"}
    shown = plain.run("ops", "show", op, "-o", "json").json()
    assert shown["operation"]["status"] == "declined"
    assert shown["declined"]["by"] == person("bob")
    listed = plain.run("ops", "list", "-o", "json").json()["ops"]
    assert next(o for o in listed if o["id"] == op)["status"] == "declined"
    again = plain.run("restore", "-m", "all", "--reason", "review done", "--yes", "-o", "json")
    assert again.code == 5 and again.json()["op"] != op
    assert plain.run("approve", again.json()["op"], "--yes", actor="carol").code == 0
    assert postures(plain) == {"open"}
    assert verify(plain) == (0, [])


def test_declining_needs_a_reason_and_a_restore_awaiting_approval(plain: Workspace) -> None:
    op = revoked_then_requested(plain)

    assert plain.run("decline", op, "--reason", " ", actor="bob").code == 64
    assert plain.run("decline", "op-nope", "--reason", "x", actor="bob").code == 64
    assert plain.run("approve", op, "--yes", actor="bob").code == 0
    late = plain.run("decline", op, "--reason", "too late", actor="carol")

    assert late.code == 64 and "complete" in late.stderr
    assert postures(plain) == {"open"}


def switch_at(ws: Workspace, name: str, hours: float, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The engine as ``name`` runs it ``hours`` from now (their own credentials)."""
    from killswitch import identity
    from killswitch.engine import Switch
    from killswitch.inventory import load

    for variable, value in ws.credentials(name).items():
        monkeypatch.setenv(variable, value)
    inv = load(ws.inventory)
    who = identity.resolve(inv, key=None, label=None)
    return Switch(inv, open_store(inv.state_url), who, clock=AheadClock(hours * 3600))


def test_an_unapproved_request_expires(plain: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    inventory(plain, plain_state(plain), expires_after="2h")
    op = revoked_then_requested(plain)
    later = switch_at(plain, "bob", 3, monkeypatch)

    listed = {o.id: o.status.value for o in later.as_now(later.store.list_ops())}
    with pytest.raises(Exception) as refused:
        later.approve(op, confirm=lambda plan: None)
    later.store.close()

    assert listed[op] == "expired"
    assert getattr(refused.value, "exit_code", None) == 6
    assert "expired" in str(refused.value)
    assert postures(plain) == {"revoked"}
    shown = plain.run("ops", "show", op, "-o", "json").json()
    assert shown["operation"]["status"] == "expired"  # marked, and audited
    assert verify(plain) == (0, [])


def test_a_request_approved_in_time_does_not_expire(
    plain: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory(plain, plain_state(plain), expires_after="2h")
    op = revoked_then_requested(plain)
    soon = switch_at(plain, "bob", 1, monkeypatch)

    report = soon.approve(op, confirm=lambda plan: None)
    soon.store.close()

    assert report.status == "complete"
    assert postures(plain) == {"open"}


# ---------------------------------------------------------------- the attacker's tools


def plain_state(ws: Workspace) -> str:
    import yaml

    return str(yaml.safe_load(ws.inventory.read_text())["state"])


def tamper_op(ws: Workspace, op_id: str, *, required_approvals: int) -> None:
    """Edit the op row behind killswitch's back, in whichever store it lives."""
    url = plain_state(ws)
    if url.startswith("sqlite"):
        db = sqlite3.connect(ws.state_db)
        with db:
            db.execute(
                "UPDATE ops SET required_approvals = ? WHERE id = ?", (required_approvals, op_id)
            )
        db.close()
        return
    from killswitch.state.dynamodb_table import op_key

    parsed = parse_dynamodb_url(url)
    client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=parsed.endpoint_url)
    client.update_item(
        TableName=parsed.table,
        Key=op_key(op_id),
        UpdateExpression="SET required_approvals = :n",
        ExpressionAttributeValues={":n": {"N": str(required_approvals)}},
    )


def tamper_ledger(ws: Workspace, target_id: str, op_id: str) -> None:
    """Set one ledger row to open behind killswitch's back."""
    url = plain_state(ws)
    entry = LedgerEntry(target_id, Access(Posture.OPEN), op_id, "2026-11-30T00:00:00.000Z")
    if url.startswith("sqlite"):
        db = sqlite3.connect(ws.state_db)
        with db:
            db.execute(
                "UPDATE ledger SET desired = ?, op_id = ? WHERE target_id = ?",
                (json.dumps(entry.desired.to_json()), op_id, target_id),
            )
        db.close()
        return
    from killswitch.state.dynamodb_table import ledger_item

    parsed = parse_dynamodb_url(url)
    client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=parsed.endpoint_url)
    client.put_item(TableName=parsed.table, Item=ledger_item(entry, 0))


def test_only_the_named_approvers_count_though_anyone_may_ask(ws: Workspace) -> None:
    inventory(ws, "sqlite:///./.killswitch/state.db", approvers=[person("bob"), person("carol")])
    op = revoked_then_requested(ws)  # alice asks: her own approval does not count

    stranger = ws.run("approve", op, "--yes", actor="dave")
    first = ws.run("approve", op, "--yes", actor="bob")
    second = ws.run("approve", op, "--yes", actor="carol")

    assert stranger.code == 64 and "policy.restore.approvers" in stranger.stderr
    assert first.code == 5, first.stderr  # alice's ask plus bob: one approver so far
    assert second.code == 0, second.stderr
    assert postures(ws) == {"open"}
    shown = ws.run("ops", "show", op, "-o", "json").json()
    assert shown["approvals"] == [person("bob"), person("carol")]
    assert any("not by one of policy.restore.approvers" in n for n in shown["not_counted"])


def test_a_principal_listed_in_capitals_signs_and_counts_as_one_person(
    ws: Workspace, keys: Keys
) -> None:
    capitals = keys.folder / "capital_signers"
    capitals.write_text(keys.allowed_signers.read_text().replace("bob@", "Bob@"))
    inventory(ws, "sqlite:///./.killswitch/state.db", signed=True, allowed_signers=str(capitals))
    op = revoked_then_requested(ws, "--key", keys.key("alice"))

    approved = ws.run("approve", op, "--yes", "--key", keys.key("bob"), "-o", "json")

    assert approved.code == 0, approved.stderr
    assert postures(ws) == {"open"}
    assert verify(ws) == (0, [])  # no false alarm about bob's signature
