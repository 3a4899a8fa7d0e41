"""The posture map (``killswitch status --output html``) of a mixed fleet, opened in
headless Chromium as the on-call engineer would open it: AWS in two accounts and a
plain one (moto), a Kubernetes cluster with two levers per cell (the test API server)
and a partner (the partner simulator). Some targets revoked, some restricted, some
left open, two re-opened by hand behind killswitch's back, one that cannot be read.
Every assertion reads the page the browser rendered: its text, its computed colours,
and the requests it made (none)."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from killswitch.posture_map import COLOURS, DRIFT_COLOUR
from tests.conftest import Workspace, person
from tests.support import browser
from tests.support.kubeserver import KubeServer, write_kubeconfig
from tests.support.partnersim import PartnerSim

ACME_SECRET = "acme-posture-map-secret-5d41402a"
ACCOUNTS = ["111111111111", "222222222222"]
# Allowed in a reason (no control characters), and hostile in a page.
HOSTILE = (
    'Commerce order INC-7 <script>document.title="pwned"</script> '
    '"quoted" & \'single\' <img src="http://127.0.0.1:9/leak.png">'
)
# What someone with write access to the state could put in an op row: a bidi override.
TAMPERED = "looks fine \u202egnp.exe <b>bold</b>"
NP_PATH = "/apis/networking.k8s.io/v1/namespaces/serving/networkpolicies/killswitch-{}"

# (model, provider, account, region) → (what the cell says, drift)
EXPECTED = {
    ("mythos-5", "aws-prod", "", "us-east-1"): ("open", False),
    ("mythos-5", "aws-prod", "", "eu-west-1"): ("revoked", False),
    ("mythos-5", "aws-org", ACCOUNTS[0], "eu-west-1"): ("revoked", False),
    ("mythos-5", "aws-org", ACCOUNTS[1], "eu-west-1"): ("revoked", False),
    ("mythos-5", "k8s-eu", "", "eu-west-1"): ("open", True),  # the policy deleted by hand
    ("mythos-5", "acme", "", "us-east"): ("open", False),
    ("mythos-5", "acme", "", "eu-west"): ("open", True),  # re-opened in the partner's console
    ("fable-5", "aws-prod", "", "us-east-1"): ("open", False),
    ("fable-5", "aws-prod", "", "eu-west-1"): ("restricted", False),
    ("fable-5", "aws-org", ACCOUNTS[0], "eu-west-1"): ("restricted", False),
    ("fable-5", "aws-org", ACCOUNTS[1], "eu-west-1"): ("revoked", False),
    ("fable-5", "k8s-eu", "", "eu-west-1"): ("unreadable", False),
    ("fable-5", "acme", "", "us-east"): ("open", False),
    ("fable-5", "acme", "", "eu-west"): ("restricted", False),
}
LABELS = {
    "open": "OPEN",
    "revoked": "REVOKED",
    "restricted": "RESTRICTED (us-person)",
    "unreadable": "UNREADABLE",
}


@dataclass
class Fleet:
    ws: Workspace
    cluster: KubeServer
    acme: PartnerSim
    kube: Any  # an ApiClient straight at the cluster, to change things by hand


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One browser for the module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        found = browser.launch(playwright)
        yield found
        found.close()


@pytest.fixture
def fleet(ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    from kubernetes import client

    cluster = KubeServer().start()
    acme = PartnerSim(
        secret=ACME_SECRET,
        key_id="ks-acme",
        regions=["us-east", "eu-west"],
        models={"mythos-5": "acme.mythos-5-v1:0", "fable-5": "acme.fable-5"},
    ).start()
    acme.behave(poll_after=0)
    kube = cluster.client(retries=False)
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": "serving"}})
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"eu-prod": cluster})
    monkeypatch.setenv("ACME_KILLSWITCH_SECRET", ACME_SECRET)
    ws.write_inventory(
        providers={
            "aws-prod": {
                "type": "aws",
                "regions": ["us-east-1", "eu-west-1"],
                "mechanisms": ["ssm-flag"],
                "endpoint_url": ws.endpoint,
            },
            "aws-org": {
                "type": "aws",
                "regions": ["eu-west-1"],
                "mechanisms": ["ssm-flag"],
                "endpoint_url": ws.endpoint,
                "role_arn": "arn:aws:iam::{account}:role/killswitch-operator",
                "accounts": [{"id": a} for a in ACCOUNTS],
            },
            "k8s-eu": {
                "type": "kubernetes",
                "context": "eu-prod",
                "kubeconfig": str(kubeconfig),
                "region": "eu-west-1",
                "namespaces": ["serving"],
                "mechanisms": ["configmap-flag", "network-policy"],
                "timeout_seconds": 5,
            },
            "acme": {
                "type": "partner",
                "base_url": acme.url,
                "key_id": "ks-acme",
                "secret_env": "ACME_KILLSWITCH_SECRET",
                "regions": ["us-east", "eu-west"],
                "models": {"mythos-5": "acme.mythos-5-v1:0", "fable-5": "acme.fable-5"},
                "timeout_seconds": 2,
            },
        },
        scopes={},
        policy={
            "restore": {"approvals": 2},
            "retry": {"attempts": 3, "max_seconds": 5, "base_seconds": 0.05},
        },
    )
    yield Fleet(ws, cluster, acme, kube)
    kube.close()
    acme.stop()
    cluster.stop()


def _rgb(colour: str) -> str:
    """``#rrggbb`` as getComputedStyle reports it."""
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def _op(result: Any) -> str:
    assert result.code == 0, result.stdout + result.stderr
    op_id: str = result.json()["op"]
    return op_id


def test_a_mixed_fleet_renders_with_the_right_colours_and_every_cell_says_who_and_why(
    fleet: Fleet, chromium: Any, tmp_path: Path
) -> None:
    from kubernetes import client

    ws = fleet.ws
    # The incident: mythos-5 revoked outside the US; fable-5 restricted in Europe, and
    # revoked outright in one account; the US left open.
    revoke = _op(
        ws.run(
            "revoke", "-m", "mythos-5", "-r", "!us-*", "--reason", HOSTILE, "--ticket", "INC-7",
            "--yes", "-o", "json", actor="alice",
        )
    )  # fmt: skip
    restrict = _op(
        ws.run(
            "restrict", "-m", "fable-5", "-r", "eu-*", "-a", "us-person",
            "--reason", "EU review pending", "--yes", "-o", "json", actor="bob",
        )
    )  # fmt: skip
    account = _op(
        ws.run(
            "revoke", "--target", f"aws:aws-org@{ACCOUNTS[1]}/*/*/fable-5",
            "--reason", "account 2 breach", "--yes", "-o", "json", actor="carol",
        )
    )  # fmt: skip
    # Behind killswitch's back: the cluster's policy deleted, the partner console re-opened.
    client.NetworkingV1Api(fleet.kube).delete_namespaced_network_policy(
        "killswitch-mythos-5", "serving"
    )
    fleet.acme.set_access("mythos-5", "eu-west", "open")
    # One lever that cannot be read, and an op row edited by someone who can write the state.
    fleet.cluster.inject("GET", NP_PATH.format("fable-5") + "$", 403, times=None)
    with sqlite3.connect(ws.state_db) as db:
        db.execute("UPDATE ops SET reason = ? WHERE id = ?", (TAMPERED, account))

    process = ws.spawn("status", "--output", "html", actor="dave")
    out, err = process.communicate(timeout=120)

    assert process.returncode == 3, err  # status: one target could not be read
    assert out.startswith("<!DOCTYPE html>"), err
    assert out.isascii()
    assert ACME_SECRET not in out
    for keys in ws.people.values():
        assert keys["AWS_SECRET_ACCESS_KEY"] not in out
    page_file = tmp_path / "posture.html"
    page_file.write_text(out, encoding="ascii")

    context = chromium.new_context(viewport={"width": 1600, "height": 1000})
    requests: list[str] = []
    context.on("request", lambda request: requests.append(request.url))
    page = context.new_page()
    page.goto(page_file.as_uri())
    page.wait_for_load_state("load")
    shot = tmp_path / "posture.png"
    page.screenshot(path=str(shot), full_page=True)

    # The screenshot is a real picture of the page.
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    # Nothing left the page: the only request was the file itself.
    assert requests == [page_file.as_uri()]
    # Hostile text is text: no script ran, no element came out of a reason.
    assert page.title().startswith("killswitch posture map")
    assert page.evaluate("document.querySelectorAll('script, img, b').length") == 0

    cells = page.evaluate(
        """[...document.querySelectorAll('td.cell')].map(td => ({
            key: [td.dataset.model, td.dataset.provider, td.dataset.account, td.dataset.region],
            text: td.innerText,
            background: getComputedStyle(td).backgroundColor,
            border: getComputedStyle(td).borderTopStyle + ' ' + getComputedStyle(td).borderTopColor,
            reasons: [...td.querySelectorAll('.reason')].map(q => q.textContent),
        }))"""
    )
    found = {tuple(c["key"]): c for c in cells}
    assert set(found) == set(EXPECTED)
    for key, (posture, drifted) in EXPECTED.items():
        cell = found[key]
        assert cell["text"].split("\n")[0].startswith(LABELS[posture]), (key, cell["text"])
        assert cell["background"] == _rgb(COLOURS[posture]), key
        assert ("DRIFT" in cell["text"]) is drifted, (key, cell["text"])
        assert (cell["border"] == f"dashed {_rgb(DRIFT_COLOUR)}") is drifted, key
    # ...and it is what the servers hold, read straight from them.
    for (model, provider, _, region), (posture, _) in EXPECTED.items():
        if provider == "aws-prod":
            assert ws.posture(region, model) == posture, (model, region)
        elif provider == "acme":
            assert fleet.acme.posture(model, region) == posture, (model, region)
    # Four postures, four colours.
    assert len({found[k]["background"] for k in EXPECTED}) == 4

    # Each cell names its levers, the op that set them, who and why.
    k8s = found[("mythos-5", "k8s-eu", "", "eu-west-1")]["text"]
    assert "configmap-flag: revoked" in k8s
    assert re.search(r"network-policy: open\s+DRIFT\s+ledger says revoked", k8s)
    assert revoke in k8s and person("alice") in k8s and "set 20" in k8s
    revoked_eu = found[("mythos-5", "aws-prod", "", "eu-west-1")]
    assert revoke in revoked_eu["text"] and person("alice") in revoked_eu["text"]
    assert revoked_eu["reasons"] == [HOSTILE]  # shown as typed, not as markup
    restricted = found[("fable-5", "acme", "", "eu-west")]["text"]
    assert restrict in restricted and person("bob") in restricted
    assert "EU review pending" in restricted
    tampered = found[("fable-5", "aws-org", ACCOUNTS[1], "eu-west-1")]
    assert account in tampered["text"] and person("carol") in tampered["text"]
    assert tampered["reasons"] == ["looks fine \\u202egnp.exe <b>bold</b>"]
    unreadable = found[("fable-5", "k8s-eu", "", "eu-west-1")]["text"]
    assert "network-policy: UNREADABLE" in unreadable and "403" in unreadable
    assert "configmap-flag: restricted(us-person)" in unreadable
    assert "never set by killswitch" in found[("fable-5", "acme", "", "us-east")]["text"]
    # Accounts get their own header over their columns.
    headers = page.evaluate("[...document.querySelectorAll('th.account')].map(t => t.innerText)")
    assert [h for h in headers if h] == [f"account {a}" for a in ACCOUNTS]

    # The timeline: newest first, each op's request with its actor, kind and reason.
    timeline = page.evaluate(
        """[...document.querySelectorAll('#timeline tbody tr')].map(tr =>
            ({seq: Number(tr.dataset.seq), cells: [...tr.cells].map(td => td.textContent)}))"""
    )
    seqs = [row["seq"] for row in timeline]
    assert seqs == sorted(seqs, reverse=True) and len(seqs) >= 6
    kinds = {(row["cells"][3], row["cells"][2]): row["cells"] for row in timeline}
    for op_id in (revoke, restrict, account):
        assert {(op_id, "op.requested"), (op_id, "op.finished")} <= set(kinds)
    assert kinds[revoke, "op.requested"][1] == f"{person('alice')} (alice)"
    assert kinds[revoke, "op.requested"][4] == HOSTILE
    assert kinds[restrict, "op.requested"][1] == f"{person('bob')} (bob)"
    # The log keeps the reason as it was asked; the edited op row shows in the cell only.
    assert kinds[account, "op.requested"][4] == "account 2 breach"
    assert kinds[account, "op.finished"][4] == ""
    facts = page.evaluate("document.querySelector('#status').textContent")
    assert facts == "unreadable"
    assert page.evaluate("document.querySelector('#inventory').textContent") == str(ws.inventory)

    # On paper: the colours are kept (print-color-adjust) and every label is still there.
    page.emulate_media(media="print")
    printed = page.evaluate(
        """[...document.querySelectorAll('td.cell')].map(td => ({
            key: [td.dataset.model, td.dataset.provider, td.dataset.account, td.dataset.region],
            adjust: getComputedStyle(td).printColorAdjust,
            background: getComputedStyle(td).backgroundColor,
            text: td.innerText}))"""
    )
    for cell in printed:
        posture, drifted = EXPECTED[tuple(cell["key"])]
        assert cell["adjust"] == "exact"
        assert cell["background"] == _rgb(COLOURS[posture])
        assert cell["text"].startswith(LABELS[posture]) and ("DRIFT" in cell["text"]) is drifted
    pdf = page.pdf(landscape=True)
    assert pdf.startswith(b"%PDF") and len(pdf) > 10_000
    (tmp_path / "posture.pdf").write_bytes(pdf)
    assert requests == [page_file.as_uri()]

    # The listener does see requests: a page that asks for an image is heard.
    page.set_content('<img src="http://127.0.0.1:9/probe.png">')
    assert "http://127.0.0.1:9/probe.png" in requests
    context.close()


def test_html_is_for_status_only_other_commands_say_so_with_64(ws: Workspace) -> None:
    for args in (["drift"], ["plan", "revoke", "-m", "all"], ["ops", "list"]):
        result = ws.run(*args, "-o", "html")

        assert result.code == 64, args
        assert "'--output'" in result.stderr and "only by `killswitch status`" in result.stderr
        assert result.stdout == ""
    assert ws.run("status", "-o", "html").code == 0
    assert json.loads(ws.run("status", "-o", "json").stdout)["status"] == "ok"
