"""The agent channel: an AgentSession and a ControllerSession talking through the codec.

Each test plays the drivers' part by hand: it takes what one machine queued, carries it
over a :class:`Wire` and asserts on the events the other returns and the frames it queues.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from typing import Any

import pytest

from protocol import codec, signing
from protocol.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from protocol.machine import Ended, Machine, Refused
from protocol.messages import (
    ConsentAnswer,
    DiagRequest,
    End,
    Error,
    Hello,
    Join,
    Message,
    Ping,
    Rating,
    Resume,
)
from protocol.session import (
    Acknowledged,
    AgentSession,
    AgentState,
    AuthFailed,
    ConsentDecided,
    ConsentNeeded,
    ControllerSession,
    ControllerState,
    JoinRequested,
    RatingReceived,
    RequestReceived,
    ResultReceived,
    ResumeRequested,
    SessionLive,
)
from tests.protocol.wire import (
    AGENT_INFO,
    AGENT_KEY,
    AGENT_PUBLIC,
    CERT,
    CHALLENGE,
    CODE,
    MITM_CERT,
    NOW,
    OTHER_CHALLENGE,
    OTHER_KEY,
    SAMPLES,
    SESSION_ID,
    Wire,
    agent_signer,
    consent_request,
    make_agent,
    make_controller,
    result_for,
    session_started,
)

# -- getting both sides to a state ------------------------------------------------------


def joined() -> tuple[AgentSession, ControllerSession, Wire]:
    """Hello and join exchanged: the controller is CHECKING the code."""
    agent, controller = make_agent(), make_controller()
    wire = Wire(agent, controller)
    wire.pump()
    assert controller.state is ControllerState.CHECKING
    return agent, controller, wire


def live() -> tuple[AgentSession, ControllerSession, Wire]:
    """Join, consent yes, session started: both sides LIVE and nothing queued."""
    agent, controller, wire = joined()
    controller.ask_consent(consent_request())
    wire.deliver(controller, agent)
    agent.answer_consent(True)
    wire.deliver(agent, controller)
    controller.start(session_started())
    wire.deliver(controller, agent)
    assert agent.state is AgentState.LIVE
    assert controller.state is ControllerState.LIVE
    return agent, controller, wire


def agent_in(state: AgentState) -> AgentSession:
    """An agent brought to ``state`` by feeding it frames; its queue is drained."""
    agent = make_agent()
    steps: list[Callable[[], object]] = [
        lambda: agent.receive(Hello(challenge=CHALLENGE, controller="hq", server_time=NOW)),
        lambda: agent.receive(consent_request()),
        lambda: agent.answer_consent(True),
        lambda: agent.receive(session_started()),
        lambda: agent.receive(End(reason="the technician is done", rate=True)),
    ]
    order = list(AgentState)
    for step in steps[: order.index(state)]:
        step()
    agent.data_to_send()
    assert agent.state is state
    return agent


def controller_in(state: ControllerState) -> ControllerSession:
    """A controller brought to ``state`` by feeding it frames; its queue is drained."""
    controller = make_controller()
    join = Join(
        code=CODE,
        public_key=AGENT_PUBLIC,
        signature=signing.sign_agent(AGENT_KEY, CHALLENGE, CERT),
        agent=AGENT_INFO,
    )
    steps: list[Callable[[], object]] = [
        lambda: controller.receive(join),
        lambda: controller.ask_consent(consent_request()),
        lambda: controller.receive(ConsentAnswer(granted=True)),
        lambda: controller.start(session_started()),
        lambda: controller.end_inviting_rating("the technician is done"),
    ]
    order = list(ControllerState)
    for step in steps[: order.index(state)]:
        step()
    controller.data_to_send()
    assert controller.state is state
    return controller


# -- the opening ------------------------------------------------------------------------


def test_the_controller_opens_with_a_hello() -> None:
    controller = make_controller()
    assert controller.state is ControllerState.SENT_HELLO
    [hello] = controller.data_to_send()
    assert isinstance(hello, Hello)
    assert (hello.challenge, hello.controller, hello.server_time) == (CHALLENGE, "hq", NOW)
    assert controller.data_to_send() == []  # the queue was emptied


def test_the_agent_answers_hello_with_a_join_signed_for_this_cert() -> None:
    agent = make_agent()
    events = agent.receive(Hello(challenge=CHALLENGE, controller="hq", server_time=NOW))
    assert events == []
    assert agent.state is AgentState.AWAIT_CONSENT_REQUEST
    [join] = agent.data_to_send()
    assert isinstance(join, Join)
    assert (join.code, join.public_key, join.agent) == (CODE, AGENT_PUBLIC, AGENT_INFO)
    signing.verify_agent(join.public_key, join.signature, CHALLENGE, CERT)


def test_pumping_a_fresh_pair_stops_when_the_controller_must_decide() -> None:
    agent, controller = make_agent(), make_controller()
    wire = Wire(agent, controller)
    at_agent, at_controller = wire.pump()
    assert wire.log == ["hello", "join"]
    assert at_agent == []
    assert at_controller == [JoinRequested(CODE, AGENT_PUBLIC, AGENT_INFO)]
    assert controller.public_key == AGENT_PUBLIC


@pytest.mark.parametrize("kwargs", [{}, {"code": "C", "session_id": "S"}], ids=["neither", "both"])
def test_an_agent_needs_exactly_one_of_code_or_session_id(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        AgentSession(public_key=AGENT_PUBLIC, sign=agent_signer(), agent=AGENT_INFO, **kwargs)


# -- whole conversations ----------------------------------------------------------------


def test_join_consent_live_ping_result_ack_end() -> None:
    agent, controller, wire = joined()

    request = consent_request()
    controller.ask_consent(request)
    assert controller.state is ControllerState.AWAIT_CONSENT
    assert wire.deliver(controller, agent) == [ConsentNeeded(request)]
    assert agent.state is AgentState.ASKING_CUSTOMER

    agent.answer_consent(True)
    assert agent.state is AgentState.AWAIT_SESSION
    assert wire.deliver(agent, controller) == [ConsentDecided(True)]
    assert controller.state is ControllerState.DECIDING

    started = session_started()
    controller.start(started)
    assert controller.session_id == SESSION_ID
    assert wire.deliver(controller, agent) == [SessionLive(started)]
    assert agent.state is AgentState.LIVE
    assert agent.session_id == SESSION_ID

    ping = Ping()
    controller.send_request(ping)
    assert wire.deliver(controller, agent) == [RequestReceived(ping)]

    result = result_for(ping.id, rtt_ms=3)
    agent.reply(result)
    [received] = wire.deliver(agent, controller)
    assert received == ResultReceived(result)
    assert isinstance(received, ResultReceived)
    assert received.result.reply_to == ping.id

    controller.ack(ping.id)
    assert wire.deliver(controller, agent) == [Acknowledged(ping.id)]

    controller.end("ticket closed")
    assert controller.state is ControllerState.ENDED
    assert wire.deliver(controller, agent) == [Ended("ticket closed", by_peer=True)]
    assert agent.state is AgentState.ENDED
    assert agent.finished and controller.finished

    assert wire.log == [
        "hello",
        "join",
        "consent_request",
        "consent_answer",
        "session_started",
        "ping",
        "result",
        "ack",
        "end",
    ]
    assert agent.data_to_send() == controller.data_to_send() == []


def test_a_diag_request_reaches_the_agent_with_its_collectors() -> None:
    agent, controller, wire = live()
    request = DiagRequest(collectors=("disk", "processes"))
    controller.send_request(request)
    [event] = wire.deliver(controller, agent)
    assert isinstance(event, RequestReceived)
    assert event.request == request
    assert isinstance(event.request, DiagRequest)
    assert event.request.collectors == ("disk", "processes")


def test_overlapping_requests_are_answered_in_any_order() -> None:
    agent, controller, wire = live()
    first, second = Ping(), DiagRequest()
    controller.send_request(first)
    controller.send_request(second)
    requests = wire.deliver(controller, agent)
    assert [e.request.id for e in requests if isinstance(e, RequestReceived)] == [
        first.id,
        second.id,
    ]
    agent.reply(result_for(second.id))
    agent.reply(result_for(first.id))
    events = wire.deliver(agent, controller)
    assert [e.result.reply_to for e in events if isinstance(e, ResultReceived)] == [
        second.id,
        first.id,
    ]
    assert controller.state is ControllerState.LIVE


def test_consent_refused_ends_both_sides_without_a_session() -> None:
    agent, controller, wire = joined()
    controller.ask_consent(consent_request())
    wire.deliver(controller, agent)

    agent.answer_consent(False)
    assert agent.state is AgentState.ENDED
    assert wire.deliver(agent, controller) == [ConsentDecided(False)]
    assert controller.state is ControllerState.ENDED

    with pytest.raises(LocalProtocolError):
        controller.start(session_started())
    assert "session_started" not in wire.log
    assert wire.log[-1] == "consent_answer"
    assert agent.session_id is None and controller.session_id is None
    assert agent.data_to_send() == controller.data_to_send() == []


@pytest.mark.parametrize("refusal", ["declined", "timed_out", "no_input"])
def test_a_refusal_says_why_and_a_yes_carries_no_refusal_field(refusal: str) -> None:
    agent, controller, wire = joined()
    controller.ask_consent(consent_request())
    wire.deliver(controller, agent)
    agent.answer_consent(False, refusal=refusal)  # type: ignore[arg-type]
    assert wire.deliver(agent, controller) == [ConsentDecided(False, refusal=refusal)]

    # an older controller refuses unknown fields: a yes must not carry this one
    assert "refusal" not in json.loads(codec.encode(ConsentAnswer(granted=True)))
    asking, other, wire = joined()
    other.ask_consent(consent_request())
    wire.deliver(other, asking)
    with pytest.raises(LocalProtocolError, match="no refusal reason"):
        asking.answer_consent(True, refusal="declined")


def test_an_older_agents_no_decodes_without_a_reason() -> None:
    frame = json.dumps({"v": 1, "id": "m-1", "type": "consent_answer", "granted": False})
    answer = codec.decode(frame)
    assert isinstance(answer, ConsentAnswer) and answer.refusal is None


def test_resume_skips_consent() -> None:
    agent = make_agent(session_id=SESSION_ID)
    controller = make_controller()
    wire = Wire(agent, controller)
    at_agent, at_controller = wire.pump()
    assert at_agent == []
    assert at_controller == [ResumeRequested(SESSION_ID, AGENT_PUBLIC)]
    assert agent.state is AgentState.AWAIT_SESSION
    assert controller.state is ControllerState.CHECKING

    started = session_started(resumed=True)
    controller.start(started)
    at_agent, at_controller = wire.pump()
    assert at_agent == [SessionLive(started)]
    assert at_controller == []
    assert wire.log == ["hello", "resume", "session_started"]
    assert agent.state is AgentState.LIVE and controller.state is ControllerState.LIVE


def test_a_resume_frame_carries_a_valid_signature_and_no_code() -> None:
    agent = make_agent(session_id=SESSION_ID)
    agent.receive(Hello(challenge=CHALLENGE, controller="hq", server_time=NOW))
    [resume] = agent.data_to_send()
    assert isinstance(resume, Resume)
    assert resume.session_id == SESSION_ID
    assert "code" not in json.loads(codec.encode(resume))
    signing.verify_agent(resume.public_key, resume.signature, CHALLENGE, CERT)


def test_the_agent_refuses_a_session_that_skips_consent() -> None:
    # the controller started a session right after a join: the agent never said yes
    agent = agent_in(AgentState.AWAIT_CONSENT_REQUEST)
    with pytest.raises(RemoteProtocolError, match="AWAIT_CONSENT_REQUEST"):
        agent.receive(session_started())
    assert agent.state is AgentState.FAILED
    assert agent.session_id is None


def test_the_controller_cannot_start_a_joined_session_without_consent() -> None:
    _, controller, _ = joined()
    with pytest.raises(LocalProtocolError):
        controller.start(session_started())


# -- authentication ---------------------------------------------------------------------


def _corrupt(signature: str) -> str:
    return ("B" if signature[0] == "A" else "A") + signature[1:]


BAD_SIGNERS = {
    "another key": agent_signer(key=OTHER_KEY),
    "another cert (mitm)": agent_signer(cert=MITM_CERT),
    "an old challenge (replay)": lambda _: signing.sign_agent(AGENT_KEY, OTHER_CHALLENGE, CERT),
    "a corrupted signature": lambda challenge: _corrupt(agent_signer()(challenge)),
}


@pytest.mark.parametrize("resume", [False, True], ids=["join", "resume"])
@pytest.mark.parametrize("sign", BAD_SIGNERS.values(), ids=BAD_SIGNERS.keys())
def test_a_bad_signature_fails_the_controller_and_refuses_the_agent(
    sign: Callable[[str], str], resume: bool
) -> None:
    agent = make_agent(sign=sign, session_id=SESSION_ID if resume else None)
    controller = make_controller()
    wire = Wire(agent, controller)
    wire.deliver(controller, agent)

    # no JoinRequested / ResumeRequested: an AuthFailed for the driver to audit instead
    [failed] = wire.deliver(agent, controller)
    assert isinstance(failed, AuthFailed)
    assert failed.kind == ("resume" if resume else "join")
    assert failed.session_id == (SESSION_ID if resume else None)
    assert failed.reason == "agent signature does not verify"
    assert controller.state is ControllerState.FAILED
    assert controller.public_key is None

    assert wire.deliver(controller, agent) == [
        Refused("auth_failed", "agent signature does not verify")
    ]
    assert agent.state is AgentState.FAILED
    assert wire.log[-1] == "error"


def test_a_key_that_is_not_ed25519_fails_authentication() -> None:
    agent = make_agent(public_key="A" * 48)  # valid base64 of 36 bytes: not an Ed25519 key
    controller = make_controller()
    wire = Wire(agent, controller)
    wire.deliver(controller, agent)
    [failed] = wire.deliver(agent, controller)
    assert isinstance(failed, AuthFailed)
    [error] = controller.data_to_send()
    assert isinstance(error, Error)
    assert error.code == "auth_failed"
    assert "32 bytes" in error.message


@pytest.mark.parametrize(
    ("resume", "code"), [(False, "code_unknown"), (True, "session_unknown")], ids=["join", "resume"]
)
def test_the_controller_refuses_with_a_code_the_agent_sees(resume: bool, code: str) -> None:
    agent = make_agent(session_id=SESSION_ID if resume else None)
    controller = make_controller()
    wire = Wire(agent, controller)
    wire.pump()
    assert controller.state is ControllerState.CHECKING

    controller.refuse(code, "not a code we know")
    assert controller.state is ControllerState.FAILED
    assert wire.deliver(controller, agent) == [Refused(code, "not a code we know")]
    assert agent.state is AgentState.FAILED
    assert agent.finished


def test_refusing_after_the_end_sends_nothing() -> None:
    _, controller, _ = live()
    controller.end("done")
    controller.data_to_send()
    controller.refuse("late", "too late")
    assert controller.data_to_send() == []


# -- the peer breaks the rules ----------------------------------------------------------

#: What each state must accept, from the diagram in session.py; everything else is refused.
AGENT_ACCEPTS = {
    AgentState.AWAIT_HELLO: {"hello"},
    AgentState.AWAIT_CONSENT_REQUEST: {"consent_request"},
    AgentState.ASKING_CUSTOMER: set(),
    AgentState.AWAIT_SESSION: {"session_started"},
    AgentState.LIVE: {"ping", "diag_request", "fix_proposal", "ack"},
}
CONTROLLER_ACCEPTS = {
    ControllerState.SENT_HELLO: {"join", "resume"},
    ControllerState.CHECKING: set(),
    ControllerState.AWAIT_CONSENT: {"consent_answer"},
    ControllerState.DECIDING: set(),
    ControllerState.LIVE: {"result", "fix_output", "rating"},
}
ALWAYS = {"error", "end"}

UNEXPECTED = [
    pytest.param(agent_in, state, message, id=f"agent-{state.name}-{message.type}")
    for state, accepted in AGENT_ACCEPTS.items()
    for message in SAMPLES
    if message.type not in accepted | ALWAYS
] + [
    pytest.param(controller_in, state, message, id=f"controller-{state.name}-{message.type}")
    for state, accepted in CONTROLLER_ACCEPTS.items()
    for message in SAMPLES
    if message.type not in accepted | ALWAYS
]


@pytest.mark.parametrize(("build", "state", "message"), UNEXPECTED)
def test_an_unexpected_message_fails_the_machine_with_an_error_frame(
    build: Callable[[Any], Machine[Any]], state: enum.Enum, message: Message
) -> None:
    machine = build(state)
    with pytest.raises(RemoteProtocolError) as info:
        machine.receive(message)
    assert state.name in info.value.reason
    assert repr(message.type) in info.value.reason
    assert machine.state.name == "FAILED"
    assert machine.finished
    [error] = machine.data_to_send()
    assert isinstance(error, Error)
    assert (error.code, error.message) == ("remote_protocol_error", info.value.reason)


def test_a_result_before_live_is_refused_and_the_agent_hears_why() -> None:
    agent, controller = make_agent(), make_controller()
    wire = Wire(agent, controller)
    wire.deliver(controller, agent)
    agent.data_to_send()  # a rogue agent drops its join and sends a result instead
    with pytest.raises(RemoteProtocolError, match="'result' in state SENT_HELLO"):
        controller.receive(codec.decode(codec.encode(result_for("p1"))))
    assert controller.state is ControllerState.FAILED
    [event] = wire.deliver(controller, agent)
    assert isinstance(event, Refused)
    assert event.code == "remote_protocol_error"
    assert "SENT_HELLO" in event.message
    assert agent.state is AgentState.FAILED


def test_a_consent_answer_sent_to_the_agent_is_refused() -> None:
    agent = agent_in(AgentState.ASKING_CUSTOMER)
    with pytest.raises(RemoteProtocolError, match="'consent_answer' in state ASKING_CUSTOMER"):
        agent.receive(ConsentAnswer(granted=True))
    assert agent.state is AgentState.FAILED
    [error] = agent.data_to_send()
    assert isinstance(error, Error)
    with pytest.raises(LocalProtocolError):  # the customer's answer comes too late
        agent.answer_consent(True)


def test_a_result_without_reply_to_is_refused() -> None:
    agent, controller, wire = live()
    agent.reply(result_for(None))
    with pytest.raises(RemoteProtocolError, match="must name the request"):
        wire.deliver(agent, controller)
    assert controller.state is ControllerState.FAILED
    [error] = controller.data_to_send()
    assert isinstance(error, Error)
    assert error.code == "remote_protocol_error"
    assert "must name the request" in error.message


@pytest.mark.parametrize(
    "last", [End(reason="bye"), Error(code="x", message="boom")], ids=lambda m: m.type
)
@pytest.mark.parametrize(
    "late", [Ping(), End(reason="again"), Error(code="y", message="again")], ids=lambda m: m.type
)
def test_receiving_after_finished_is_a_remote_error_that_changes_nothing(
    last: Message, late: Message
) -> None:
    agent = agent_in(AgentState.LIVE)
    agent.receive(last)
    finished_in = agent.state
    assert agent.finished
    with pytest.raises(RemoteProtocolError, match="after the session finished"):
        agent.receive(late)
    assert agent.state is finished_in  # an ENDED session does not turn FAILED
    assert agent.data_to_send() == []


def test_a_non_ascii_challenge_is_a_protocol_error() -> None:
    agent = make_agent()
    frame = json.dumps(
        {"type": "hello", "challenge": "é" * 16, "controller": "hq", "server_time": NOW.isoformat()}
    )
    with pytest.raises(ProtocolError):
        agent.receive(codec.decode(frame))


# -- errors and endings -----------------------------------------------------------------


@pytest.mark.parametrize("ender", ["agent", "controller"])
def test_either_side_may_end_and_the_other_hears_it(ender: str) -> None:
    agent, controller, wire = live()
    me, peer = (agent, controller) if ender == "agent" else (controller, agent)
    me.end("enough")
    assert me.state.name == "ENDED"
    assert wire.deliver(me, peer) == [Ended("enough", by_peer=True)]
    assert peer.state.name == "ENDED"
    assert peer.data_to_send() == []  # no end echoed back
    me.end("twice")
    assert me.data_to_send() == []  # ending twice queues nothing


@pytest.mark.parametrize(
    "state", [s for s in AgentState if s not in (AgentState.ENDED, AgentState.FAILED)]
)
def test_an_error_from_the_controller_refuses_the_agent_in_any_live_state(
    state: AgentState,
) -> None:
    agent = agent_in(state)
    events = agent.receive(Error(code="grant_expired", message="the grant expired"))
    assert events == [Refused("grant_expired", "the grant expired")]
    assert agent.state is AgentState.FAILED
    assert agent.data_to_send() == []  # an error is not answered with an error


@pytest.mark.parametrize(
    "state",
    [s for s in ControllerState if s not in (ControllerState.ENDED, ControllerState.FAILED)],
)
def test_an_end_from_the_agent_ends_the_controller_in_any_live_state(
    state: ControllerState,
) -> None:
    controller = controller_in(state)
    assert controller.receive(End(reason="customer left")) == [Ended("customer left", True)]
    assert controller.state is ControllerState.ENDED


def test_a_local_failure_reaches_the_peer_with_its_code() -> None:
    agent, controller, wire = live()
    agent.fail(LocalProtocolError("driver confused"))
    assert agent.state is AgentState.FAILED
    assert wire.deliver(agent, controller) == [Refused("local_protocol_error", "driver confused")]
    assert controller.state is ControllerState.FAILED


# -- the driver breaks the rules --------------------------------------------------------

AGENT_MISUSE = [
    pytest.param(state, name, call, id=f"{name}-{state.name}")
    for name, call, allowed in [
        ("answer_consent", lambda a: a.answer_consent(True), {AgentState.ASKING_CUSTOMER}),
        ("reply", lambda a: a.reply(result_for("p1")), {AgentState.LIVE}),
        ("rate", lambda a: a.rate(Rating(score=5)), {AgentState.LIVE, AgentState.RATING}),
    ]
    for state in AgentState
    if state not in allowed
]


def _agent_at(state: AgentState) -> AgentSession:
    """Like :func:`agent_in`, and also into the terminal states."""
    if state is AgentState.ENDED:
        agent = agent_in(AgentState.LIVE)
        agent.end("done")
    elif state is AgentState.FAILED:
        agent = agent_in(AgentState.LIVE)
        agent.fail(LocalProtocolError("broken"))
    else:
        return agent_in(state)
    agent.data_to_send()
    return agent


@pytest.mark.parametrize(("state", "name", "call"), AGENT_MISUSE)
def test_agent_misuse_is_a_local_error_that_changes_nothing(
    state: AgentState, name: str, call: Callable[[AgentSession], None]
) -> None:
    agent = _agent_at(state)
    with pytest.raises(LocalProtocolError, match=f"not allowed in state {state.name}"):
        call(agent)
    assert agent.state is state
    assert agent.data_to_send() == []


CONTROLLER_MISUSE = [
    pytest.param(state, call, id=f"{name}-{state.name}")
    for name, call, allowed in [
        ("ask_consent", lambda c: c.ask_consent(consent_request()), {ControllerState.CHECKING}),
        (
            "start",
            lambda c: c.start(session_started()),
            {ControllerState.CHECKING, ControllerState.DECIDING},
        ),
        ("send_request", lambda c: c.send_request(Ping()), {ControllerState.LIVE}),
        ("ack", lambda c: c.ack("p1"), {ControllerState.LIVE, ControllerState.RATING}),
    ]
    for state in ControllerState
    if state not in allowed
]


def _controller_at(state: ControllerState) -> ControllerSession:
    """Like :func:`controller_in`, and also into the terminal states."""
    if state is ControllerState.ENDED:
        controller = controller_in(ControllerState.LIVE)
        controller.end("done")
    elif state is ControllerState.FAILED:
        controller = controller_in(ControllerState.LIVE)
        controller.fail(LocalProtocolError("broken"))
    else:
        return controller_in(state)
    controller.data_to_send()
    return controller


@pytest.mark.parametrize(("state", "call"), CONTROLLER_MISUSE)
def test_controller_misuse_is_a_local_error_that_changes_nothing(
    state: ControllerState, call: Callable[[ControllerSession], None]
) -> None:
    controller = _controller_at(state)
    with pytest.raises(
        LocalProtocolError, match=f"ControllerSession: not allowed in state {state.name}"
    ):
        call(controller)
    assert controller.state is state
    assert controller.data_to_send() == []


def test_a_request_before_live_is_a_local_error_naming_the_needed_state() -> None:
    controller = make_controller()
    with pytest.raises(LocalProtocolError, match=r"SENT_HELLO \(needs LIVE\)"):
        controller.send_request(Ping())


def test_answering_consent_unasked_is_a_local_error() -> None:
    agent = make_agent()
    with pytest.raises(LocalProtocolError, match=r"AWAIT_HELLO \(needs ASKING_CUSTOMER\)"):
        agent.answer_consent(True)
    assert agent.data_to_send() == []


def test_acks_name_the_request() -> None:
    agent, controller, wire = live()
    controller.ack("p-42")
    [event] = wire.deliver(controller, agent)
    assert event == Acknowledged("p-42")
    assert agent.state is AgentState.LIVE


# -- a rating after the controller ends the session ------------------------------------


def test_an_end_inviting_a_rating_waits_for_it_on_both_sides() -> None:
    controller = controller_in(ControllerState.LIVE)
    agent = agent_in(AgentState.LIVE)
    controller.end_inviting_rating("the technician is done")
    [end] = controller.data_to_send()
    assert isinstance(end, End) and end.rate is True
    assert controller.state is ControllerState.RATING and not controller.finished

    [ended] = agent.receive(end)
    assert isinstance(ended, Ended) and ended.rating_invited and ended.by_peer
    assert agent.state is AgentState.RATING and not agent.finished
    with pytest.raises(LocalProtocolError):
        agent.reply(result_for("p1"))  # the session is over: nothing more is served
    agent.rate(Rating(score=4, comment="quick"))
    assert agent.finished
    [rating] = agent.data_to_send()

    [received] = controller.receive(rating)
    assert isinstance(received, RatingReceived) and received.rating.score == 4
    assert controller.state is ControllerState.ENDED


def test_a_customer_who_does_not_rate_ends_it_with_end() -> None:
    controller = controller_in(ControllerState.RATING)
    agent = agent_in(AgentState.RATING)
    agent.end("no rating")
    [end] = agent.data_to_send()
    assert isinstance(end, End) and end.rate is False
    [ended] = controller.receive(end)
    assert isinstance(ended, Ended) and not ended.rating_invited
    assert controller.state is ControllerState.ENDED


def test_a_result_that_crossed_the_end_is_still_taken() -> None:
    controller = controller_in(ControllerState.RATING)
    agent = agent_in(AgentState.RATING)
    [received] = controller.receive(result_for("p1"))
    assert isinstance(received, ResultReceived)
    assert controller.state is ControllerState.RATING
    controller.ack("p1")  # stored: the agent may drop it from its outbox
    [ack] = controller.data_to_send()
    assert agent.receive(ack) == [Acknowledged("p1")]
    with pytest.raises(RemoteProtocolError):
        controller.receive(Ping())  # but nothing else


def test_an_agent_cannot_invite_the_controller_to_wait() -> None:
    """rate=true means something only from the controller: the controller just ends."""
    controller = controller_in(ControllerState.LIVE)
    [ended] = controller.receive(End(reason="bye", rate=True))
    assert isinstance(ended, Ended) and not ended.rating_invited
    assert controller.state is ControllerState.ENDED
