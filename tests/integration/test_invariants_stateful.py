"""A model-based test of the safety invariants (DESIGN.md): operators run revoke,
restrict, restore, approve, resume and drift --fix in any order; a restore's holder
is stalled (SIGSTOP) while its writes are in flight, or killed mid-apply and its lock
broken; all against the real moto server, through the fault proxy, with real processes.

After every step it checks, at the server, that no target is looser than the tightest
posture a tightening op set on it since the last restore a current, valid approval
applied there. The model also knows which restores a newer revoke superseded or made
stale, and requires approve/resume to refuse exactly those (exit 6).

`make test` runs a fast profile; `make soak` a long one (KILLSWITCH_STATEFUL_EXAMPLES).
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from killswitch.domain import OPEN, REVOKED, Access, Posture
from tests.conftest import Workspace
from tests.support.faultproxy import Call, FaultProxy, Rule
from tests.support.processes import wait_for
from tests.support.servers import MotoServer

MODELS = ["mythos-5", "fable-5"]
REGIONS = ["us-east-1", "eu-west-1", "ap-northeast-1"]
Where = tuple[str, str]  # (region, model)
EVERYWHERE: list[Where] = [(r, m) for r in REGIONS for m in MODELS]
EXAMPLES = int(os.environ.get("KILLSWITCH_STATEFUL_EXAMPLES", "3"))
STEPS = int(os.environ.get("KILLSWITCH_STATEFUL_STEPS", "8"))

selections = st.tuples(
    st.sets(st.sampled_from(MODELS), min_size=1), st.sets(st.sampled_from(REGIONS), min_size=1)
)
audiences = st.sampled_from([("us-person",), ("partner-a", "us-person")])


@dataclass
class Restore:
    """What the model knows of one restore request."""

    op: str
    order: int  # when it was requested, among every op the model made
    targets: frozenset[Where]
    desired: Access
    dead: bool = False  # superseded or stale: it must never re-open anything
    started: bool = False  # approved and killed mid-apply: `ops resume` finishes it


def loosening(call: Call) -> bool:
    """A restore's write: open, or restricted to an audience (from revoked)."""
    return call.action == "PutParameter" and (
        b'\\"posture\\": \\"open\\"' in call.body or b'\\"posture\\": \\"restricted\\"' in call.body
    )


class KillSwitchModel(RuleBasedStateMachine):
    ws: Workspace
    proxy: FaultProxy

    def __init__(self) -> None:
        super().__init__()
        self.floor: dict[Where, Access] = dict.fromkeys(EVERYWHERE, OPEN)
        self.restores: dict[str, Restore] = {}
        self.order = 0

    # -- helpers ----------------------------------------------------------------------
    def _observed(self, where: Where) -> Access:
        flag = self.ws.flag(*where)
        if flag is None:
            return OPEN
        return Access(Posture(flag["posture"]), tuple(flag["audience"]))

    def _flags(self, sel: tuple[set[str], set[str]]) -> list[str]:
        models, regions = sel
        return [a for m in sorted(models) for a in ("-m", m)] + [
            a for r in sorted(regions) for a in ("-r", r)
        ]

    def _targets(self, sel: tuple[set[str], set[str]]) -> frozenset[Where]:
        models, regions = sel
        return frozenset((r, m) for r in regions for m in models)

    def _tightened(self, reached: frozenset[Where]) -> None:
        """A revoke or restrict reached ``reached``: every restore there is superseded."""
        for restore in self.restores.values():
            if restore.targets & reached:
                restore.dead = True

    def _restored(self, done: Restore) -> None:
        """``done`` re-opened its targets: that is now the floor there, and every restore
        requested before it on the same targets is stale."""
        for where in done.targets:
            self.floor[where] = done.desired
        for other in self.restores.values():
            if other is not done and other.order < done.order and other.targets & done.targets:
                other.dead = True

    def _next(self) -> int:
        self.order += 1
        return self.order

    # -- what operators do ---------------------------------------------------------------
    @rule(sel=selections)
    def revoke(self, sel: tuple[set[str], set[str]]) -> None:
        result = self.ws.run("revoke", *self._flags(sel), "--reason", "r", "--yes", "-o", "json")
        assert result.code == 0, result.stderr
        self._next()
        for where in self._targets(sel):
            self.floor[where] = REVOKED
        self._tightened(self._targets(sel))

    @rule(sel=selections, audience=audiences)
    def restrict(self, sel: tuple[set[str], set[str]], audience: tuple[str, ...]) -> None:
        args = [a for name in audience for a in ("-a", name)]
        result = self.ws.run(
            "restrict", *self._flags(sel), *args, "--reason", "r", "--yes", "-o", "json"
        )
        assert result.code == 0, result.stderr
        self._next()
        wanted = Access(Posture.RESTRICTED, audience)
        for where in self._targets(sel):
            self.floor[where] = self.floor[where].meet(wanted)
        for row in result.json()["targets"]:
            if row["result"] == "kept":  # only ever kept tighter, never loosened
                desired = Access.from_json(row["desired"])
                assert desired.at_least_as_tight_as(wanted)
        self._tightened(self._targets(sel))

    @rule(sel=selections, audience=st.sampled_from([(), ("us-person",)]))
    def request_restore(self, sel: tuple[set[str], set[str]], audience: tuple[str, ...]) -> None:
        args = [a for name in audience for a in ("-a", name)]
        result = self.ws.run(
            "restore", *self._flags(sel), *args, "--reason", "r", "--yes", "-o", "json"
        )
        assert result.code in (0, 5), result.stderr
        op = result.json()["op"]
        if result.code == 5 and op not in self.restores:
            desired = Access(Posture.RESTRICTED, audience) if audience else OPEN
            self.restores[op] = Restore(op, self._next(), self._targets(sel), desired)

    @precondition(lambda self: bool(self.restores))
    @rule(data=st.data())
    def approve(self, data: st.DataObject) -> None:
        restore = data.draw(st.sampled_from(sorted(self.restores.values(), key=lambda r: r.op)))
        result = self.ws.run("approve", restore.op, "--yes", actor="bob")
        if restore.started and not restore.dead:
            assert result.code == 64, result.stderr  # already approved and applying
            return
        self._settled(restore, result.code, result.stderr)

    @precondition(lambda self: bool(self.restores))
    @rule(data=st.data())
    def resume(self, data: st.DataObject) -> None:
        restore = data.draw(st.sampled_from(sorted(self.restores.values(), key=lambda r: r.op)))
        result = self.ws.run("ops", "resume", restore.op, "--yes", actor="dave")
        if not restore.dead and result.code == 5:
            return  # not approved yet: nothing happened
        self._settled(restore, result.code, result.stderr)

    def _settled(self, restore: Restore, code: int, stderr: str) -> None:
        if restore.dead:
            assert code == 6, f"{restore.op} is superseded or stale, yet exit {code}: {stderr}"
            del self.restores[restore.op]
            return
        assert code == 0, stderr
        self._restored(restore)
        del self.restores[restore.op]

    @precondition(lambda self: any(f != OPEN for f in self.floor.values()))
    @rule(data=st.data())
    def someone_opens_a_flag_and_drift_fix_heals_it(self, data: st.DataObject) -> None:
        closed = sorted(w for w, f in self.floor.items() if f != OPEN)
        region, model = data.draw(st.sampled_from(closed))
        self.ws.ssm(region).delete_parameter(Name=f"/killswitch/models/{model}")
        result = self.ws.run("drift", "--fix", actor="cron")
        assert result.code == 0, result.stdout + result.stderr
        self._next()
        self._tightened(frozenset({(region, model)}))

    def _apply_with_writes_held(
        self, data: st.DataObject
    ) -> tuple[Restore, Rule, int, subprocess.Popen[str]]:
        """bob applies a live restore (approve, or `ops resume` once approved) with every
        loosening write held at the proxy; back once they are all in flight (or it ended)."""
        live = sorted((r for r in self.restores.values() if not r.dead), key=lambda r: r.op)
        restore = data.draw(st.sampled_from(live))
        writes = sum(self._observed(w) != restore.desired for w in restore.targets)
        held = self.proxy.add(loosening, fault="hold")
        command = ("ops", "resume", restore.op) if restore.started else ("approve", restore.op)
        process = self.ws.spawn(*command, "--yes", actor="bob")
        wait_for(lambda: held.fired == writes or process.poll() is not None, "writes")
        return restore, held, writes, process

    @precondition(lambda self: any(not r.dead for r in self.restores.values()))
    @rule(data=st.data())
    def a_restore_stalls_mid_apply_and_a_revoke_takes_over(self, data: st.DataObject) -> None:
        restore, held, writes, approve = self._apply_with_writes_held(data)
        try:
            approve.send_signal(signal.SIGSTOP)
            revoke = self.ws.spawn("revoke", "-m", "all", "--reason", "new order", "--yes")
            wait_for(lambda: held.fired >= writes, "every write in flight")
            wait_for(lambda: self._holder() != "bob", "the revoke to take the lock over")
            held.gate.set()  # the stalled restore's writes land after the takeover
            _, err = revoke.communicate(timeout=120)
            assert revoke.returncode == 0, err
        finally:
            held.gate.set()
            approve.send_signal(signal.SIGCONT)
            _, approve_err = approve.communicate(timeout=60)
            self.proxy.clear()
        # 0: it finished before the revoke; 4: fenced mid-apply; 6: superseded before it
        # could start (its process was stopped before it read anything).
        assert approve.returncode in (0, 4, 6), approve_err
        if approve.returncode == 0:
            self._restored(restore)
            del self.restores[restore.op]
        self._next()
        for where in EVERYWHERE:
            self.floor[where] = REVOKED
        self._tightened(frozenset(EVERYWHERE))

    @precondition(lambda self: any(not r.dead for r in self.restores.values()))
    @rule(data=st.data())
    def a_restore_is_killed_mid_apply_and_its_lock_broken(self, data: st.DataObject) -> None:
        restore, held, _, approve = self._apply_with_writes_held(data)
        try:
            approve.kill()
            approve.communicate(timeout=60)
        finally:
            held.gate.set()
            self.proxy.clear()
        broken = self.ws.run("lock", "break", "--reason", "laptop died", "--yes")
        assert broken.code == 0, broken.stderr
        # A current, approved restore may open any of its targets before it dies; its
        # ledger entries are written, so restores requested before it are stale now.
        self._restored(restore)
        restore.started = True

    def _holder(self) -> str | None:
        data = self.ws.run("lock", "status", "-o", "json").json()
        return data.get("owner") if data["held"] else None

    # -- what must hold after every step ---------------------------------------------------
    @invariant()
    def no_target_is_looser_than_the_tightest_op_that_reached_it(self) -> None:
        for where in EVERYWHERE:
            seen = self._observed(where)
            assert seen.at_least_as_tight_as(self.floor[where]), (
                f"{where} is {seen}, but nothing since made it looser than {self.floor[where]}"
            )


def test_no_sequence_of_operators_stalls_and_kills_reopens_what_was_closed(
    tmp_path_factory: pytest.TempPathFactory, moto_server: MotoServer
) -> None:
    proxy = FaultProxy(moto_server.url).start()

    class Machine(KillSwitchModel):
        def __init__(self) -> None:
            super().__init__()
            moto_server.reset()
            proxy.clear()
            folder: Path = tmp_path_factory.mktemp("model")
            self.ws = Workspace(folder, proxy.url, moto_server.url)
            self.proxy = proxy
            self.ws.write_inventory(
                models={m: {} for m in MODELS},
                providers={
                    "aws-prod": {
                        "type": "aws",
                        "regions": REGIONS,
                        "mechanisms": ["ssm-flag"],
                        "endpoint_url": proxy.url,
                        "timeout_seconds": 1.0,
                    }
                },
                scopes={},
                policy={
                    "restore": {"approvals": 2},
                    "retry": {"attempts": 2, "max_seconds": 3, "base_seconds": 0.05},
                    "lock": {"ttl_seconds": 3600, "heartbeat_seconds": 0.2},
                },
            )

    try:
        run_state_machine_as_test(
            Machine,
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                # A fixed walk in `make test`; new walks every run in `make soak`.
                derandomize="KILLSWITCH_STATEFUL_EXAMPLES" not in os.environ,
                suppress_health_check=list(HealthCheck),
            ),
        )
    finally:
        proxy.stop()
