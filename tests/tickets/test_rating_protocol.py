"""The customer's rating on the wire: the ``rating`` message and the machines, no sockets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from protocol import codec
from protocol.errors import LocalProtocolError
from protocol.machine import Ended
from protocol.messages import Rating
from protocol.session import AgentState, ControllerState, RatingReceived
from tests.protocol.test_session import agent_in, live


@pytest.mark.parametrize(
    "fields", [{"score": 0}, {"score": 6}, {"score": 3, "comment": "x" * 1001}, {"score": "5!"}]
)
def test_a_rating_is_1_to_5_with_a_short_comment(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Rating.model_validate(fields)
    assert Rating(score=1).comment is None
    assert Rating(score=5, comment="x" * 1000).score == 5


def test_the_agent_rates_then_ends_and_the_controller_hears_both_in_order() -> None:
    agent, controller, wire = live()
    agent.rate(Rating(score=4, comment="friendly, a bit slow"))
    agent.end("the customer ended the session")
    events = wire.deliver(agent, controller)
    assert events == [
        RatingReceived(Rating(id=events[0].rating.id, score=4, comment="friendly, a bit slow")),
        Ended("the customer ended the session", by_peer=True),
    ]
    assert controller.state is ControllerState.ENDED


def test_a_rating_only_in_a_live_session() -> None:
    agent = agent_in(AgentState.ASKING_CUSTOMER)
    with pytest.raises(LocalProtocolError):
        agent.rate(Rating(score=5))


def test_a_rating_frame_round_trips() -> None:
    rating = Rating(score=2, comment="Привет, «Ärger»")
    assert codec.decode(codec.encode(rating)) == rating
