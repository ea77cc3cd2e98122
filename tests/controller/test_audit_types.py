"""Every audit event type the controller writes is in ``EVENT_TYPES``: ``audit log --type``
refuses what is not there, so a type missing from the list could not be asked for."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller import audit
from controller.agents import result_events
from controller.tickets.desk import AUDITED
from protocol.messages import Result

SOURCE = Path(audit.__file__).parent
#: audit("x.y", …), also across a line break, and the webhook helper's type argument
_WRITTEN = re.compile(r'(?:audit\(\s*|_audit_webhook\([^()]*?,\s*)"([a-z]+\.[a-z_]+)"')


def test_every_type_written_is_known() -> None:
    written = {
        match
        for path in SOURCE.rglob("*.py")
        for match in _WRITTEN.findall(path.read_text(encoding="utf-8"))
    }
    assert len(written) > 20  # the scan still finds the calls
    assert written <= audit.EVENT_TYPES, written - audit.EVENT_TYPES
    assert AUDITED | {"ticket.state_changed"} <= audit.EVENT_TYPES
    now = datetime.now(UTC)
    for data in ({"status": "refused", "code": "declined"}, {"status": "refused"}, {}):
        for kind in ("fix", "diagnostics"):
            for type_, _ in result_events(kind, Result(ok=True, data=data, produced_at=now)):
                assert type_ in audit.EVENT_TYPES


def test_patterns_name_known_types_or_say_which_there_are() -> None:
    known = audit.EVENT_TYPES
    assert audit.match_types("consent.*", known) == [
        "consent.asked",
        "consent.given",
        "consent.refused",
        "consent.revoked",
    ]
    assert audit.match_types("code.used, auth.ok", known) == ["auth.ok", "code.used"]
    with pytest.raises(
        ValueError, match=r"the types are: agent\.auth_failed, agent\.disconnected, "
    ):
        audit.match_types("consent.*,nope", known)
    with pytest.raises(ValueError, match="no audit event type matches ''"):
        audit.match_types("", known)
