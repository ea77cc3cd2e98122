"""Sessions between a ticket and an agent: codes, the list, ending them, a ping."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from protocol.calls.base import Call, Model, Text, TicketId, Time
from protocol.vocabulary import Scope


class SessionInfo(Model):
    id: str
    ticket: TicketId
    agent: str
    technician: str
    scopes: tuple[Scope, ...]
    state: str
    #: whether its agent is connected now
    connected: bool
    created_at: Time
    expires_at: Time
    ended_at: Time | None
    end_reason: str | None


class SessionsList(Call[list[SessionInfo]]):
    method = "sessions.list"
    #: ended sessions too, not only live ones
    all: bool = False


class IssuedCode(Model):
    code: str
    ticket: TicketId
    expires_at: Time
    #: the kinds of agent built on this controller, newest first: their join commands
    agents: tuple[str, ...]


def _code_lifetime(seconds: int) -> int:
    if not 1 <= seconds <= 86_400:
        raise ValueError(f"a code lives from 1 second to 24 hours, not {seconds} s")
    return seconds


class CodeIssue(Call[IssuedCode]):
    method = "code.issue"
    ticket: TicketId
    #: how long the code may be used: 1 s to 24 h
    seconds: Annotated[int, Field(strict=True), AfterValidator(_code_lifetime)] = 600


class EndedSession(Model):
    session: str
    #: the agent was connected and was told at once
    connected: bool


class SessionsEnded(Model):
    ticket: TicketId
    reason: str
    ended: tuple[EndedSession, ...]


class SessionEnd(Call[SessionsEnded]):
    method = "session.end"
    ticket: TicketId
    reason: Annotated[str, Text(200)] | None = None


class Pong(Model):
    ok: bool
    #: the controller-to-agent leg alone, so a slow ping says which half is slow
    agent_ms: float


class AgentPing(Call[Pong]):
    method = "agent.ping"
    ticket: TicketId
