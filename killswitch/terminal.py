"""What fits the terminal: its width, a console that honours NO_COLOR, and tables that
fit. The words that carry meaning (postures, results, op
ids, names) are never cut: a column wraps only where its text allows (a target id
after a ``/``, a posture after ``(`` or ``,``, a timestamp after ``T``), and only free
text (a reason, an audit event's detail) may fold inside a word. A table may offer a
narrower layout of the same facts, used when the wide one does not fit.

Off a terminal a row is one line, however long, so grep and awk read it whole.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

GAP = 2  # blank columns between two columns
FREE_TEXT_LEAST = 12  # free text is never squeezed narrower than this
FREE_TEXT_COMFORT = 32  # free text narrows to this before anything else wraps
LAST_STEP = 1_000  # fit(): free text narrows below its comfort only after all else
DEFAULT_COLUMNS = 80  # a terminal that does not say how wide it is
UNBOUNDED = 100_000  # off a terminal: nothing wraps


def room(stream: IO[str]) -> int | None:
    """How many columns the terminal behind ``stream`` has (``$COLUMNS`` first, as
    shutil and rich read it); None off a terminal."""
    if not stream.isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        return os.get_terminal_size(stream.fileno()).columns or DEFAULT_COLUMNS
    except (OSError, ValueError):
        return DEFAULT_COLUMNS


def use_color(stream: IO[str]) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ


def console_for(stream: IO[str], width: int | None = None) -> Any:
    """A rich console on ``stream``: as wide as its terminal (or ``width``); off a
    terminal, or with NO_COLOR, no escape codes at all."""
    from rich.console import Console

    return Console(
        file=stream,
        no_color=not use_color(stream),
        highlight=False,
        width=width or room(stream) or UNBOUNDED,
        force_terminal=use_color(stream),
        soft_wrap=room(stream) is None,
    )


@dataclass(frozen=True)
class Column:
    header: str
    breaks: str = ""  # a line of the column may end after any of these characters
    free: bool = False  # free text: wraps at spaces, folds a word longer than the column
    give: int = 1  # which of the columns that wrap at breaks shrink first (lower first)
    least: int = FREE_TEXT_LEAST  # free text: the narrowest worth this layout
    style: str = ""  # the style of every cell of the column (a cell may set its own)

    @property
    def wraps(self) -> bool:
        return self.free or bool(self.breaks)


Cell = str | tuple[str, str]
"""A cell's text, or (text, style). Text may hold line breaks: stacked facts."""


@dataclass(frozen=True)
class Layout:
    columns: Sequence[Column]
    rows: Sequence[Sequence[Cell]]


def text_of(cell: Cell) -> str:
    return cell if isinstance(cell, str) else cell[0]


def pieces(text: str, breaks: str) -> list[str]:
    """``text`` cut after each of ``breaks`` (and at line breaks): what may not be cut."""
    if not breaks:
        return text.split("\n")
    chars = re.escape(breaks)
    piece = re.compile(f"[^{chars}]*[{chars}]?")
    return [p for line in text.split("\n") for p in piece.findall(line) if p]


def natural(column: Column, texts: Sequence[str]) -> int:
    """The column's width when nothing wraps."""
    lines = [column.header, *(line for t in texts for line in t.split("\n"))]
    return max(_width(line) for line in lines)


def least(column: Column, texts: Sequence[str]) -> int:
    """The narrowest the column may get without cutting what it must not cut."""
    full = natural(column, texts)
    if column.free:
        return min(full, max(column.least, _width(column.header)))
    if not column.breaks:
        return full
    words = [column.header, *(p.rstrip() for t in texts for p in pieces(t, column.breaks))]
    return max(_width(w) for w in words)


def fit(layout: Layout, room: int) -> list[int] | None:
    """Column widths within ``room``, or None when not even the narrowest fit. Free text
    narrows first, to a comfortable width; then the columns that wrap at breaks, lowest
    ``give`` first, each down to its least; then free text down to its least. Within a
    step the widest column gives first; columns that do not wrap never give."""
    texts = [[text_of(row[i]) for row in layout.rows] for i in range(len(layout.columns))]
    widths = [natural(c, t) for c, t in zip(layout.columns, texts, strict=True)]
    floors = [least(c, t) for c, t in zip(layout.columns, texts, strict=True)]
    steps: dict[int, dict[int, int]] = {}  # step → column → how narrow in that step
    for i, column in enumerate(layout.columns):
        if column.free:
            steps.setdefault(-1, {})[i] = max(floors[i], min(widths[i], FREE_TEXT_COMFORT))
            steps.setdefault(LAST_STEP, {})[i] = floors[i]
        elif column.breaks:
            steps.setdefault(column.give, {})[i] = floors[i]
    excess = sum(widths) + GAP * (len(widths) - 1) - room
    for step in sorted(steps):
        narrowest = steps[step]
        while excess > 0:
            able = [i for i in narrowest if widths[i] > narrowest[i]]
            if not able:
                break
            widest = max(able, key=widths.__getitem__)
            widths[widest] -= 1
            excess -= 1
    return widths if excess <= 0 else None


def tightened(layout: Layout, widths: list[int], room: int) -> list[int]:
    """``widths`` with what the wrapped columns do not use (their lines end at breaks,
    short of the width) handed to the free text, up to its natural width."""
    texts = [[text_of(row[i]) for row in layout.rows] for i in range(len(layout.columns))]
    widths = list(widths)
    for i, column in enumerate(layout.columns):
        if column.breaks and not column.free:
            used = [wrapped(t, widths[i], column.breaks) for t in texts[i]]
            widths[i] = natural(column, used)
    spare = room - (sum(widths) + GAP * (len(widths) - 1))
    for i, column in enumerate(layout.columns):
        if column.free and spare > 0:
            more = max(0, min(spare, natural(column, texts[i]) - widths[i]))
            widths[i] += more
            spare -= more
    return widths


def wrapped(text: str, width: int, breaks: str) -> str:
    """``text`` broken into lines of at most ``width`` after its break characters."""
    lines: list[str] = []
    for line in text.split("\n"):
        current = ""
        for piece in pieces(line, breaks):
            if current and _width(current + piece.rstrip()) > width:
                lines.append(current.rstrip())
                current = ""
            current += piece
        lines.append(current.rstrip())
    return "\n".join(lines)


def draw(
    stream: IO[str],
    layouts: Sequence[Layout],
    *,
    room: int | None,
    title: str | None = None,
) -> None:
    """Print the first of ``layouts`` that fits ``room`` columns (None: off a terminal,
    the first at its natural width). When none fits, the last at its narrowest: wider
    than the terminal, which then wraps its lines, but nothing is cut. Every cell's
    control characters are shown, not obeyed (a row may come from an edited store)."""
    from rich.table import Table
    from rich.text import Text

    layouts = [_harmless(layout) for layout in layouts]
    chosen, widths = layouts[0], None
    if room is not None:
        for layout in layouts:
            chosen, widths = layout, fit(layout, room)
            if widths is not None:
                break
        if widths is None:  # nothing fits: the narrowest layout, as narrow as it goes
            texts = [[text_of(r[i]) for r in chosen.rows] for i in range(len(chosen.columns))]
            widths = [least(c, t) for c, t in zip(chosen.columns, texts, strict=True)]
        widths = tightened(chosen, widths, room)
    if widths is None:
        texts = [[text_of(r[i]) for r in chosen.rows] for i in range(len(chosen.columns))]
        widths = [natural(c, t) for c, t in zip(chosen.columns, texts, strict=True)]
    table = Table(
        box=None,
        padding=(0, GAP // 2),
        pad_edge=False,
        show_edge=False,
        header_style="bold",
        title=title,
        title_justify="left",
        title_style="",
    )
    for column, width in zip(chosen.columns, widths, strict=True):
        table.add_column(
            column.header, width=width, no_wrap=not column.free, overflow="fold", style=column.style
        )
    for row in chosen.rows:
        cells = []
        for column, width, cell in zip(chosen.columns, widths, row, strict=True):
            text, style = (cell, "") if isinstance(cell, str) else cell
            if column.breaks and not column.free:
                text = wrapped(text, width, column.breaks)
            cells.append(Text(text, style=style))
        table.add_row(*cells)
    total = sum(widths) + GAP * (len(widths) - 1)
    # Never narrower than the table: rich would cut the columns to make it fit.
    console_for(stream, width=max(total, room or 0, len(title or ""))).print(table)


def _harmless(layout: Layout) -> Layout:
    from killswitch.text import printable

    def cell(value: Cell) -> Cell:
        text, style = (value, None) if isinstance(value, str) else value
        shown = "\n".join(printable(line) for line in text.split("\n"))
        return shown if style is None else (shown, style)

    return Layout(layout.columns, [[cell(c) for c in row] for row in layout.rows])


def _width(text: str) -> int:
    from rich.cells import cell_len

    return cell_len(text)
