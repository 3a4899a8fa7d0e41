"""Progress off a terminal: a line per target, and never a wait on whoever reads them."""

from __future__ import annotations

import threading

from killswitch.cli.progress import Lines
from killswitch.domain import Target
from killswitch.progress import Phase

TARGETS = [Target("aws", "aws-prod", f"region-{i}", "ssm-flag", "mythos-5") for i in range(2000)]


class StuckReader:
    """stderr of a process whose parent reads it only later (a full pipe)."""

    def __init__(self) -> None:
        self.reading = threading.Event()
        self.text = ""

    def write(self, text: str) -> int:
        self.reading.wait()
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


def test_a_revoke_never_waits_for_a_stuck_reader_of_its_progress() -> None:
    stream = StuckReader()
    lines = Lines(stream, as_json=False)  # type: ignore[arg-type]

    def revoke() -> None:
        with_phases = [Phase.APPLY, Phase.VERIFY]
        for phase in with_phases:
            lines.start(phase, len(TARGETS))
        for target in TARGETS:
            lines.advance(Phase.APPLY, target, "written")
            lines.advance(Phase.VERIFY, target, "verified")
        for phase in with_phases:
            lines.end(phase)
        lines.close(wait=0)  # the command ends; nobody has read a line yet

    op = threading.Thread(target=revoke)
    op.start()
    op.join(60)  # a generous bound that only a broken display reaches
    assert not op.is_alive(), "the op waited for the reader of its progress"
    assert stream.text == ""

    stream.reading.set()  # the reader comes back: every line is there, in order
    assert lines._writer is not None
    lines._writer.join(60)
    written = stream.text.splitlines()
    assert written[0] == "apply: 2000 targets"
    assert written[1:] == [f"[{n}/2000] {t.id} verified" for n, t in enumerate(TARGETS, 1)]
