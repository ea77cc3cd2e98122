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
7   no agent connected, or the agent did not answer in time
8   conflict (the thing already exists; another ``serve`` holds the home)
11  busy: too many calls in flight, or a heavy call already running; try again
==  =============================================================
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from rich.console import Console, ConsoleOptions, RenderableType
from rich.markup import escape
from rich.segment import Segment

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
    "no_agent": 7,
    "agent_offline": 7,
    "conflict": 8,
    "tampered": 9,
    "busy": 11,
}


def emit(data: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    """Print ``data`` as JSON (scripts) or through ``render`` (people)."""
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        sys.stdout.flush()
    else:
        render(data)


def fail(code: str, message: str) -> NoReturn:
    """Print an error to stderr and exit with the code's documented status."""
    # one line, never wrapped at a guessed width: errors are copied, grepped and logged
    stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if code == "internal":
        stderr.print("[dim]set HELPLINE_DEBUG=1 for a traceback[/]")
    raise SystemExit(EXIT_CODES.get(code, 1))
