"""The agent channel as two sans-I/O machines: one per side of the same conversation.

::

    agent                                   controller
      │            ◄── hello(challenge)         │  SENT_HELLO
      │ join(code, key, sig) ──►                │  CHECKING   (driver: code valid?)
      │            ◄── consent_request          │  AWAIT_CONSENT
      │ consent_answer(yes/no) ──►              │  DECIDING   (driver: create session)
      │            ◄── session_started          │  LIVE
      │            ◄── ping / diag_request      │
      │ result ──►                              │
      │            ◄── ack                      │
      │ rating ──►  (the customer leaves)       │
      │ end ──►  or  ◄── end                    │  ENDED
      │                                         │
      │            ◄── end(rate=true)           │  RATING  (technician ended it, or
      │ rating ──►  or  end ──►                 │  ENDED    the grant expired)

A reconnect replaces ``join`` + consent with ``resume(session_id, key, sig)``. Either side
may send ``error`` (and fail) or ``end`` at any point. After ``end(rate=true)`` the
controller still takes one ``rating`` (or the agent's ``end``), and results already in
flight, for a short window; then it closes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from protocol import signing
from protocol.errors import AuthError, LocalProtocolError, RemoteProtocolError
from protocol.machine import Machine
from protocol.messages import (
    Ack,
    AgentInfo,
    ConsentAnswer,
    ConsentRequest,
    DiagRequest,
    End,
    FixOutput,
    FixProposal,
    Hello,
    Join,
    Message,
    Ping,
    Rating,
    Refusal,
    Result,
    Resume,
    SessionStarted,
)

# -- events -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsentNeeded:
    """Agent: ask the customer; answer with :meth:`AgentSession.answer_consent`."""

    request: ConsentRequest


@dataclass(frozen=True)
class SessionLive:
    """Agent: the session is live (``started.resumed`` after a reconnect)."""

    started: SessionStarted


@dataclass(frozen=True)
class RequestReceived:
    """Agent: the controller asks for something; answer with :meth:`AgentSession.reply`."""

    request: Ping | DiagRequest | FixProposal


@dataclass(frozen=True)
class Acknowledged:
    """Agent: the controller stored the result of ``request_id``."""

    request_id: str


@dataclass(frozen=True)
class JoinRequested:
    """Controller: a verified agent key wants to redeem ``code``."""

    code: str
    public_key: str
    agent: AgentInfo


@dataclass(frozen=True)
class ResumeRequested:
    """Controller: a verified agent key wants to resume ``session_id``."""

    session_id: str
    public_key: str


@dataclass(frozen=True)
class AuthFailed:
    """Controller: a join or resume whose signature did not verify (replayed, made for
    another certificate, or forged); the machine has failed and the driver audits it."""

    kind: str  # "join" or "resume"
    public_key: str
    reason: str
    session_id: str | None = None


@dataclass(frozen=True)
class ConsentDecided:
    """Controller: the customer answered."""

    granted: bool
    preapproved: tuple[str, ...] = ()
    unattended: tuple[str, ...] = ()
    #: with a no: "declined", "timed_out" or "no_input"; None from an agent that predates it
    refusal: str | None = None


@dataclass(frozen=True)
class OutputReceived:
    """Controller: a running fix printed something."""

    output: FixOutput


@dataclass(frozen=True)
class RatingReceived:
    """Controller: the customer rated the session as they left."""

    rating: Rating


@dataclass(frozen=True)
class ResultReceived:
    """Controller: a result for request ``result.reply_to`` arrived."""

    result: Result


# -- agent side -------------------------------------------------------------------------


class AgentState(enum.Enum):
    AWAIT_HELLO = "await_hello"
    AWAIT_CONSENT_REQUEST = "await_consent_request"
    ASKING_CUSTOMER = "asking_customer"
    AWAIT_SESSION = "await_session"
    LIVE = "live"
    #: the controller ended the session and invited a rating
    RATING = "rating"
    ENDED = "ended"
    FAILED = "failed"


class AgentSession(Machine[AgentState]):
    """The agent's view. ``sign(challenge) -> signature`` keeps the key out of here."""

    _TABLE: ClassVar = {
        (AgentState.AWAIT_HELLO, "hello"): "_on_hello",
        (AgentState.AWAIT_CONSENT_REQUEST, "consent_request"): "_on_consent_request",
        # a resume skips consent: the grant already exists
        (AgentState.AWAIT_SESSION, "session_started"): "_on_session_started",
        (AgentState.LIVE, "ping"): "_on_request",
        (AgentState.LIVE, "diag_request"): "_on_request",
        (AgentState.LIVE, "fix_proposal"): "_on_request",
        (AgentState.LIVE, "ack"): "_on_ack",
        # a result sent just before the controller's end is still acknowledged
        (AgentState.RATING, "ack"): "_on_ack",
    }
    _ENDED = AgentState.ENDED
    _FAILED = AgentState.FAILED
    _RATING = AgentState.RATING

    def __init__(
        self,
        *,
        public_key: str,
        sign: Callable[[str], str],
        agent: AgentInfo,
        code: str | None = None,
        session_id: str | None = None,
    ) -> None:
        if (code is None) == (session_id is None):
            raise ValueError("give exactly one of code (join) or session_id (resume)")
        super().__init__(AgentState.AWAIT_HELLO)
        self._public_key = public_key
        self._sign = sign
        self._agent = agent
        self._code = code
        self.session_id = session_id

    def _on_hello(self, message: Message) -> list[object]:
        assert isinstance(message, Hello)
        signature = self._sign(message.challenge)
        if self._code is not None:
            self._send(
                [
                    Join(
                        code=self._code,
                        public_key=self._public_key,
                        signature=signature,
                        agent=self._agent,
                    )
                ]
            )
            self.state = AgentState.AWAIT_CONSENT_REQUEST
        else:
            assert self.session_id is not None
            self._send(
                [
                    Resume(
                        session_id=self.session_id, public_key=self._public_key, signature=signature
                    )
                ]
            )
            self.state = AgentState.AWAIT_SESSION
        return []

    def _on_consent_request(self, message: Message) -> list[object]:
        assert isinstance(message, ConsentRequest)
        self.state = AgentState.ASKING_CUSTOMER
        return [ConsentNeeded(message)]

    def answer_consent(
        self,
        granted: bool,
        preapproved: tuple[str, ...] = (),
        unattended: tuple[str, ...] = (),
        refusal: Refusal | None = None,
    ) -> None:
        """Send the customer's answer (with a no, whether they said it or the prompt timed
        out); a no ends the conversation."""
        self._expect(AgentState.ASKING_CUSTOMER)
        if granted and refusal is not None:
            raise LocalProtocolError("a granted consent has no refusal reason")
        self._send(
            [
                ConsentAnswer(
                    granted=granted,
                    preapproved=preapproved,
                    unattended=unattended,
                    refusal=refusal,
                )
            ]
        )
        self.state = AgentState.AWAIT_SESSION if granted else AgentState.ENDED

    def _on_session_started(self, message: Message) -> list[object]:
        assert isinstance(message, SessionStarted)
        self.session_id = message.session_id
        self.state = AgentState.LIVE
        return [SessionLive(message)]

    def _on_request(self, message: Message) -> list[object]:
        assert isinstance(message, Ping | DiagRequest | FixProposal)
        return [RequestReceived(message)]

    def _on_ack(self, message: Message) -> list[object]:
        assert isinstance(message, Ack)
        return [Acknowledged(message.request_id)]

    def reply(self, result: Result) -> None:
        """Queue a result (built by the driver, which also keeps it in the outbox)."""
        self._expect(AgentState.LIVE)
        self._send([result])

    def output(self, output: FixOutput) -> None:
        """Queue live output of a running fix (best effort: the result carries it too)."""
        self._expect(AgentState.LIVE)
        self._send([output])

    def rate(self, rating: Rating) -> None:
        """Queue the customer's rating: before :meth:`end` when they leave, or as the
        answer to an ``end`` that invited one (which ends the session here too)."""
        self._expect(AgentState.LIVE, AgentState.RATING)
        self._send([rating])
        if self.state is AgentState.RATING:
            self.state = AgentState.ENDED


# -- controller side --------------------------------------------------------------------


class ControllerState(enum.Enum):
    SENT_HELLO = "sent_hello"
    CHECKING = "checking"
    AWAIT_CONSENT = "await_consent"
    DECIDING = "deciding"
    LIVE = "live"
    #: we ended the session and wait briefly for the customer's rating
    RATING = "rating"
    ENDED = "ended"
    FAILED = "failed"


class ControllerSession(Machine[ControllerState]):
    """The controller's view of one agent connection."""

    _TABLE: ClassVar = {
        (ControllerState.SENT_HELLO, "join"): "_on_join",
        (ControllerState.SENT_HELLO, "resume"): "_on_resume",
        (ControllerState.AWAIT_CONSENT, "consent_answer"): "_on_consent",
        (ControllerState.LIVE, "result"): "_on_result",
        (ControllerState.LIVE, "fix_output"): "_on_output",
        (ControllerState.LIVE, "rating"): "_on_rating",
        # after end(rate=true): the rating, and results that crossed the end on the wire
        (ControllerState.RATING, "rating"): "_on_final_rating",
        (ControllerState.RATING, "result"): "_on_result",
        (ControllerState.RATING, "fix_output"): "_on_output",
    }
    _ENDED = ControllerState.ENDED
    _FAILED = ControllerState.FAILED

    def __init__(self, *, challenge: str, cert_sha256: str, controller: str, now: datetime):
        super().__init__(ControllerState.SENT_HELLO)
        self._challenge = challenge
        self._cert = cert_sha256
        self.public_key: str | None = None
        self.session_id: str | None = None
        #: whether CHECKING came from a join (consent still needed) or a resume
        self._joining = False
        self._send([Hello(challenge=challenge, controller=controller, server_time=now)])

    def _verify(self, public_key: str, signature: str) -> str | None:
        """None when the signature verifies; else the reason, and the machine has failed."""
        try:
            signing.verify_agent(public_key, signature, self._challenge, self._cert)
        except AuthError as exc:
            self.fail(exc)
            return exc.reason
        self.public_key = public_key
        self.state = ControllerState.CHECKING
        return None

    def _on_join(self, message: Message) -> list[object]:
        assert isinstance(message, Join)
        if (reason := self._verify(message.public_key, message.signature)) is not None:
            return [AuthFailed("join", message.public_key, reason)]
        self._joining = True
        return [JoinRequested(message.code, message.public_key, message.agent)]

    def _on_resume(self, message: Message) -> list[object]:
        assert isinstance(message, Resume)
        if (reason := self._verify(message.public_key, message.signature)) is not None:
            return [AuthFailed("resume", message.public_key, reason, message.session_id)]
        return [ResumeRequested(message.session_id, message.public_key)]

    def ask_consent(self, request: ConsentRequest) -> None:
        """The code checked out: put the question to the customer."""
        self._expect(ControllerState.CHECKING)
        if not self._joining:
            raise LocalProtocolError("a resumed session does not ask for consent again")
        self._send([request])
        self.state = ControllerState.AWAIT_CONSENT

    def _on_consent(self, message: Message) -> list[object]:
        assert isinstance(message, ConsentAnswer)
        self.state = ControllerState.DECIDING if message.granted else ControllerState.ENDED
        refusal = None if message.granted else message.refusal
        return [ConsentDecided(message.granted, message.preapproved, message.unattended, refusal)]

    def start(self, started: SessionStarted) -> None:
        """Consent given (or resume verified): the session is live."""
        self._expect(ControllerState.CHECKING, ControllerState.DECIDING)
        if self.state is ControllerState.CHECKING and self._joining:
            raise LocalProtocolError("a joined session cannot start before the customer consents")
        self.session_id = started.session_id
        self._send([started])
        self.state = ControllerState.LIVE

    def refuse(self, code: str, message: str) -> None:
        """Refuse a join or resume with a reason the agent can show."""
        self.fail(_Refusal(code, message))

    def _on_output(self, message: Message) -> list[object]:
        assert isinstance(message, FixOutput)
        if not message.reply_to:
            raise RemoteProtocolError("fix output must name the proposal it belongs to")
        return [OutputReceived(message)]

    def send_request(self, request: Ping | DiagRequest | FixProposal) -> None:
        """Ask the live agent for something."""
        self._expect(ControllerState.LIVE)
        self._send([request])

    def _on_rating(self, message: Message) -> list[object]:
        assert isinstance(message, Rating)
        return [RatingReceived(message)]

    def _on_final_rating(self, message: Message) -> list[object]:
        self.state = ControllerState.ENDED
        return self._on_rating(message)

    def end_inviting_rating(self, reason: str) -> None:
        """End the live session from our side and wait for the customer's rating."""
        self._expect(ControllerState.LIVE)
        self._send([End(reason=reason, rate=True)])
        self.state = ControllerState.RATING

    def _on_result(self, message: Message) -> list[object]:
        assert isinstance(message, Result)
        if not message.reply_to:
            raise RemoteProtocolError("a result must name the request it answers")
        return [ResultReceived(message)]

    def ack(self, request_id: str) -> None:
        """Tell the agent a result is stored and may leave its outbox."""
        self._expect(ControllerState.LIVE, ControllerState.RATING)
        self._send([Ack(request_id=request_id)])


class _Refusal(RemoteProtocolError):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
