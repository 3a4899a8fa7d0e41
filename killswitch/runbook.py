"""Incident runbooks: checked-in YAML that sequences revoke / restrict / restore /
verify / drift / wait / confirm / notify steps, with typed inputs.

A run is recorded in the audit log (``run.started``, one ``run.step`` per step
with the op it made, ``run.finished``), so ``runbook resume RUN`` can continue
from the step that stopped it, on any machine that shares the state store.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from killswitch import yamlsrc
from killswitch.domain import Access, Action, Posture, utcnow
from killswitch.errors import ExitCode, KillswitchError, RunbookError, UsageError
from killswitch.selectors import Selector

DRY_RUN_SHOWN = 10  # target ids a dry-run step names
VARIABLE = re.compile(r"\$\{([a-z_][a-z0-9_]*)\}")
DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(text: str) -> float:
    found = DURATION.fullmatch(text.strip())
    if not found:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m or 1h")
    return float(found.group(1)) * UNITS[found.group(2)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    type: Literal["string", "list", "int"] = "string"
    default: str | int | list[str] | None = None
    required: bool = False
    description: str = ""


class SelectSpec(_Strict):
    models: list[str] | str = Field(default_factory=list)
    regions: list[str] | str = Field(default_factory=list)
    providers: list[str] | str = Field(default_factory=list)
    targets: list[str] | str = Field(default_factory=list)
    scope: str | None = None


class ExpectSpec(_Strict):
    posture: Posture
    audience: list[str] | str = Field(default_factory=list)


class StepSpec(_Strict):
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["revoke", "restrict", "restore", "verify", "drift", "wait", "confirm", "notify"]
    select: SelectSpec | None = None
    audience: list[str] | str = Field(default_factory=list)
    expect: ExpectSpec | None = None
    reason: str | None = None
    ticket: str | None = None
    duration: str | None = None
    until: ExpectSpec | None = None  # wait until `select` shows this posture
    message: str | None = None
    webhook_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]{0,127}$")
    on_failure: Literal["stop", "continue"] = "stop"
    timeout: str | None = None

    @field_validator("duration", "timeout")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and not VARIABLE.search(value):  # an input is checked at run time
            seconds(value)
        return value

    @model_validator(mode="after")
    def _fits_kind(self) -> StepSpec:
        needs_select = {"revoke", "restrict", "restore", "verify", "drift"}
        if self.kind in needs_select and self.select is None:
            raise ValueError(f"a {self.kind} step needs select: (models, regions, …)")
        if self.kind == "restrict" and not self.audience:
            raise ValueError("a restrict step needs audience:")
        if self.kind == "verify" and self.expect is None:
            raise ValueError("a verify step needs expect: {posture: …}")
        if self.kind == "wait" and self.duration is None and self.until is None:
            raise ValueError("a wait step needs duration: or until: (with select:)")
        if self.kind == "wait" and self.until is not None and self.select is None:
            raise ValueError("wait until: needs select:")
        if self.kind in ("confirm", "notify") and not self.message:
            raise ValueError(f"a {self.kind} step needs message:")
        return self


class RunbookSpec(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    description: str = ""
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    steps: list[StepSpec] = Field(min_length=1)


@dataclass(frozen=True)
class Runbook:
    path: Path
    spec: RunbookSpec
    digest: str  # sha256 of the file: a resumed run must run the same runbook

    def bind(self, given: Mapping[str, str]) -> dict[str, Any]:
        """Typed input values from ``--var`` strings and defaults; unknown or missing: 64."""
        unknown = sorted(set(given) - set(self.spec.inputs))
        if unknown:
            raise UsageError(
                f"--var {unknown[0]}: {self.path.name} has no such input "
                f"(inputs: {', '.join(self.spec.inputs) or 'none'})"
            )
        values: dict[str, Any] = {}
        for name, spec in self.spec.inputs.items():
            if name in given:
                values[name] = _typed(name, spec, given[name])
            elif spec.default is not None:
                values[name] = spec.default
            elif spec.required:
                raise UsageError(f"--var {name}=… is required by {self.path.name}")
            else:
                values[name] = [] if spec.type == "list" else ""
        return values


def _typed(name: str, spec: InputSpec, text: str) -> Any:
    if spec.type == "list":
        return [part.strip() for part in text.split(",") if part.strip()]
    if spec.type == "int":
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"--var {name}={text}: must be a whole number") from None
    return text


def load(path: Path) -> Runbook:
    """Read and validate a runbook; every problem names file, line and field (exit 64)."""
    source, problems = yamlsrc.read(path)
    if source is None:
        raise RunbookError(problems)
    if not isinstance(source.data, dict):
        raise RunbookError([f"{path}:1: a runbook is a mapping (name, inputs, steps)"])
    try:
        spec = RunbookSpec.model_validate(source.data)
    except ValidationError as exc:
        raise RunbookError(source.errors(exc)) from None
    problems = [
        source.at(loc, f"${{{name}}} is not an input of this runbook")
        for loc, name in _references(source.data)
        if name not in spec.inputs
    ]
    if problems:
        raise RunbookError(problems)
    return Runbook(path, spec, hashlib.sha256(path.read_bytes()).hexdigest())


def _references(data: Any, loc: yamlsrc.Loc = ()) -> list[tuple[yamlsrc.Loc, str]]:
    if isinstance(data, str):
        return [(loc, m) for m in VARIABLE.findall(data)]
    if isinstance(data, dict):
        return [r for k, v in data.items() for r in _references(v, (*loc, k))]
    if isinstance(data, list):
        return [r for i, v in enumerate(data) for r in _references(v, (*loc, i))]
    return []


def render(value: Any, variables: Mapping[str, Any]) -> Any:
    """Fill ``${input}``: a whole string takes the input's value (a list stays a list,
    spliced into a surrounding list); inside a longer string it is text."""
    if isinstance(value, str):
        whole = VARIABLE.fullmatch(value)
        if whole:
            return variables[whole.group(1)]
        return VARIABLE.sub(lambda m: _text(variables[m.group(1)]), value)
    if isinstance(value, list):
        out: list[Any] = []
        for item in value:
            rendered = render(item, variables)
            out += rendered if isinstance(rendered, list) and isinstance(item, str) else [rendered]
        return out
    return value


def _text(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _names(value: list[str] | str, variables: Mapping[str, Any]) -> tuple[str, ...]:
    rendered = render(value if isinstance(value, list) else [value], variables)
    return tuple(str(v) for v in rendered)


class NothingSelected(Exception):
    """A select field the runbook writes rendered empty (``providers: "${partners}"`` with
    no partners given): the step selects nothing. An empty list never means "all"."""

    def __init__(self, name: str) -> None:
        super().__init__(f"selects nothing: {name} is empty")


def selector(spec: SelectSpec, variables: Mapping[str, Any]) -> Selector:
    fields = {}
    for name in ("models", "regions", "providers", "targets"):
        written: list[str] | str = getattr(spec, name)
        fields[name] = _names(written, variables)
        if written and not fields[name]:
            raise NothingSelected(name)
    return Selector(**fields, scope=render(spec.scope, variables) if spec.scope else None)


def expected(spec: ExpectSpec, variables: Mapping[str, Any]) -> Access:
    return Access(spec.posture, _names(spec.audience, variables))


@dataclass(frozen=True)
class StepOutcome:
    index: int
    name: str
    kind: str
    status: str  # ok, failed, skipped, awaiting-approval, planned
    code: int
    op: str | None = None
    detail: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "index": self.index,
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "code": self.code,
            "op": self.op,
            "detail": self.detail,
        }


@dataclass
class RunResult:
    run_id: str | None
    runbook: str
    steps: list[StepOutcome] = field(default_factory=list)
    stopped_by: StepOutcome | None = None

    @property
    def code(self) -> int:
        if self.stopped_by is not None:
            return self.stopped_by.code
        if any(s.status == "failed" for s in self.steps):
            return int(ExitCode.PARTIAL)  # steps marked on_failure: continue failed
        if any(s.status == "planned" and s.code == ExitCode.PENDING for s in self.steps):
            return int(ExitCode.PENDING)  # a dry run that would change something, like plan
        return 0

    @property
    def status(self) -> str:
        words = {0: "complete", 2: "changes-pending", 5: "awaiting-approval"}
        return words.get(self.code, "failed")


@dataclass(frozen=True)
class Consent:
    """What a run asks once, before it changes anything: every confirm step's question
    and the plan of every change step (the whole blast radius)."""

    runbook: str
    questions: list[str]
    plans: list[tuple[int, StepSpec, Any]]  # (step index, step, its Plan)
    skipped: list[tuple[int, StepSpec, str]]  # change steps that select nothing, and why


Ask = Callable[[Consent], bool]
"""Shows a run's consent to a person and asks once: True to go on. Raises when nobody
can answer."""


class Watch(Protocol):
    """Live news of a run: each step as it starts and as it ends (the CLI prints them)."""

    def started(self, index: int, total: int, step: StepSpec) -> None:
        """Step ``index`` (0-based) of ``total`` begins."""

    def finished(self, outcome: StepOutcome) -> None:
        """A step ended."""


class _Unwatched:
    def started(self, index: int, total: int, step: StepSpec) -> None:
        pass

    def finished(self, outcome: StepOutcome) -> None:
        pass


class Runner:
    """Runs a runbook's steps against a Switch, recording the run in the audit log."""

    def __init__(
        self,
        switch: Any,
        runbook: Runbook,
        variables: Mapping[str, Any],
        *,
        yes: bool,
        dry_run: bool,
        ask: Ask,
        notify: Callable[[str, str], bool | None],
        watch: Watch | None = None,
    ) -> None:
        self.switch = switch
        self.runbook = runbook
        self.variables = dict(variables)
        self.yes = yes
        self.dry_run = dry_run
        self.ask = ask
        self.notify = notify
        self.watch: Watch = watch or _Unwatched()

    def check(self, start: int = 0) -> None:
        """Every step's selection names what the inventory has and matches targets, so a
        mistyped input stops the run before its first step (64, nothing changed)."""
        from killswitch.selectors import resolve

        for index, step in enumerate(self.runbook.spec.steps):
            if index < start or step.select is None:
                continue
            try:
                resolve(self.switch.inventory, selector(step.select, self.variables))
            except NothingSelected:
                continue
            except UsageError as exc:
                raise UsageError(f"step {index + 1} ({step.name}): {exc}") from None

    def consent(self, start: int = 0) -> Consent:
        """The questions of the confirm steps and the plans of the change steps from
        ``start`` on: what one confirmation shows. Reads every selected target."""
        questions: list[str] = []
        plans: list[tuple[int, StepSpec, Any]] = []
        skipped: list[tuple[int, StepSpec, str]] = []
        for index, step in enumerate(self.runbook.spec.steps):
            if index < start:
                continue
            if step.kind == "confirm":
                questions.append(str(render(step.message, self.variables)))
            elif step.kind in ("revoke", "restrict", "restore"):
                try:
                    plans.append((index, step, self._preview(step)))
                except NothingSelected as nothing:
                    skipped.append((index, step, str(nothing)))
        return Consent(self.runbook.spec.name, questions, plans, skipped)

    def run(self, run_id: str | None = None, start: int = 0) -> RunResult:
        """Run the steps from ``start``. Unless ``--yes`` or a dry run, asks once first,
        showing every change; a "no" changes and records nothing (UsageError, 64)."""
        spec = self.runbook.spec
        self.check(start)
        if not (self.yes or self.dry_run) and not self.ask(self.consent(start)):
            raise UsageError("not confirmed; nothing was changed")
        if run_id is None and not self.dry_run:
            run_id = (
                "run-"
                + hashlib.sha256(
                    f"{self.runbook.digest}{utcnow()}{self.switch.actor}".encode()
                ).hexdigest()[:12]
            )
            self.switch.store.append_audit(
                self.switch.actor,
                "run.started",
                run_id,
                {
                    "runbook": spec.name,
                    "file": str(self.runbook.path.resolve()),
                    "sha256": self.runbook.digest,
                    "variables": self.variables,
                },
            )
        result = RunResult(run_id, spec.name)
        for index, step in enumerate(spec.steps):
            if index < start:
                continue
            self.watch.started(index, len(spec.steps), step)
            outcome = self._step(index, step)
            self.watch.finished(outcome)
            result.steps.append(outcome)
            if run_id is not None:
                self.switch.store.append_audit(
                    self.switch.actor, "run.step", run_id, outcome.to_json()
                )
            if outcome.status == "awaiting-approval" or (
                outcome.status == "failed" and step.on_failure == "stop"
            ):
                result.stopped_by = outcome
                break
        if run_id is not None:
            self.switch.store.append_audit(
                self.switch.actor,
                "run.finished",
                run_id,
                {"status": result.status, "code": result.code},
            )
        return result

    def _step(self, index: int, step: StepSpec) -> StepOutcome:
        def outcome(
            status: str, code: int = 0, op: str | None = None, detail: str = ""
        ) -> StepOutcome:
            return StepOutcome(index, step.name, step.kind, status, code, op, detail)

        v = self.variables
        try:
            if step.select is not None:
                selector(step.select, v)  # an empty input selects nothing: skip the step
            if step.kind in ("revoke", "restrict", "restore"):
                return self._change(step, outcome)
            if step.kind == "verify":
                assert step.select is not None and step.expect is not None
                wrong = self._mismatches(selector(step.select, v), expected(step.expect, v))
                if wrong and not self.dry_run:
                    return outcome("failed", int(ExitCode.PARTIAL), detail="; ".join(wrong[:10]))
                return outcome("planned" if self.dry_run else "ok", detail=f"{len(wrong)} differ")
            if step.kind == "drift":
                assert step.select is not None
                report = self.switch.drift(selector(step.select, v))
                code = int(report.status.exit_code)
                if code and not self.dry_run:
                    return outcome("failed", code, detail=f"drift check says {report.status}")
                return outcome("planned" if self.dry_run else "ok", detail=report.status)
            if self.dry_run:
                return outcome("planned", detail="not run in a dry run")
            if step.kind == "wait":
                return self._wait(step, outcome)
            if step.kind == "confirm":  # asked once, with every other, before the run
                return outcome("skipped" if self.yes else "ok", detail=_answered(self.yes))
            message = str(render(step.message, v))
            sent = self.notify(message, step.webhook_env or "")
            if sent is None:
                return outcome("skipped", detail="no webhook configured")
            return outcome(
                "ok" if sent else "failed",
                0 if sent else 1,
                detail="sent" if sent else "no webhook, or it refused",
            )
        except NothingSelected as nothing:
            return outcome("skipped", detail=str(nothing))
        except KillswitchError as exc:
            return outcome("failed", int(exc.exit_code), detail=str(exc))

    def _reason(self, step: StepSpec) -> str:
        if step.reason:
            return str(render(step.reason, self.variables))
        return f"runbook {self.runbook.spec.name}: {step.name}"

    def _preview(self, step: StepSpec) -> Any:
        """The plan of a change step, read now (what a dry run and the question show)."""
        assert step.select is not None
        v = self.variables
        return self.switch.preview(
            Action(step.kind),
            selector(step.select, v),
            audience=_names(step.audience, v) if step.audience else (),
            reason=self._reason(step),
        )

    def _change(self, step: StepSpec, outcome: Callable[..., StepOutcome]) -> StepOutcome:
        assert step.select is not None
        v = self.variables
        if self.dry_run:
            from killswitch.engine import plan_status

            plan = self._preview(step)
            status = plan_status(plan)
            code = int(status.exit_code)  # 2 when changes are pending, as `plan` says
            pending = [c.target.id for c in plan.pending]
            shown = ", ".join(pending[:DRY_RUN_SHOWN])
            more = (
                f" and {len(pending) - DRY_RUN_SHOWN} more" if len(pending) > DRY_RUN_SHOWN else ""
            )
            return outcome(
                "planned" if code in (0, int(ExitCode.PENDING)) else "failed",
                code,
                detail=f"{len(pending)} of {len(plan.changes)} targets would change"
                + (f": {shown}{more}" if pending else ""),
            )
        report = self.switch.change(
            Action(step.kind),
            selector(step.select, v),
            audience=_names(step.audience, v) if step.audience else (),
            reason=self._reason(step),
            ticket=str(render(step.ticket, v)) if step.ticket else None,
            confirm=None,  # consent was given once, before the run (or by --yes)
            deadline=self._seconds(step.timeout),
        )
        code = int(report.status.exit_code)
        word = {0: "ok", 5: "awaiting-approval"}.get(code, "failed")
        return outcome(word, code, report.op_id, report.message or report.status)

    def _mismatches(self, select: Selector, want: Access) -> list[str]:
        """Targets that do not hold ``want``. A closed posture is held by anything at
        least as tight (a revoked region passes a check for restricted); open only by
        open."""
        report = self.switch.status(select)
        return [
            f"{row.target.id} is {row.observed or 'unreadable'}"
            for row in report.rows
            if not _holds(row.observed, want)
        ]

    def _seconds(self, text: str | None) -> float | None:
        """A step's duration or timeout, inputs filled in; a bad value is a usage error."""
        if text is None:
            return None
        try:
            return seconds(str(render(text, self.variables)))
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    def _wait(self, step: StepSpec, outcome: Callable[..., StepOutcome]) -> StepOutcome:
        limit = self._seconds(step.timeout) or 600.0
        if step.until is None:
            pause = self._seconds(step.duration) or 0.0
            time.sleep(min(pause, limit))
            return outcome("ok", detail=f"waited {pause:g}s")
        assert step.select is not None
        select, want = selector(step.select, self.variables), expected(step.until, self.variables)
        deadline = time.monotonic() + limit
        pause = self._seconds(step.duration) or 2.0
        while True:
            wrong = self._mismatches(select, want)
            if not wrong:
                return outcome("ok", detail=f"every target is {want}")
            if time.monotonic() + pause > deadline:
                return outcome(
                    "failed",
                    int(ExitCode.PARTIAL),
                    detail=f"still waiting after {step.timeout or '10m'}: {wrong[0]}",
                )
            time.sleep(pause)


def _answered(yes: bool) -> str:
    return "--yes" if yes else "confirmed once, before the run"


def _holds(observed: Access | None, want: Access) -> bool:
    if observed is None:
        return False
    if want.posture is Posture.OPEN:
        return observed == want
    return observed.at_least_as_tight_as(want)


def find_run(events: Sequence[Any], run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``run.started`` payload and the step outcomes of ``run_id`` from the audit log."""
    started = [e for e in events if e.kind == "run.started" and e.op_id == run_id]
    if not started:
        raise UsageError(f"no runbook run {run_id!r} in the audit log")
    steps = [e.payload for e in events if e.kind == "run.step" and e.op_id == run_id]
    return dict(started[0].payload), [dict(s) for s in steps]


def resume_point(steps: Sequence[Mapping[str, Any]]) -> int:
    """The index to continue from: the step that stopped the run runs again; after a run
    that went through, the step after the last."""
    if not steps:
        return 0
    last = steps[-1]
    if last["status"] in ("failed", "awaiting-approval"):
        return int(last["index"])
    return int(last["index"]) + 1
