"""Prometheus text format for node_exporter's textfile collector, written atomically."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from killswitch.domain import TargetReport


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
