"""Test helpers for the sans-I/O protocol: fixed inputs, one sample of every message, a wire.

The :class:`Wire` joins two machines the way a driver would, minus the socket: every frame
one side queues is encoded, decoded and fed to the other, so the tests exercise the JSON
form as well as the state machines.
"""

from __future__ import annotations

import typing
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import codec, signing
from protocol.machine import Machine
from protocol.messages import (
    Ack,
    AgentInfo,
    Auth,
    AuthOk,
    Call,
    ConsentAnswer,
    ConsentRequest,
    DiagRequest,
    End,
    Error,
    FixOutput,
    FixProposal,
    Hello,
    Join,
    Message,
    Ping,
    Progress,
    Rating,
    Reply,
    Result,
    Resume,
    SessionStarted,
    Technician,
    TicketRef,
)
from protocol.session import AgentSession, ControllerSession
from protocol.vocabulary import DEFAULT_SCOPES

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
CHALLENGE = signing.b64e(bytes(range(24)))  # 32 characters, like the driver's 24 random bytes
OTHER_CHALLENGE = signing.b64e(bytes(range(100, 124)))
CERT = signing.cert_fingerprint(b"the controller's DER certificate")
MITM_CERT = signing.cert_fingerprint(b"a certificate presented by a man in the middle")
CODE = "K7Q-4XD-92M"
SESSION_ID = "S-0001"

AGENT_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
AGENT_PUBLIC = signing.public_key_text(AGENT_KEY)
AGENT_INFO = AgentInfo(hostname="pc-042", platform="Linux-6.8-x86_64", agent_version="0.1.0")
TICKET = TicketRef(id="T-17", title="Printer offline", customer="ACME")
TECHNICIAN = Technician(name="Alice", role="technician", level="L2")


def agent_signer(
    key: Ed25519PrivateKey = AGENT_KEY, cert: str = CERT
) -> typing.Callable[[str], str]:
    """The ``sign`` callable the agent driver builds: key and pinned cert bound in."""
    return lambda challenge: signing.sign_agent(key, challenge, cert)


def make_agent(
    *,
    code: str | None = CODE,
    session_id: str | None = None,
    sign: typing.Callable[[str], str] | None = None,
    public_key: str = AGENT_PUBLIC,
) -> AgentSession:
    """An agent about to join with ``code`` (or resume ``session_id``)."""
    if session_id is not None:
        code = None
    return AgentSession(
        public_key=public_key,
        sign=sign or agent_signer(),
        agent=AGENT_INFO,
        code=code,
        session_id=session_id,
    )


def make_controller(challenge: str = CHALLENGE) -> ControllerSession:
    """A controller connection that has just queued its ``hello``."""
    return ControllerSession(challenge=challenge, cert_sha256=CERT, controller="hq", now=NOW)


def consent_request() -> ConsentRequest:
    return ConsentRequest(
        ticket=TICKET, technician=TECHNICIAN, scopes=DEFAULT_SCOPES, expires_at=LATER
    )


def session_started(*, resumed: bool = False) -> SessionStarted:
    return SessionStarted(
        session_id=SESSION_ID,
        ticket=TICKET,
        scopes=DEFAULT_SCOPES,
        expires_at=LATER,
        resumed=resumed,
    )


def result_for(request_id: str | None, **data: Any) -> Result:
    return Result(reply_to=request_id, ok=True, data=data, produced_at=NOW)


def message_types() -> set[str]:
    """Every ``type`` the ``Message`` union admits, read from the union itself."""
    union = typing.get_args(Message)[0]
    return {model.model_fields["type"].default for model in typing.get_args(union)}


#: One instance of every message type, with fixed ids so their frames are reproducible.
SAMPLES: list[Message] = [
    Hello(id="m-hello", challenge=CHALLENGE, controller="hq", server_time=NOW),
    Error(id="m-error", reply_to="m-join", code="auth_failed", message="no"),
    End(id="m-end", reason="the customer left"),
    Join(
        id="m-join",
        code=CODE,
        public_key=AGENT_PUBLIC,
        signature=signing.sign_agent(AGENT_KEY, CHALLENGE, CERT),
        agent=AGENT_INFO,
    ),
    Resume(
        id="m-resume",
        session_id=SESSION_ID,
        public_key=AGENT_PUBLIC,
        signature=signing.sign_agent(AGENT_KEY, CHALLENGE, CERT),
    ),
    ConsentRequest(
        id="m-consent-req",
        ticket=TICKET,
        technician=Technician(name="Bob", role="admin"),
        scopes=DEFAULT_SCOPES,
        expires_at=LATER,
    ),
    ConsentAnswer(id="m-consent-ans", granted=True),
    SessionStarted(
        id="m-started",
        session_id=SESSION_ID,
        ticket=TICKET,
        scopes=DEFAULT_SCOPES,
        expires_at=LATER,
        resumed=True,
    ),
    Ping(id="m-ping"),
    DiagRequest(id="m-diag", collectors=("disk", "network")),
    FixProposal(
        id="m-fix",
        bundle={"payload": "{}", "signature": "c2ln", "key": "a2V5"},
        fix_id="dns-flush",
        params={"days": "7"},
        technician=Technician(name="Bob", role="technician", level="L2"),
        ticket=TicketRef(id="T-1", title="Laptop slow", customer="ACME"),
    ),
    FixOutput(id="m-out", reply_to="m-fix", stream="stdout", data="flushed\n"),
    Result(
        id="m-result",
        reply_to="m-diag",
        ok=False,
        data={"partial": {"disk": [1, 2.5, None, True, "x"]}},
        error="TimeoutError: network",
        produced_at=datetime(2024, 5, 6, 9, 38, 9, 123456, tzinfo=UTC),
    ),
    Rating(id="m-rating", score=5, comment="quick and friendly"),
    Ack(id="m-ack", request_id="m-diag"),
    Auth(id="m-auth", public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA", signature="sig"),
    AuthOk(id="m-auth-ok", user="alice", role="technician", level="L2"),
    Call(id="m-call", method="ticket.show", params={"id": "T-17", "full": True}),
    Progress(id="m-progress", reply_to="m-call", stage="collecting attachments"),
    Reply(id="m-reply", reply_to="m-call", ok=True, result=[{"id": "T-17"}, None, 3]),
]


class Wire:
    """Two machines and the codec between them; ``log`` records every ``type`` carried."""

    def __init__(
        self, first: Machine[Any], second: Machine[Any], max_size: int = codec.AGENT_MAX_FRAME
    ) -> None:
        self.first, self.second = first, second
        self.max_size = max_size
        self.log: list[str] = []

    def deliver(self, sender: Machine[Any], receiver: Machine[Any]) -> list[object]:
        """Carry every frame ``sender`` queued to ``receiver``; return its events."""
        events: list[object] = []
        for message in sender.data_to_send():
            frame = codec.encode(message)
            decoded = codec.decode(frame, self.max_size)
            assert decoded == message, "the wire changed a message"
            self.log.append(message.type)
            events.extend(receiver.receive(decoded))
        return events

    def pump(self) -> tuple[list[object], list[object]]:
        """Deliver both ways until neither side has anything queued; events per machine."""
        first, second = self.first, self.second
        got_first: list[object] = []
        got_second: list[object] = []
        while True:
            carried = len(self.log)
            got_second += self.deliver(first, second)
            got_first += self.deliver(second, first)
            if len(self.log) == carried:  # a quiet round: both queues are empty
                return got_first, got_second
