"""What the CLI prints for people carries no control character from the other side."""

from __future__ import annotations

import io
import logging
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from controller.cli.output import SafeConsole
from controller.cli.render import render_diagnostics
from protocol.text import SafeLogFormatter

CLIPBOARD = "\x1b]52;c;ZXZpbA==\x07"
CLEAR = "\x1b[2J"
HIDE = "\x1b[8m"


def _hostile_snapshot() -> dict[str, Any]:
    proc = {
        "pid": 7,
        "name": f"evil{CLEAR}",
        "username": f"root{HIDE}",
        "cmdline": f"/bin/x --y\n{CLIPBOARD}",
        "cpu_percent": 1.0,
        "rss": 10,
    }
    return {
        "system": {"hostname": f"pc{CLIPBOARD}{CLEAR}\u202eexe.txt", "os": "Linux\x9b2J"},
        "processes": {"count": 1, "top_cpu": [proc], "top_memory": [proc]},
        "logs": {"lines": [{"at": "2026", "source": f"kern{HIDE}", "message": f"a\nb{CLEAR}"}]},
        "errors": {"disks": f"[bold red]boom[/]{CLEAR}"},
        "services": {
            "available": True,
            "failed_count": 1,
            "failed": [{"unit": f"u{CLEAR}.service", "description": "[/oops]"}],
        },
    }


def _render(console_type: type[Console], *, colour: bool) -> str:
    out = io.StringIO()
    console = console_type(
        file=out, width=200, force_terminal=colour, color_system="truecolor" if colour else None
    )
    render_diagnostics(console, _hostile_snapshot(), [{"severity": "warning", "title": CLEAR}])
    return out.getvalue()


def test_render_makes_remote_controls_visible_before_layout() -> None:
    # a plain rich console: render.py alone must already neutralise the snapshot
    text = _render(Console, colour=False)
    assert "\x1b" not in text and "\x9b" not in text and "\u202e" not in text
    assert "pc^[]52;c;ZXZpbA==^G^[[2J<U+202E>exe.txt" in text
    assert "evil^[[2J" in text
    assert "[bold red]boom[/]" in text  # shown as typed, not taken as markup
    assert "[/oops]" in text


def test_safe_console_keeps_rich_styles_and_drops_remote_escapes() -> None:
    out = io.StringIO()
    console = SafeConsole(file=out, width=120, force_terminal=True, color_system="truecolor")
    table = Table("name")
    table.add_row(Text(f"x{CLIPBOARD}", style="bold"))
    console.print(table)
    console.print(f"[red]host[/] y{CLEAR}\x9b31m", highlight=False)
    console.print(Text(f"z{HIDE}"))
    written = out.getvalue()
    assert "\x1b[1m" in written  # rich's own bold still works
    assert "\x1b]" not in written and "\x1b[2J" not in written and "\x1b[8m" not in written
    assert "\x9b" not in written
    assert "^[[2J" in written and "\\x9b31m" in written and "z^[[8m" in written


def test_the_log_formatter_keeps_each_record_on_its_own_line() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(SafeLogFormatter("%(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("test.safe_log")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("unknown type %r from %s", "x\nCRITICAL helpline.audit: forged", "a\x1b[2J")
        try:
            raise ValueError("bad\nCRITICAL helpline.audit: forged too")
        except ValueError:
            log.exception("call %s failed", "m\r\n")
    finally:
        log.removeHandler(handler)
    lines = out.getvalue().splitlines()
    records = [line for line in lines if not line.startswith("  ")]
    assert records == [
        "WARNING test.safe_log: unknown type 'x\\nCRITICAL helpline.audit: forged' from a^[[2J",
        "ERROR test.safe_log: call m^M^J failed",
    ]
    assert "  ValueError: bad" in lines  # the traceback stays readable, indented
    assert "  CRITICAL helpline.audit: forged too" in lines
    assert "\x1b" not in out.getvalue()
