"""The audit log anchored outside the store: whoever can write the state can truncate the
log and forge its head, or re-hash the chain, and `audit verify` alone passes; the
checkpoints in an append-only sink (S3 Object Lock on a real moto server, or a local
file) still catch it."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from killswitch.anchor import Checkpoint, anchor_after_op
from killswitch.audit import GENESIS, event_hash
from killswitch.state import open_store
from tests.conftest import Workspace
from tests.support.servers import MotoServer, free_port

BUCKET = "killswitch-anchors"


def _s3(server: str) -> Any:
    return boto3.client("s3", region_name="us-east-1", endpoint_url=server)


@pytest.fixture
def s3_url(ws: Workspace) -> str:
    """An anchor in a real (moto) bucket created with Object Lock."""
    _s3(ws.server).create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    return f"s3://{BUCKET}/prod?region=us-east-1&endpoint_url={ws.server}"


@pytest.fixture(params=["file", "s3"])
def sink_url(request: pytest.FixtureRequest, ws: Workspace) -> str:
    if request.param == "file":
        return f"file://{ws.path / 'anchor' / 'checkpoints.jsonl'}"
    return str(request.getfixturevalue("s3_url"))


@pytest.fixture
def logged(ws: Workspace) -> Workspace:
    """Two revokes: ten audit events (requested, applying, ledger set, finished, timed)."""
    for model in ("mythos-5", "fable-5"):
        result = ws.run("revoke", "-m", model, "-r", "eu-west-1", "--reason", "order", "--yes")
        assert result.code == 0, result.stderr
    return ws


def _rows(ws: Workspace) -> list[sqlite3.Row]:
    db = sqlite3.connect(ws.state_db)
    db.row_factory = sqlite3.Row
    rows = db.execute("SELECT * FROM audit ORDER BY seq").fetchall()
    db.close()
    return rows


def _truncate_and_forge_head(ws: Workspace, keep: int) -> None:
    """The attack: delete the tail, copy the last remaining (seq, hash) into the head, and
    roll the ops and ledger tables back to match (audit verify recomputes them from the
    log, so a careful attacker leaves no row the shortened log does not back)."""
    db = sqlite3.connect(ws.state_db)
    with db:
        gone = {op for (op,) in db.execute("SELECT op_id FROM audit WHERE seq > ?", (keep,)) if op}
        kept = {op for (op,) in db.execute("SELECT op_id FROM audit WHERE seq <= ?", (keep,))}
        for op in gone - kept:
            db.execute("DELETE FROM ops WHERE id = ?", (op,))
            db.execute("DELETE FROM ledger WHERE op_id = ?", (op,))
        db.execute("DELETE FROM audit WHERE seq > ?", (keep,))
        [digest] = db.execute("SELECT hash FROM audit WHERE seq = ?", (keep,)).fetchone()
        db.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (keep, digest))
    db.close()


def _rewrite_and_rehash(ws: Workspace, seq: int, reason: str) -> None:
    """The attack: change one event's payload and recompute every later hash and the head."""
    rows = _rows(ws)
    db = sqlite3.connect(ws.state_db)
    prev = rows[seq - 2]["hash"] if seq > 1 else GENESIS
    with db:
        for row in rows[seq - 1 :]:
            payload = json.loads(row["payload"])
            if row["seq"] == seq:
                payload["reason"] = reason
            digest = event_hash(
                prev, row["seq"], row["at"], row["actor"], row["kind"], row["op_id"], payload
            )
            db.execute(
                "UPDATE audit SET payload = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                (json.dumps(payload), prev, digest, row["seq"]),
            )
            prev = digest
        db.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (rows[-1]["seq"], prev))
    db.close()


def _keypair(folder: Path, name: str) -> Path:
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def test_truncated_tail_with_forged_head_is_caught_by_the_anchor(
    logged: Workspace, sink_url: str
) -> None:
    assert logged.run("audit", "anchor", "--to", sink_url).code == 0

    _truncate_and_forge_head(logged, keep=5)
    assert logged.run("audit", "verify").code == 0  # the chain and the tables cannot tell
    # The attacker anchors the shortened log too: the earlier checkpoint still stands.
    assert logged.run("audit", "anchor", "--to", sink_url).code == 0
    result = logged.run("audit", "verify", "--anchor", sink_url, "-o", "json")

    assert result.code == 3
    [problem] = result.json()["problems"]
    assert "checkpoint of event 10" in problem
    assert "beyond the log's end at event 5" in problem
    assert "events 6..10 were deleted" in problem


def test_chain_rehashed_from_an_earlier_event_is_caught_by_the_anchor(
    logged: Workspace, sink_url: str
) -> None:
    assert logged.run("audit", "anchor", "--to", sink_url).code == 0

    _rewrite_and_rehash(logged, seq=1, reason="routine maintenance")
    assert logged.run("audit", "verify").code == 0  # re-hashed: the chain alone is fooled
    result = logged.run("audit", "verify", "--anchor", sink_url)

    assert result.code == 3
    assert "checkpoint of event 10" in result.stdout
    assert "rewritten or re-hashed" in result.stdout


def test_untouched_log_verifies_against_every_checkpoint(logged: Workspace, sink_url: str) -> None:
    assert logged.run("audit", "anchor", "--to", sink_url).code == 0
    logged.run("revoke", "-m", "all", "-r", "eu-central-1", "--reason", "order", "--yes")
    assert logged.run("audit", "anchor", "--to", sink_url).code == 0

    result = logged.run("audit", "verify", "--anchor", sink_url, "-o", "json")

    assert result.code == 0, result.stdout
    assert result.json()["problems"] == []


def test_empty_anchor_is_a_note_not_a_failure(logged: Workspace, sink_url: str) -> None:
    result = logged.run("audit", "verify", "--anchor", sink_url)

    assert result.code == 0
    assert "note: no checkpoint in the anchor" in result.stdout


def test_overwritten_or_deleted_s3_checkpoint_does_not_hide_the_locked_version(
    logged: Workspace, s3_url: str
) -> None:
    anchored = logged.run("audit", "anchor", "--to", s3_url, "-o", "json").json()
    key = anchored["where"].split(" ")[0].removeprefix(f"s3://{BUCKET}/")
    assert key.startswith("prod/000000000010-")
    s3 = _s3(logged.server)
    [version] = s3.list_object_versions(Bucket=BUCKET)["Versions"]
    assert version["Key"] == key
    with pytest.raises(s3.exceptions.ClientError, match="AccessDenied"):
        s3.delete_object(Bucket=BUCKET, Key=key, VersionId=version["VersionId"])

    _truncate_and_forge_head(logged, keep=5)
    forged = {**anchored["checkpoint"], "seq": 5, "hash": _rows(logged)[-1]["hash"]}
    s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(forged).encode())
    s3.delete_object(Bucket=BUCKET, Key=key)  # a delete marker on top
    result = logged.run("audit", "verify", "--anchor", s3_url, "-o", "json")

    assert result.code == 3
    assert any("beyond the log's end at event 5" in p for p in result.json()["problems"])
    assert any("delete marker" in n for n in result.json()["notes"])


def test_forged_checkpoint_with_a_bad_signature_is_reported(
    logged: Workspace, tmp_path: Path
) -> None:
    alice, mallory = _keypair(tmp_path, "alice"), _keypair(tmp_path, "mallory")
    signers = tmp_path / "allowed_signers"
    signers.write_text(f"alice@example.com {alice.with_suffix('.pub').read_text()}")
    logged.write_inventory(policy={"restore": {"allowed_signers": str(signers)}})
    sink = tmp_path / "checkpoints.jsonl"
    url = f"file://{sink}"

    anchored = logged.run("audit", "anchor", "--to", url, "--key", str(alice), "-o", "json")
    assert anchored.code == 0, anchored.stderr
    assert anchored.json()["checkpoint"]["signer"] == "alice@example.com"
    assert logged.run("audit", "verify", "--anchor", url).code == 0
    # Mallory (not in allowed_signers) anchors, and edits alice's checkpoint to frame her.
    assert logged.run("audit", "anchor", "--to", url, "--key", str(mallory)).code != 0
    genuine = Checkpoint.from_json(sink.read_text().splitlines()[0])
    with sink.open("a") as out:
        out.write(json.dumps({**json.loads(genuine.to_json()), "seq": 2}) + "\n")
    result = logged.run("audit", "verify", "--anchor", url, "-o", "json")

    assert result.code == 3
    [problem] = result.json()["problems"]
    assert "checkpoint of event 2" in problem
    assert "signature does not verify" in problem


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://example.com/x", "unsupported scheme 'ftp'"),
        ("file://host/tmp/x", "read as a host"),
        ("file:///tmp/../etc/x", "no '..'"),
        ("file:///dev/null", "under /dev"),
        ("file:///tmp/x?mode=w", "?query"),
        ("s3://Bad_Bucket/p?region=us-east-1", "bucket name 'Bad_Bucket'"),
        ("s3://killswitch-anchors/p", "needs region=REGION"),
        ("s3://killswitch-anchors/p?region=us-east-1&acl=public", "unknown parameter 'acl'"),
        ("s3://killswitch-anchors/a/../b?region=us-east-1", "prefix"),
        ("s3://killswitch-anchors/p?region=us-east-1&retain_days=0", "retain_days"),
        (
            "s3://killswitch-anchors/p?region=us-east-1&endpoint_url=ftp://u:hunter2@127.0.0.1",
            "must be http:// or https://",
        ),
    ],
)
def test_bad_anchor_url_is_refused_naming_the_bad_part_and_nothing_is_written(
    ws: Workspace, url: str, says: str
) -> None:
    before = {p for p in ws.path.rglob("*")}

    anchored = ws.run("audit", "anchor", "--to", url)
    verified = ws.run("audit", "verify", "--anchor", url)

    for result in (anchored, verified):
        assert result.code == 64
        assert says in result.stderr
        assert "hunter2" not in result.stderr + result.stdout
    assert {p for p in ws.path.rglob("*")} == before


def test_anchor_with_nothing_configured_says_how_to_configure(logged: Workspace) -> None:
    result = logged.run("audit", "anchor")

    assert result.code == 64
    assert "--to URL" in result.stderr and "policy.audit.anchor" in result.stderr


def test_policy_anchor_is_the_default_and_relative_to_the_inventory(logged: Workspace) -> None:
    logged.write_inventory(policy={"audit": {"anchor": "file:anchor/checkpoints.jsonl"}})

    assert logged.run("audit", "anchor").code == 0

    [line] = (logged.path / "anchor" / "checkpoints.jsonl").read_text().splitlines()
    checkpoint = Checkpoint.from_json(line)
    assert (checkpoint.seq, checkpoint.hash) == (10, _rows(logged)[-1]["hash"])
    assert checkpoint.signature is None


def test_anchor_refuses_to_pin_an_already_broken_chain(logged: Workspace, tmp_path: Path) -> None:
    db = sqlite3.connect(logged.state_db)
    with db:
        db.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2")
    db.close()

    result = logged.run("audit", "anchor", "--to", f"file://{tmp_path / 'c.jsonl'}")

    assert result.code == 3
    assert "not anchored" in result.stderr
    assert not (tmp_path / "c.jsonl").exists()


def test_bucket_without_object_lock_is_refused(logged: Workspace) -> None:
    _s3(logged.server).create_bucket(Bucket="plain-bucket")
    url = f"s3://plain-bucket/p?region=us-east-1&endpoint_url={logged.server}"

    result = logged.run("audit", "anchor", "--to", url)

    assert result.code == 1
    assert "Object Lock" in result.stderr
    assert "Contents" not in _s3(logged.server).list_objects_v2(Bucket="plain-bucket")


def test_engine_hook_never_raises_when_the_anchor_is_down(
    logged: Workspace, moto: MotoServer
) -> None:
    store = open_store(f"sqlite:///{logged.state_db}")
    down = f"s3://{BUCKET}/p?region=us-east-1&endpoint_url=http://127.0.0.1:{free_port()}"
    started = time.monotonic()

    for url in (down, "ftp://nowhere", f"file://{logged.path}"):  # down, bad, a folder
        anchor_after_op(store, url, store_url="sqlite:///state.db")
    assert time.monotonic() - started < 10

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        hung = f"s3://{BUCKET}/p?region=us-east-1&endpoint_url=http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        anchor_after_op(store, hung, store_url="sqlite:///state.db", deadline=0.5)
        assert time.monotonic() - started < 2

    anchor_after_op(store, None, store_url="sqlite:///state.db")  # no anchor configured
    anchor_after_op(store, "file:anchor/c.jsonl", store_url="s", base=logged.path)
    store.close()
    [line] = (logged.path / "anchor" / "c.jsonl").read_text().splitlines()
    assert Checkpoint.from_json(line).seq == 10


def test_export_round_trips_every_event_for_a_siem(logged: Workspace, tmp_path: Path) -> None:
    logged.run("revoke", "-m", "all", "-r", "ap-*", "--reason", "ordre — ünïcode ✓", "--yes")
    out = tmp_path / "audit.jsonl"

    to_file = logged.run("audit", "export", "--output-file", str(out))
    to_stdout = logged.run("audit", "export")

    assert to_file.code == to_stdout.code == 0
    assert out.read_text() == to_stdout.stdout
    lines = out.read_text().splitlines()
    assert all(line.isascii() for line in lines)
    events = [json.loads(line) for line in lines]
    assert [e["seq"] for e in events] == [r["seq"] for r in _rows(logged)]
    prev = GENESIS
    for e in events:
        assert e["prev_hash"] == prev
        assert e["hash"] == event_hash(
            prev, e["seq"], e["at"], e["actor"], e["kind"], e["op"], e["payload"]
        )
        prev = e["hash"]
    assert any(e["payload"].get("reason") == "ordre — ünïcode ✓" for e in events)


def test_export_to_a_missing_folder_is_a_usage_error_not_a_traceback(
    logged: Workspace, tmp_path: Path
) -> None:
    result = logged.run("audit", "export", "--output-file", str(tmp_path / "no" / "a.jsonl"))

    assert result.code == 64
    assert "cannot write" in result.stderr and "Traceback" not in result.stderr


def test_every_op_anchors_the_head_to_the_inventorys_anchor(ws: Workspace) -> None:
    ws.write_inventory(
        policy={"restore": {"approvals": 2}, "audit": {"anchor": "file:anchor/checkpoints.jsonl"}}
    )

    revoked = ws.run("revoke", "-m", "mythos-5", "-r", "eu-west-1", "--reason", "r", "--yes")
    asked = ws.run("restore", "-m", "mythos-5", "-r", "eu-west-1", "--reason", "r", "--yes",
                   "-o", "json")  # fmt: skip
    declined = ws.run("decline", asked.json()["op"], "--reason", "no", actor="bob")

    assert (revoked.code, asked.code, declined.code) == (0, 5, 0)
    lines = (ws.path / "anchor" / "checkpoints.jsonl").read_text().splitlines()
    seqs = [Checkpoint.from_json(line).seq for line in lines]
    store = open_store(f"sqlite:///{ws.state_db}")
    assert len(seqs) == 3 and seqs == sorted(seqs)
    assert seqs[-1] == store.audit_head()[0]  # the newest checkpoint is the head
    store.close()
    anchor = f"file://{ws.path / 'anchor' / 'checkpoints.jsonl'}"
    assert ws.run("audit", "verify", "--anchor", anchor).code == 0
