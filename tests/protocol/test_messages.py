"""The message models: frozen, strict, self-describing, and unable to carry a command."""

from __future__ import annotations

import re
import typing
from datetime import datetime

import pytest
from pydantic import BaseModel, ValidationError

from protocol import PROTOCOL_VERSION
from protocol.messages import (
    AgentInfo,
    ConsentAnswer,
    ConsentRequest,
    Error,
    Hello,
    Join,
    Message,
    Ping,
    Result,
    SessionStarted,
    new_id,
)
from protocol.vocabulary import DEFAULT_SCOPES
from tests.protocol.wire import AGENT_INFO, AGENT_PUBLIC, CHALLENGE, NOW, SAMPLES, TICKET

MODELS: list[type[BaseModel]] = list(typing.get_args(typing.get_args(Message)[0]))


def _all_fields(model: type[BaseModel]) -> set[str]:
    """Field names of a model and of every model nested in it."""
    names = set(model.model_fields)
    for field in model.model_fields.values():
        for arg in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                names |= _all_fields(arg)
    return names


def test_the_field_walk_reaches_nested_models() -> None:
    # guards the command-line test below against checking only the top level
    assert {"code", "public_key", "hostname", "platform"} <= _all_fields(Join)
    assert {"name", "role", "customer"} <= _all_fields(ConsentRequest)


def test_new_id_is_96_random_bits_in_hex() -> None:
    ids = {new_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[0-9a-f]{24}", i) for i in ids)


def test_envelope_defaults() -> None:
    first, second = Ping(), Ping()
    assert first.v == PROTOCOL_VERSION == 1
    assert first.reply_to is None
    assert first.id != second.id


def test_type_discriminators_are_unique_and_match_the_model_default() -> None:
    tags = [model.model_fields["type"].default for model in MODELS]
    assert len(tags) == len(set(tags)) == len(MODELS)
    for model in MODELS:
        [literal] = typing.get_args(model.model_fields["type"].annotation)
        assert literal == model.model_fields["type"].default


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: m.type)
def test_messages_are_frozen(message: Message) -> None:
    with pytest.raises(ValidationError, match="frozen"):
        message.id = "changed"  # type: ignore[misc]
    assert message.id != "changed"


def test_nested_models_are_frozen_too() -> None:
    with pytest.raises(ValidationError, match="frozen"):
        TICKET.title = "changed"  # type: ignore[misc]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_unknown_fields_are_refused(model: type[BaseModel]) -> None:
    with pytest.raises(ValidationError, match=r"extra_forbidden|Extra inputs"):
        model.model_validate({"type": model.model_fields["type"].default, "surprise": 1})


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_no_message_can_carry_a_command_line(model: type[BaseModel]) -> None:
    forbidden = {"command", "cmd", "argv", "args", "shell", "script", "exec", "commandline"}
    assert not _all_fields(model) & forbidden


def test_only_version_1_is_accepted() -> None:
    with pytest.raises(ValidationError):
        Ping(v=2)


def test_scopes_are_reading_diagnostics_and_proposing_fixes() -> None:
    # proposing is all a session grants: each fix still asks the customer
    assert DEFAULT_SCOPES == ("diagnostics:read", "fixes:propose")
    with pytest.raises(ValidationError):
        SessionStarted(
            session_id="s",
            ticket=TICKET,
            scopes=("diagnostics:read", "fixes:run"),
            expires_at=NOW,
        )


@pytest.mark.parametrize("naive", [datetime(2024, 1, 1), "2024-01-01T00:00:00"])
def test_timestamps_must_carry_a_timezone(naive: object) -> None:
    with pytest.raises(ValidationError, match="timezone"):
        Result(ok=True, produced_at=naive)
    with pytest.raises(ValidationError, match="timezone"):
        Hello(challenge=CHALLENGE, controller="hq", server_time=naive)


@pytest.mark.parametrize(
    ("challenge", "ok"),
    [("c" * 15, False), ("c" * 16, True), ("c" * 128, True), ("c" * 129, False)],
)
def test_challenge_length_bounds(challenge: str, ok: bool) -> None:
    if ok:
        assert Hello(challenge=challenge, controller="hq", server_time=NOW).challenge == challenge
    else:
        with pytest.raises(ValidationError):
            Hello(challenge=challenge, controller="hq", server_time=NOW)


def test_join_refuses_a_key_or_signature_of_the_wrong_size() -> None:
    good = {"code": "C", "public_key": AGENT_PUBLIC, "signature": "s" * 86, "agent": AGENT_INFO}
    assert Join(**good).public_key == AGENT_PUBLIC
    for field, value in [
        ("public_key", "k" * 39),
        ("public_key", "k" * 65),
        ("signature", "s" * 79),
        ("signature", "s" * 129),
    ]:
        with pytest.raises(ValidationError, match=field):
            Join(**{**good, field: value})


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"code": "x" * 65, "message": "m"}, "code"),
        ({"code": "c", "message": "m" * 2001}, "message"),
    ],
)
def test_error_fields_are_bounded(kwargs: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        Error(**kwargs)


def test_agent_info_is_bounded() -> None:
    with pytest.raises(ValidationError, match="hostname"):
        AgentInfo(hostname="h" * 256, platform="p", agent_version="1")


def test_consent_models_validate_their_bodies() -> None:
    assert ConsentAnswer(granted=False).granted is False
    with pytest.raises(ValidationError):
        ConsentAnswer(granted="perhaps")
    with pytest.raises(ValidationError, match="technician"):
        ConsentRequest(  # type: ignore[call-arg]
            ticket=TICKET, scopes=DEFAULT_SCOPES, expires_at=NOW
        )
