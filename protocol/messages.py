"""Every message on the wire, as frozen pydantic models.

A frame is one JSON object. Its envelope fields sit beside the body:

``v``
    protocol version (``PROTOCOL_VERSION``); a peer refuses any other.
``id``
    unique per sender; the key for replies, acknowledgements and de-duplication.
``reply_to``
    the ``id`` this message answers, or null.
``type``
    the discriminator that selects the body model.

There is deliberately no message that runs an arbitrary command: the agent only ever
runs what a typed request names (``diag_request``, ``ping``), or a fix that a
``fix_proposal`` names from a catalogue signed with the key the agent pins.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from protocol.vocabulary import Scope

#: why a consent answer is no: the customer said so, the prompt ran out of time, or the
#: agent had no input to read an answer from (stdin closed, no --yes)
Refusal = Literal["declined", "timed_out", "no_input"]


def _no_nul(text: str) -> str:
    # text an agent sends is stored, and PostgreSQL holds no NUL in text or JSON
    if "\x00" in text:
        raise ValueError("text may not contain a NUL character")
    return text


#: free text from the agent that the controller stores
StoredText = Annotated[str, AfterValidator(_no_nul)]


def new_id() -> str:
    """A 96-bit random message id, hex encoded."""
    return os.urandom(12).hex()


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    id: str = Field(default_factory=new_id, min_length=1, max_length=64)
    reply_to: str | None = Field(default=None, max_length=64)


# -- both channels ----------------------------------------------------------------------


class Hello(_Message):
    """Controller → peer, first frame: a fresh challenge to sign."""

    type: Literal["hello"] = "hello"
    challenge: str = Field(min_length=16, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
    controller: str = Field(max_length=200)
    server_time: AwareDatetime


class Error(_Message):
    """Either direction: a refusal or failure, with a machine code and a human message."""

    type: Literal["error"] = "error"
    code: str = Field(max_length=64)
    message: str = Field(max_length=2000)


class End(_Message):
    """Either direction: the session ends (customer left, grant expired, revoked…)."""

    type: Literal["end"] = "end"
    reason: StoredText = Field(max_length=200)
    #: controller → agent: the customer may rate the session before the agent closes
    rate: bool = False


# -- agent channel ----------------------------------------------------------------------


class AgentInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    hostname: StoredText = Field(max_length=255)
    platform: StoredText = Field(max_length=255)
    agent_version: StoredText = Field(max_length=64)


class Join(_Message):
    """Agent → controller: redeem a session code, proving the agent key."""

    type: Literal["join"] = "join"
    code: str = Field(max_length=64)
    public_key: str = Field(min_length=40, max_length=64)
    signature: str = Field(min_length=80, max_length=128)
    agent: AgentInfo


class Resume(_Message):
    """Agent → controller: reconnect to a live session with the same key, no code."""

    type: Literal["resume"] = "resume"
    session_id: str = Field(max_length=64)
    public_key: str = Field(min_length=40, max_length=64)
    signature: str = Field(min_length=80, max_length=128)


class TicketRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(max_length=32)
    title: str = Field(max_length=500)
    customer: str = Field(max_length=200)


class Technician(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(max_length=100)
    role: str = Field(max_length=32)
    level: str | None = Field(default=None, max_length=8)


class ConsentRequest(_Message):
    """Controller → agent: who asks, for which ticket, for what, until when."""

    type: Literal["consent_request"] = "consent_request"
    ticket: TicketRef
    technician: Technician
    scopes: tuple[Scope, ...]
    expires_at: AwareDatetime


class ConsentAnswer(_Message):
    """Agent → controller: the customer's yes or no, and fixes allowed without asking."""

    type: Literal["consent_answer"] = "consent_answer"
    granted: bool
    #: fix ids the customer pre-approved at join (``--allow``) or the managed config lists
    preapproved: tuple[str, ...] = Field(default=(), max_length=64)
    unattended: tuple[str, ...] = Field(default=(), max_length=64)
    #: with a no: whether the customer answered no or the prompt ran out of time; absent
    #: from older agents (the controller records "unknown")
    refusal: Refusal | None = None

    @model_serializer(mode="wrap")
    def _omit_no_refusal(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # a yes carries no refusal field, so a controller that predates it (and refuses
        # unknown fields) still takes every yes
        data: dict[str, Any] = handler(self)
        if data.get("refusal") is None:
            data.pop("refusal", None)
        return data


class SessionStarted(_Message):
    """Controller → agent: the session is live (or live again after a reconnect)."""

    type: Literal["session_started"] = "session_started"
    session_id: str = Field(max_length=64)
    ticket: TicketRef
    scopes: tuple[Scope, ...]
    expires_at: AwareDatetime
    resumed: bool = False


class Ping(_Message):
    """Controller → agent: the trivial request (round-trip measurement, liveness)."""

    type: Literal["ping"] = "ping"


class DiagRequest(_Message):
    """Controller → agent: take a diagnostics snapshot."""

    type: Literal["diag_request"] = "diag_request"
    collectors: tuple[str, ...] | None = None


class FixProposal(_Message):
    """Controller → agent: run one fix from the signed catalogue, if the customer agrees.

    The signed bundle travels with every proposal; the agent verifies it with its pinned
    key and checks the fix's hash before anything runs. There is no other way to run
    anything on the agent.
    """

    type: Literal["fix_proposal"] = "fix_proposal"
    bundle: dict[str, str]
    fix_id: str = Field(max_length=48)
    params: dict[str, str] = Field(default_factory=dict, max_length=32)
    technician: Technician
    ticket: TicketRef


class FixOutput(_Message):
    """Agent → controller: live output of a running fix (``reply_to`` names the proposal)."""

    type: Literal["fix_output"] = "fix_output"
    stream: Literal["stdout", "stderr", "status"]
    data: str = Field(max_length=65_536)


class Result(_Message):
    """Agent → controller: the answer to a request; ``reply_to`` names the request."""

    type: Literal["result"] = "result"
    ok: bool
    data: dict[str, Any] = Field(default_factory=dict)
    error: str | None = Field(default=None, max_length=2000)
    produced_at: AwareDatetime


class Rating(_Message):
    """Agent → controller: the customer's rating as they end the session (optional)."""

    type: Literal["rating"] = "rating"
    score: int = Field(ge=1, le=5)
    comment: StoredText | None = Field(default=None, max_length=1000)


class Ack(_Message):
    """Controller → agent: a result is stored; the agent may drop it from its outbox."""

    type: Literal["ack"] = "ack"
    request_id: str = Field(max_length=64)


# -- API channel ------------------------------------------------------------------------


class Auth(_Message):
    """Technician → controller: an SSH public key and its signature over the challenge."""

    type: Literal["auth"] = "auth"
    public_key: str = Field(max_length=16384)
    signature: str = Field(max_length=16384)


class AuthOk(_Message):
    """Controller → technician: who the controller recognised."""

    type: Literal["auth_ok"] = "auth_ok"
    user: str
    role: str
    level: str | None = None


class Call(_Message):
    """Technician → controller: one API call."""

    type: Literal["call"] = "call"
    method: str = Field(max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)


class Progress(_Message):
    """Controller → technician: progress of a running call (``reply_to`` names it)."""

    type: Literal["progress"] = "progress"
    stage: str = Field(max_length=200)
    #: live output of a running fix, when the call runs one
    stream: Literal["stdout", "stderr", "status"] | None = None
    data: str | None = Field(default=None, max_length=65_536)


class Reply(_Message):
    """Controller → technician: the outcome of a call (``reply_to`` names it)."""

    type: Literal["reply"] = "reply"
    ok: bool
    result: Any = None
    error_code: str | None = None
    error: str | None = None


Message = Annotated[
    Hello
    | Error
    | End
    | Join
    | Resume
    | ConsentRequest
    | ConsentAnswer
    | SessionStarted
    | Ping
    | DiagRequest
    | FixProposal
    | FixOutput
    | Result
    | Rating
    | Ack
    | Auth
    | AuthOk
    | Call
    | Progress
    | Reply,
    Field(discriminator="type"),
]

__all__ = [
    "Ack",
    "AgentInfo",
    "Auth",
    "AuthOk",
    "Call",
    "ConsentAnswer",
    "ConsentRequest",
    "DiagRequest",
    "End",
    "Error",
    "FixOutput",
    "FixProposal",
    "Hello",
    "Join",
    "Message",
    "Ping",
    "Progress",
    "Rating",
    "Reply",
    "Result",
    "Resume",
    "SessionStarted",
    "Technician",
    "TicketRef",
    "datetime",
    "new_id",
]
