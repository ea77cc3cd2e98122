"""The audit calls' models: ``since`` checked in validation, export pages that keep their
signatures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from controller import auditchain
from protocol.calls import explain
from protocol.calls.audit import AuditExport, AuditList, ExportHeader, SignedCheckpoint
from protocol.calls.base import since_moment

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("30m", NOW - timedelta(minutes=30)),
        ("1d12h", NOW - timedelta(hours=36)),
        ("2026-02-01T08:00:00+01:00", datetime(2026, 2, 1, 7, 0, tzinfo=UTC)),
        ("2026-02-01", datetime(2026, 2, 1, tzinfo=UTC)),  # no offset: UTC
        ("20260201", datetime(2026, 2, 1, tzinfo=UTC)),  # a basic-format date, not seconds
    ],
)
def test_since_is_an_age_or_a_time(text: str, moment: datetime) -> None:
    call = AuditList.model_validate({"since": text})
    assert call.since is not None and since_moment(call.since, NOW) == moment
    # an age stays an age on the wire: the controller's clock measures it
    again = AuditList.model_validate(call.params())
    assert again.since is not None and since_moment(again.since, NOW) == moment


@pytest.mark.parametrize("value", [5, "yesterday", "0s", "9" * 30 + "w", "", True])
def test_a_bad_since_is_refused_naming_it(value: object) -> None:
    if value == "":  # an empty option means "not given"
        assert AuditList.model_validate({"since": value}).since is None
        return
    with pytest.raises(ValidationError) as info:
        AuditList.model_validate({"since": value})
    message = explain(info.value)
    assert message.startswith("since: not a time or age"), message
    assert len(message) < 200


def test_later_export_pages_need_until() -> None:
    with pytest.raises(ValidationError) as info:
        AuditExport.model_validate({"after": 10})
    assert explain(info.value).startswith("until: required after the first page")
    assert AuditExport.model_validate({"after": 10, "until": 20}).until == 20
    assert AuditExport.model_validate({}).until is None


def test_a_header_through_the_model_is_the_signed_text() -> None:
    key = Ed25519PrivateKey.generate()
    checkpoint = auditchain.sign_checkpoint(key, 3, "ab" * 32, NOW.replace(microsecond=0))
    header = auditchain.export_header(
        key,
        controller="c",
        exported_at=NOW,  # no microseconds: the signed text still carries them
        head_seq=3,
        head="ab" * 32,
        checkpoints=[checkpoint],
    )
    through = ExportHeader.model_validate(header).model_dump(mode="json")
    assert auditchain.canonical(through) == auditchain.canonical(header)
    line = SignedCheckpoint.model_validate(checkpoint.as_json()).model_dump(mode="json")
    assert auditchain.canonical({"checkpoint": line}) == auditchain.checkpoint_line(checkpoint)
