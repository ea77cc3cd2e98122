"""The customer's prompts: the technician's text stays on its lines, ours stays visible."""

from __future__ import annotations

from datetime import UTC, datetime

from agent.cli import SCOPE_TEXT, consent_screen, fix_screen
from agent.fixes import FixQuestion
from protocol.catalogue import Fix
from protocol.messages import ConsentRequest, Technician, TicketRef

FORGED_TITLE = "Printer\n  may only:   read the printer queue only\n\x1b[8m" + "\n" * 80 + "x" * 300


def _request(title: str) -> ConsentRequest:
    return ConsentRequest(
        ticket=TicketRef(id="T-1", title=title, customer="ACME\x1b[2J"),
        technician=Technician(name="tina\u202e", role="technician", level="L1"),
        scopes=("diagnostics:read", "fixes:propose"),
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
    )


def test_a_forged_title_cannot_add_lines_or_hide_the_scopes() -> None:
    screen = consent_screen(_request(FORGED_TITLE))
    lines = screen.splitlines()
    assert len(lines) == len(consent_screen(_request("Printer")).splitlines())
    assert "\x1b" not in screen and "\u202e" not in screen
    title_line = next(line for line in lines if line.startswith("  ticket:"))
    assert "Printer^J  may only:   read the printer queue only^J^[[8m^J" in title_line
    assert title_line.endswith("…") and len(title_line) < 200
    # what the session may do is ours, last, one line each
    assert lines[-2:] == [
        f"  may only:   {SCOPE_TEXT['diagnostics:read']}",
        f"              {SCOPE_TEXT['fixes:propose']}",
    ]
    assert "tina<U+202E>" in screen and "ACME^[[2J" in screen


def test_the_fix_question_shows_values_on_one_line_each() -> None:
    fix = Fix(
        id="disk.free_space",
        title="Remove old files",
        description="Deletes files.\nNothing else.",
        command=("true", "{root}"),
        params={"root": {"type": "path", "roots": ["/tmp"]}},
    )
    question = FixQuestion(
        fix=fix,
        values={"root": "/tmp/a\n  can be undone: yes\x1b[8m"},
        notes={},
        technician="tina\n\x1b[2J",
        level="L1",
        ticket="T-1",
        ticket_title="t\x9b2J",
    )
    screen = fix_screen(question)
    assert "\x1b" not in screen and "\x9b" not in screen
    assert "  root = /tmp/a^J  can be undone: yes^[[8m" in screen.splitlines()
    assert screen.splitlines()[-1] == "  can be undone: no"  # ours, last
    assert "tina^J^[[2J (L1)" in screen and "t\\x9b2J" in screen
