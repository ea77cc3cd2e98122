"""The ticket calls' models: what they accept, how they refuse, what goes on the wire."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from protocol.calls import explain
from protocol.calls.tickets import TicketEscalate, TicketLink, TicketList, TicketOpen


def _refusal(call: type[TicketLink | TicketEscalate | TicketList], **fields: object) -> str:
    with pytest.raises(ValidationError) as caught:
        call.model_validate(fields)
    return explain(caught.value)


def test_a_link_is_kind_colon_ticket_or_a_bare_ticket_with_its_kind() -> None:
    assert TicketLink.model_validate({"ticket": 3, "other": "follows:t-1"}).link == ("follows", 1)
    older = TicketLink.model_validate({"ticket": "T-3", "other": "1", "kind": "blocks"})
    assert older.link == ("blocks", 1)
    assert older.params() == {"ticket": "T-3", "other": "T-1", "kind": "blocks"}
    assert TicketLink.model_validate({"ticket": 3, "other": "T-1"}).link == ("relates", 1)
    clash = _refusal(TicketLink, ticket=3, other="relates:T-1", kind="blocks")
    assert "the link says 'relates' but --kind says 'blocks'" in clash
    assert _refusal(TicketLink, ticket=3, other="causes:T-1").startswith(
        "other: a link is KIND:T-N"
    )
    assert _refusal(TicketLink, ticket=3, other="T-" + "9" * 30).startswith("other: not a ticket")
    with pytest.raises(ValidationError):
        TicketOpen.model_validate({"title": "x", "customer": "y", "link": "T-1"})  # needs a kind


def test_levels_priorities_and_states_as_people_type_them() -> None:
    assert TicketEscalate.model_validate({"ticket": 1, "to": "l2", "reason": "r"}).to == "L2"
    assert _refusal(TicketEscalate, ticket=1, to="L5", reason="r").startswith(
        "to: there is no support level 'L5'"
    )
    assert TicketOpen.model_validate(
        {"title": "x", "customer": "y", "priority": "p1"}
    ).priority == ("P1")
    listed = TicketList.model_validate({"state": "new, active", "sla": "at_risk"})
    assert listed.params()["state"] == ["new", "active"]
    # one spelling on the wire: the CLI turns --sla at-risk into at_risk
    assert _refusal(TicketList, sla="at-risk").startswith("sla:")
    assert _refusal(TicketList, state="new,bogus").startswith("state.1:")
