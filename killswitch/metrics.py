"""Prometheus text format for node_exporter's textfile collector, written atomically."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from killswitch.domain import Action, Operation, OpStatus, TargetReport
from killswitch.timing import parse_stamp


def _labels(**labels: str) -> str:
    escaped = (
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels.items()
    )
    return "{" + ",".join(escaped) + "}"


def drift_metrics(rows: Sequence[TargetReport], *, finished_at: float, duration: float) -> str:
    """Drifted, unmanaged and unreadable targets by model, provider and region, plus the
    time of this (successful) check and how long it took."""
    lines = []
    for result, name, text in (
        (
            "drift",
            "killswitch_drift_targets",
            "Targets whose observed posture differs from the ledger.",
        ),
        (
            "unmanaged",
            "killswitch_unmanaged_targets",
            "Targets no op has set while the model is closed elsewhere.",
        ),
        ("unreadable", "killswitch_unreadable_targets", "Targets whose posture could not be read."),
    ):
        counts = Counter(
            (r.target.model, r.target.provider, r.target.region) for r in rows if r.result == result
        )
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
        lines += [
            f"{name}{_labels(model=m, provider=p, region=g)} {n}"
            for (m, p, g), n in sorted(counts.items())
        ]
    lines += [
        "# HELP killswitch_drift_targets_checked Targets read by the last check.",
        "# TYPE killswitch_drift_targets_checked gauge",
        f"killswitch_drift_targets_checked {len(rows)}",
        "# HELP killswitch_drift_last_success_timestamp_seconds When the last check finished.",
        "# TYPE killswitch_drift_last_success_timestamp_seconds gauge",
        f"killswitch_drift_last_success_timestamp_seconds {finished_at:.3f}",
        "# HELP killswitch_drift_check_duration_seconds How long the last check took.",
        "# TYPE killswitch_drift_check_duration_seconds gauge",
        f"killswitch_drift_check_duration_seconds {duration:.3f}",
    ]
    return "\n".join(lines) + "\n"


def effect_metrics(rows: Sequence[TargetReport]) -> str:
    """What the serving path says (drift --effect): per target, 1 when its probes agree
    with the ledger's posture, 0 when not, and the seconds the probes took to agree."""
    from killswitch.probes import EFFECTIVE, effect_seconds

    lines = [
        "# HELP killswitch_effective Whether the probes agree with the ledger's posture (1/0).",
        "# TYPE killswitch_effective gauge",
    ]
    seconds = []
    for r in sorted(rows, key=lambda r: r.target.id):
        labels = _labels(model=r.target.model, provider=r.target.provider, region=r.target.region,
                         target=r.target.id)  # fmt: skip
        lines.append(f"killswitch_effective{labels} {1 if r.result == EFFECTIVE else 0}")
        took = effect_seconds(r.result, r.error)
        if took is not None:
            seconds.append(f"killswitch_time_to_effect_seconds{labels} {took:.3f}")
    lines += [
        "# HELP killswitch_time_to_effect_seconds Seconds until the probes agreed.",
        "# TYPE killswitch_time_to_effect_seconds gauge",
        *seconds,
    ]
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Write beside the target and rename over it: the collector never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# An incident's SLO: a kill verified within seconds, a minute, minutes, half an hour.
TIME_TO_KILL_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800)
OPS_READ = 100_000  # the newest ops the histograms count (far more than a store holds)
UNFINISHED = (OpStatus.RUNNING, OpStatus.PARTIAL, OpStatus.INTERRUPTED)
HISTOGRAMS = (  # name, help, the OpTiming field it observes
    (
        "killswitch_time_to_kill_seconds",
        "Seconds from the command to the last target read back as set, per complete op.",
        "verified_after",
    ),
    (
        "killswitch_time_to_effective_kill_seconds",
        "Seconds from the command to the last probe agreeing, per complete op.",
        "effective_after",
    ),
)


def time_to_kill_metrics(ops: Sequence[Operation]) -> str:
    """Time to kill from the ops in the state store (killswitch/timing.py), by action:

    - ``killswitch_time_to_kill_seconds``: a histogram of every complete op's seconds from
      the command to its last target read back as set, and
      ``killswitch_time_to_effective_kill_seconds`` to its last probe agreeing (ops with
      probes). Only complete ops count: their figures never change again, so the
      counts only grow, as a Prometheus histogram's must;
    - ``killswitch_unfinished_ops``: ops running, partial or interrupted, which no
      histogram holds yet;
    - ``killswitch_last_op_*``: the newest timed op's figures and phases."""
    lines: list[str] = []
    done = [op for op in ops if op.status is OpStatus.COMPLETE and op.timing is not None]
    for name, text, field in HISTOGRAMS:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} histogram"]
        for action in Action:
            observed = [
                seconds
                for op in done
                if op.action is action and (seconds := getattr(op.timing, field)) is not None
            ]
            lines += _histogram(name, observed, action=action.value)
    counts = Counter((op.action.value, op.status.value) for op in ops if op.status in UNFINISHED)
    lines += [
        "# HELP killswitch_unfinished_ops Ops running, partial or interrupted "
        "(`ops resume` finishes them): not in the time-to-kill histograms yet.",
        "# TYPE killswitch_unfinished_ops gauge",
    ]
    lines += [
        f"killswitch_unfinished_ops{_labels(action=a.value, status=s.value)} "
        f"{counts[(a.value, s.value)]}"
        for a in Action
        for s in UNFINISHED
    ]
    return "\n".join(lines + _last_op(ops)) + "\n"


def _histogram(name: str, observed: Sequence[float], **labels: str) -> list[str]:
    lines = [
        f"{name}_bucket{_labels(**labels, le=str(float(bound)))} "
        f"{sum(1 for s in observed if s <= bound)}"
        for bound in TIME_TO_KILL_BUCKETS
    ]
    return [
        *lines,
        f"{name}_bucket{_labels(**labels, le='+Inf')} {len(observed)}",
        f"{name}_sum{_labels(**labels)} {sum(observed):.3f}",
        f"{name}_count{_labels(**labels)} {len(observed)}",
    ]


def _last_op(ops: Sequence[Operation]) -> list[str]:
    """Per action, the newest op with a timing: how long it took, and where it went."""
    newest: dict[Action, Operation] = {}
    for op in ops:
        if op.timing is None:
            continue
        seen = newest.get(op.action)
        if seen is None or (seen.timing and seen.timing.started_at < op.timing.started_at):
            newest[op.action] = op
    gauges = {
        "killswitch_last_op_started_timestamp_seconds": "When the newest timed op's command began.",
        "killswitch_last_op_time_to_kill_seconds": "The newest timed op's time to kill "
        "(absent while it is not verified everywhere).",
        "killswitch_last_op_time_to_effective_kill_seconds": "The newest timed op's time to "
        "effect at the probes (absent without probes, or while one disagrees).",
        "killswitch_last_op_phase_seconds": "Where the newest timed op's last run spent its time.",
    }
    samples: dict[str, list[str]] = {name: [] for name in gauges}
    for action, op in sorted(newest.items()):
        timing, label = op.timing, _labels(action=action.value)
        assert timing is not None
        started = parse_stamp(timing.started_at)
        samples["killswitch_last_op_started_timestamp_seconds"].append(
            f"killswitch_last_op_started_timestamp_seconds{label} {started.timestamp():.3f}"
        )
        for name, value in (
            ("killswitch_last_op_time_to_kill_seconds", timing.verified_after),
            ("killswitch_last_op_time_to_effective_kill_seconds", timing.effective_after),
        ):
            if value is not None:
                samples[name].append(f"{name}{label} {value:.3f}")
        samples["killswitch_last_op_phase_seconds"] += [
            f"killswitch_last_op_phase_seconds{_labels(action=action.value, phase=p)} {s:.3f}"
            for p, s in timing.phases
        ]
    lines: list[str] = []
    for name, text in gauges.items():
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge", *samples[name]]
    return lines
