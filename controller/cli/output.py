"""One output sink: data to stdout (tables for people, JSON for scripts), messages to stderr.

Everything printed for people goes through ``SafeConsole``, which shows every control
character of the text it prints (``protocol.text.visible``): host names, process names,
fix output, titles and comments come from the other side and must not drive the
terminal, and a call site cannot forget it. Rich's own styling is applied after, so it
still works; rich *markup* in remote text is a separate matter: call sites pass remote
text as ``Text`` or through ``shown`` (one line, markup escaped). JSON (``--json``) stays
exact data: ``json.dumps`` escapes every control character itself.

Exit codes (also in the README):

==  =============================================================
0   success
1   unexpected internal error
2   bad usage or a request the controller refused as malformed
3   not found (ticket, session, user)
4   authentication or permission refused
5   controller unreachable, or its certificate does not match the pin
6   ``fix``: the customer declined (or did not answer)
7   no agent connected, or the agent did not answer in time
8   conflict (the thing already exists; another ``serve`` holds the home)
9   the audit log was tampered with, or signing stopped
10  ``fix``: the fix ran and failed or timed out
11  busy: too many calls in flight, or a heavy call already running; try again
==  =============================================================
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NoReturn

from pydantic_core import to_jsonable_python
from rich.console import Console, ConsoleOptions, RenderableType
from rich.markup import escape
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from protocol.text import one_line, visible


class SafeConsole(Console):
    """A rich console that never writes a control character it was given as text."""

    def render(
        self, renderable: RenderableType, options: ConsoleOptions | None = None
    ) -> Iterable[Segment]:
        """Rich's rendering, with the text of every segment made visible.

        Segments that carry ``control`` are rich's own cursor moves (a live status line)
        and pass; nested renderables come back through here, and ``visible`` is
        idempotent, so text seen twice stays the same.
        """
        for segment in super().render(renderable, options):
            if segment.control or not segment.text:
                yield segment
            else:
                shown = visible(segment.text)
                yield segment if shown is segment.text else Segment(shown, segment.style)


def shown(text: object, limit: int | None = None) -> str:
    """Remote text for a markup string: one line, controls visible, markup escaped."""
    return escape(one_line(str(text), limit))


def when(moment: datetime | None) -> str:
    """A time in a table: to the minute, or ``-``."""
    return f"{moment:%Y-%m-%d %H:%M}" if moment is not None else "-"


stdout = SafeConsole()
stderr = SafeConsole(stderr=True)

EXIT_CODES: dict[str, int] = {
    "bad_request": 2,
    "not_configured": 2,
    "not_found": 3,
    "auth_failed": 4,
    "forbidden": 4,
    "unreachable": 5,
    "pin_mismatch": 5,
    "protocol": 5,
    "declined": 6,
    "no_agent": 7,
    "agent_offline": 7,
    "conflict": 8,
    "tampered": 9,
    "fix_failed": 10,
    "busy": 11,
    # outcomes rather than refused calls: the call itself was answered
    "fix_refused": 4,
}


def emit(data: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    """Print ``data`` as JSON (scripts) or through ``render`` (people)."""
    if as_json:
        # models (and lists of them) as they went on the wire: the same JSON a script saw
        # before the calls had models
        plain = to_jsonable_python(data, by_alias=True)
        sys.stdout.write(json.dumps(plain, indent=2, default=str) + "\n")
        sys.stdout.flush()
    else:
        render(data)


def exit_with(code: str) -> NoReturn:
    """Exit with the documented status of ``code``; what to say was printed already."""
    raise SystemExit(EXIT_CODES.get(code, 1))


def live_output(data: str, stream: str, *, raw: bool = False) -> None:
    """A chunk of output from the customer's machine, as it arrives (a running fix).

    It may show, never command: control characters are made visible unless ``raw``. A
    chunk goes to our stdout or stderr as it was on the agent, unbuffered, outside rich
    (which would wrap, strip or re-style it)."""
    sink = sys.stdout if stream == "stdout" else sys.stderr
    sink.write(data if raw else visible(data))
    sink.flush()


def fail(code: str, message: str) -> NoReturn:
    """Print an error to stderr and exit with the code's documented status."""
    # one line, never wrapped at a guessed width: errors are copied, grepped and logged
    stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if code == "internal":
        stderr.print("[dim]set HELPLINE_DEBUG=1 for a traceback[/]")
    raise SystemExit(EXIT_CODES.get(code, 1))


# -- tables that fit the terminal ------------------------------------------------------------

#: what each column costs beyond its content in rich's default box: padding and a rule
COLUMN_OVERHEAD = 3


@dataclass(frozen=True)
class Column:
    """A table column: ``id`` cells (identifiers, numbers, states) are never cut or
    wrapped; ``text`` cells wrap. Columns with a higher ``drop`` are left out first when
    the terminal is too narrow for everything (0: always shown)."""

    header: str
    kind: Literal["id", "text"] = "id"
    drop: int = 0
    justify: Literal["left", "right"] = "left"
    #: a wrapping column's share of the width left over
    ratio: int = 1
    #: the narrowest a wrapping column gets before a less important column is left out
    min_width: int = 20


def fitted_table(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None = None
) -> tuple[Table, list[str]]:
    """A table of ``rows`` (rich markup) that fits ``width`` (the terminal's), and the
    headers of the columns it left out to get there."""
    width = width or stdout.width
    cells = [[Text.from_markup(cell) for cell in row] for row in rows]

    widest = [
        max([len(column.header), *(row[i].cell_len for row in cells)])
        for i, column in enumerate(columns)
    ]

    def need(i: int) -> int:
        return widest[i] if columns[i].kind == "id" else min(widest[i], columns[i].min_width)

    shown = list(range(len(columns)))
    dropped: list[str] = []
    for i in sorted((i for i, c in enumerate(columns) if c.drop), key=lambda i: -columns[i].drop):
        if sum(need(j) + COLUMN_OVERHEAD for j in shown) + 1 <= width:
            break
        shown.remove(i)
        dropped.append(columns[i].header)
    texts = [i for i in shown if columns[i].kind == "text"]
    left = width - 1 - sum(COLUMN_OVERHEAD + (0 if i in texts else widest[i]) for i in shown)
    text_widths = _share(left, {i: (need(i), widest[i], columns[i].ratio) for i in texts})
    table = Table()
    for i in shown:
        column = columns[i]
        if column.kind == "id":
            table.add_column(column.header, no_wrap=True, justify=column.justify, min_width=need(i))
        else:
            table.add_column(
                column.header, overflow="fold", justify=column.justify, width=text_widths[i]
            )
    for row in cells:
        table.add_row(*(row[i] for i in shown))
    return table, dropped


def _share(room: int, texts: dict[int, tuple[int, int, int]]) -> dict[int, int]:
    """Widths for the wrapping columns: each its (minimum, widest, ratio) — at least the
    minimum, at most what its widest cell needs, the rest of ``room`` shared by ratio."""
    widths = {i: low for i, (low, _high, _ratio) in texts.items()}
    open_ = {i for i, (low, high, _ratio) in texts.items() if high > low}
    spare = room - sum(widths.values())
    while spare > 0 and open_:
        total = sum(texts[i][2] for i in open_)
        given = 0
        for i in sorted(open_):
            share = max(1, spare * texts[i][2] // total)
            grant = min(share, texts[i][1] - widths[i], spare - given)
            widths[i] += grant
            given += grant
            if widths[i] >= texts[i][1]:
                open_.discard(i)
        if given == 0:
            break
        spare -= given
    return widths


def print_table(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], console: Console | None = None
) -> None:
    """Print a :func:`fitted_table`, and say which columns it left out."""
    console = console or stdout
    table, dropped = fitted_table(columns, rows, console.width)
    console.print(table)
    if dropped:
        console.print(
            f"[dim]left out at {console.width} columns: {', '.join(dropped)} "
            "(a wider terminal or --json shows them)[/]",
            highlight=False,
        )
