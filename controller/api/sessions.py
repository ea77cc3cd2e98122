"""Sessions: issuing a code for a ticket, listing and ending sessions, pinging an agent."""

from __future__ import annotations

import time
from datetime import timedelta

from controller import codes
from controller.api.registry import ANYONE, ROUTES, WORKERS, ApiError, Context, utcnow
from controller.store import Session
from protocol.calls.sessions import (
    AgentPing,
    CodeIssue,
    EndedSession,
    IssuedCode,
    Pong,
    SessionEnd,
    SessionInfo,
    SessionsEnded,
    SessionsList,
)
from protocol.errors import ErrorCode
from protocol.messages import Ping


def session_info(session: Session, connected: bool) -> SessionInfo:
    return SessionInfo(
        id=session.id,
        ticket=session.ticket_id,
        agent=session.agent_id,
        technician=session.technician,
        scopes=session.scopes,
        state=session.state,
        connected=connected,
        created_at=session.created_at,
        expires_at=session.expires_at,
        ended_at=session.ended_at,
        end_reason=session.end_reason,
    )


@ROUTES.handler(CodeIssue, roles=WORKERS)
async def code_issue(ctx: Context, call: CodeIssue) -> IssuedCode:
    from controller.artefacts import kinds

    ticket = await ctx.ticket(call.ticket)
    if ticket.state == "closed":
        # a session would put work on a ticket whose record (and KPIs) are final
        raise ApiError(
            ErrorCode.CONFLICT,
            f"T-{ticket.id} is closed and closed tickets are final: open a new ticket "
            f"with `--link follows:T-{ticket.id}` and issue the code for that one",
        )
    code = codes.new_code()
    canonical = codes.normalise(code)
    assert canonical is not None
    now = utcnow()
    expires_at = now + timedelta(seconds=call.seconds)
    await ctx.store.add_code(
        codes.code_hash(ctx.services.pepper, canonical),
        ticket.id,
        ctx.caller.user.name,
        now,
        expires_at,
    )
    await ctx.audit(
        "code.issued", ticket_id=ticket.id, details={"expires_at": expires_at.isoformat()}
    )
    return IssuedCode(
        code=code, ticket=ticket.id, expires_at=expires_at, agents=kinds(ctx.services.home)
    )


@ROUTES.handler(SessionsList, roles=ANYONE)
async def sessions_list(ctx: Context, call: SessionsList) -> list[SessionInfo]:
    live = ctx.services.links.links
    sessions = await ctx.store.list_sessions(live_only=not call.all)
    return [session_info(s, s.id in live) for s in sessions]


@ROUTES.handler(SessionEnd, roles=WORKERS)
async def session_end(ctx: Context, call: SessionEnd) -> SessionsEnded:
    """End every open session on a ticket: the work is done, or consent should stop.

    A connected agent is told at once and its customer may rate the session; a session
    whose agent is offline is ended in the store, so it can never resume.
    """
    ticket = await ctx.ticket(call.ticket)
    by = ctx.caller.user.name
    reason = call.reason or f"ended by {by}"
    links = ctx.services.links
    ended: list[EndedSession] = []
    for link in [x for x in links.links.values() if x.ticket_id == ticket.id]:
        await links.finish_session(link, reason, by=by)
        ended.append(EndedSession(session=link.session_id, connected=True))
    done = {entry.session for entry in ended}
    for session in await ctx.store.list_sessions(live_only=True):
        if session.ticket_id != ticket.id or session.id in done:
            continue
        await ctx.store.end_session(session.id, reason, utcnow())
        await ctx.audit(
            "session.ended",
            session_id=session.id,
            ticket_id=ticket.id,
            agent_id=session.agent_id,
            details={"reason": reason, "connected": False},
        )
        ended.append(EndedSession(session=session.id, connected=False))
    if not ended:
        raise ApiError(ErrorCode.NOT_FOUND, f"T-{ticket.id} has no open session")
    return SessionsEnded(ticket=ticket.id, reason=reason, ended=tuple(ended))


@ROUTES.handler(AgentPing, roles=WORKERS)
async def agent_ping(ctx: Context, call: AgentPing) -> Pong:
    # the hot path: no query unless there is no agent to ask
    link = ctx.services.links.link_for_ticket(call.ticket)
    if link is None:
        await ctx.ticket(call.ticket)
        raise ApiError(ErrorCode.NO_AGENT, f"no agent is connected to T-{call.ticket}")
    started = time.monotonic()
    result = await link.request(Ping(), 10.0)
    return Pong(ok=result.ok, agent_ms=round((time.monotonic() - started) * 1000, 3))
