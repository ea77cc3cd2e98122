"""docs/protocol.md lists every API call as the registry has it, and every error code."""

from __future__ import annotations

import re
from pathlib import Path

from controller.api import ROUTES, doc
from controller.cli.output import EXIT_CODES
from protocol.calls import CALLS
from protocol.errors import ErrorCode

PROTOCOL_MD = Path(__file__).parents[2] / "docs" / "protocol.md"
REGENERATE = "run `python -m controller.api.doc --write docs/protocol.md`"


def _generated_part(text: str) -> str:
    start, end = text.index(doc.BEGIN), text.index(doc.END)
    return text[start : end + len(doc.END)]


def test_every_registered_call_is_listed() -> None:
    listed = set(re.findall(r"^\| `([a-z_.]+)` \|", _generated_part(PROTOCOL_MD.read_text()), re.M))
    missing = (set(ROUTES.routes) | set(CALLS)) - listed
    assert not missing, f"docs/protocol.md does not list {sorted(missing)}: {REGENERATE}"


def test_the_calls_table_is_what_the_registry_generates() -> None:
    assert _generated_part(PROTOCOL_MD.read_text()) == doc.markdown(), (
        f"docs/protocol.md says something else than the registry: {REGENERATE}"
    )


def test_a_call_still_on_a_legacy_handler_is_listed_as_such() -> None:
    legacy = [route.method for route in ROUTES.routes.values() if route.call is None]
    table = doc.markdown()
    for method in legacy:
        assert f"| `{method}` | " in table and doc.LEGACY in table
    # and every call with a model shows its result type
    for method, route in ROUTES.routes.items():
        if route.call is not None:
            row = next(line for line in table.splitlines() if line.startswith(f"| `{method}` |"))
            assert doc.LEGACY not in row and "`" in row.split("|")[4], row


def test_every_error_code_is_described_with_its_exit_status() -> None:
    text = PROTOCOL_MD.read_text()
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (\d+) \|", text, re.M))
    for code in ErrorCode:
        assert code.value in rows, f"docs/protocol.md does not describe the error code {code}"
        assert int(rows[code.value]) == EXIT_CODES.get(code.value, 1), code


def test_the_generated_part_replaces_only_itself() -> None:
    document = f"before\n{doc.BEGIN}\nold\n{doc.END}\nafter\n"
    assert doc.replace(document, "NEW") == "before\nNEW\nafter\n"
