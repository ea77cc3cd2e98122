"""The live agent connections: one link per connected session, by session and by ticket.

A link is what API calls reach an agent through (:meth:`AgentLink.request`). ``Links``
keeps the index, and ends sessions from either side: the agent leaving or its connection
dropping (the endpoint, :mod:`controller.agents`), or ours, a technician or the grant
running out, after which the connection stays open for the customer's rating.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from controller.store import Store
from protocol import codec
from protocol.errors import LocalProtocolError
from protocol.messages import DiagRequest, FixOutput, FixProposal, Message, Ping, Result
from protocol.session import ControllerSession, ControllerState

if TYPE_CHECKING:
    from controller.tickets.desk import Audit, TicketDesk

#: after we end a session (technician, expiry) the customer may still rate it this long;
#: longer than the agent's two rating questions (HELPLINE_RATING_TIMEOUT, 60 s each)
RATING_WINDOW_SECONDS = float(os.environ.get("HELPLINE_RATING_WINDOW", "150"))


def utcnow() -> datetime:
    return datetime.now(UTC)


#: how much of a fix's live output the controller keeps for the ticket in case the fix
#: never reports a result (the agent's own cap on a fix's output is the same order)
FIX_OUTPUT_KEPT = 64 * 1024


@dataclass
class RunningFix:
    """A fix proposed over a link whose result has not arrived: what it printed so far."""

    fix_id: str
    technician: str
    output: list[dict[str, str]] = field(default_factory=list)
    size: int = 0
    truncated: bool = False

    def add(self, output: FixOutput) -> None:
        if self.size + len(output.data) > FIX_OUTPUT_KEPT:
            self.truncated = True
            return
        self.size += len(output.data)
        # PostgreSQL text cannot hold NUL
        self.output.append({"stream": output.stream, "data": output.data.replace("\x00", "\ufffd")})


@dataclass
class AgentLink:
    """One connected agent with a live session."""

    session_id: str
    ticket_id: int
    agent_id: str
    connection: ServerConnection
    machine: ControllerSession
    expires_at: datetime
    pending: dict[str, asyncio.Future[Result]] = field(default_factory=dict)
    #: ids of in-flight pings: answered in memory, never stored on the ticket
    pings: set[str] = field(default_factory=set)
    #: live output of running fixes goes to whoever proposed them
    outputs: dict[str, Callable[[FixOutput], Awaitable[None]]] = field(default_factory=dict)
    #: fixes in flight, kept apart from ``pending``: they outlive the technician's call, so
    #: a fix that ends without a result is recorded even if nobody is waiting for it
    running: dict[str, RunningFix] = field(default_factory=dict)

    async def flush(self) -> None:
        await send_all(self.connection, self.machine.data_to_send())

    async def request(
        self,
        message: Ping | DiagRequest | FixProposal,
        wait_seconds: float,
        on_output: Callable[[FixOutput], Awaitable[None]] | None = None,
    ) -> Result:
        """Send a request and wait for its result (or the link dropping)."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self.pending[message.id] = future
        if isinstance(message, Ping):
            self.pings.add(message.id)
        if on_output is not None:
            self.outputs[message.id] = on_output
        if isinstance(message, FixProposal):
            self.running[message.id] = RunningFix(message.fix_id, message.technician.name)
        try:
            try:
                self.machine.send_request(message)
                await self.flush()
            except (LocalProtocolError, ConnectionClosed):
                # the session failed or the socket closed before the link was dropped
                raise ConnectionError("the agent disconnected") from None
            async with asyncio.timeout(wait_seconds):
                return await future
        finally:
            self.pending.pop(message.id, None)
            self.pings.discard(message.id)
            self.outputs.pop(message.id, None)

    def drop(self) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_exception(ConnectionError("the agent disconnected"))


async def send_all(connection: ServerConnection, messages: Iterable[Message]) -> None:
    for message in messages:
        await connection.send(codec.encode(message))


class Links:
    """The live links, by session and by ticket, and how their sessions end."""

    def __init__(self, store: Store, audit: Audit, desk: TicketDesk) -> None:
        self.store = store
        self.audit = audit
        self.desk = desk
        self.links: dict[str, AgentLink] = {}
        #: the most recently connected link per ticket: API calls find agents without a query
        self.by_ticket: dict[int, AgentLink] = {}
        #: connections of ended sessions, closed when their rating window is over
        self._closing: set[asyncio.Task[None]] = set()

    def __contains__(self, session_id: object) -> bool:
        """Whether the session has a live link now."""
        return session_id in self.links

    def register(self, link: AgentLink) -> None:
        """Index a link that just went live."""
        self.links[link.session_id] = link
        self.by_ticket[link.ticket_id] = link

    def unregister(self, link: AgentLink) -> bool:
        """Forget ``link`` if it is still the current one; True when it was."""
        if self.links.get(link.session_id) is not link:
            return False
        del self.links[link.session_id]
        if self.by_ticket.get(link.ticket_id) is link:
            del self.by_ticket[link.ticket_id]
            # another agent may still serve the same ticket
            for other in self.links.values():
                if other.ticket_id == link.ticket_id:
                    self.by_ticket[link.ticket_id] = other
        return True

    def link_for_ticket(self, ticket_id: int) -> AgentLink | None:
        """The most recently connected live link on a ticket."""
        return self.by_ticket.get(ticket_id)

    async def end_session(self, link: AgentLink, reason: str, *, by: str) -> None:
        """Close a live session for good (customer left, expiry, technician)."""
        self.unregister(link)
        link.drop()
        await self.store.end_session(link.session_id, reason, utcnow())
        await self.audit(
            "agent.left" if by == "agent" else "session.ended",
            session_id=link.session_id,
            ticket_id=link.ticket_id,
            agent_id=link.agent_id,
            actor=by,
            details={"reason": reason},
        )
        await self.fixes_interrupted(link, f"the session ended: {reason}")

    async def fixes_interrupted(self, link: AgentLink, reason: str) -> None:
        """Record on the ticket every fix of ``link`` that ended without a result.

        The output it streamed goes on the ticket's timeline. Should the agent deliver the
        real result later (from its outbox, after a resume), it is attached as usual: this
        record is a timeline event, not the request's attachment.
        """
        running, link.running = link.running, {}
        for request_id, fix in running.items():
            await self.audit(
                "fix.interrupted",
                session_id=link.session_id,
                ticket_id=link.ticket_id,
                agent_id=link.agent_id,
                actor=fix.technician,
                details={
                    "request_id": request_id,
                    "fix": fix.fix_id,
                    "reason": reason,
                    "output_chunks": len(fix.output),
                    "truncated": fix.truncated,
                },
            )
            await self.desk.fix_interrupted(
                link.ticket_id,
                {
                    "request": request_id,
                    "fix": fix.fix_id,
                    "session": link.session_id,
                    "reason": reason,
                    "output": fix.output,
                    "truncated": fix.truncated,
                },
                fix.technician,
            )

    async def finish_session(self, link: AgentLink, reason: str, *, by: str) -> None:
        """End a live session from our side (a technician, the grant running out).

        The session is over at once: no request reaches the agent any more. The agent is
        told with ``end(rate=true)`` and the connection stays open for the customer's
        rating (or the agent's ``end``) for up to :data:`RATING_WINDOW_SECONDS`.
        """
        if link.machine.state is ControllerState.LIVE:
            link.machine.end_inviting_rating(reason)
            with contextlib.suppress(ConnectionClosed):
                await link.flush()
        task = asyncio.create_task(self._close_after(link.connection, RATING_WINDOW_SECONDS))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        await self.end_session(link, reason, by=by)

    @staticmethod
    async def _close_after(connection: ServerConnection, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(connection.wait_closed(), seconds)
        await connection.close(CloseCode.NORMAL_CLOSURE, "session ended")

    async def expire_grants(self) -> None:
        """End sessions whose grant ran out; runs for the life of the server."""
        while True:
            await asyncio.sleep(1.0)
            now = utcnow()
            for link in [link for link in self.links.values() if link.expires_at <= now]:
                await self.finish_session(link, "grant expired", by="controller")
