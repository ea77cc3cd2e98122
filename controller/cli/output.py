"""One output sink: data to stdout (tables for people, JSON for scripts), messages to stderr.

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
from collections.abc import Callable
from typing import Any, NoReturn

from rich.console import Console

stdout = Console()
stderr = Console(stderr=True)

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
    stderr.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    if code == "internal":
        stderr.print("[dim]set HELPLINE_DEBUG=1 for a traceback[/]")
    raise SystemExit(EXIT_CODES.get(code, 1))
