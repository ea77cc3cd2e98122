"""The controller server: one websockets server over TLS 1.3 with two endpoints.

``/agent`` is where customer agents dial in; ``/api`` is where technicians and admins
connect. Both run the sans-I/O machines from :mod:`protocol`; this module only moves
frames between sockets, machines and the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from agent.tls import lean_tls_buffers
from controller import codes
from controller.audit import AuditLog, load_key
from controller.guard import (
    AuditThrottle,
    Limits,
    PreauthGate,
    install_resource_filter,
    raise_open_files_limit,
    source_key,
)
from controller.home import ControllerHome
from controller.store import CodeRefused, Store
from controller.tls import server_context
from protocol import codec, jsondata, signing
from protocol.calls.fixes import FixReport
from protocol.errors import LocalProtocolError, ProtocolError
from protocol.machine import Ended, Refused
from protocol.messages import (
    DEFAULT_SCOPES,
    ConsentRequest,
    DiagRequest,
    FixOutput,
    FixProposal,
    Message,
    Ping,
    Result,
    SessionStarted,
    Technician,
    TicketRef,
)
from protocol.session import (
    AuthFailed,
    ConsentDecided,
    ControllerSession,
    ControllerState,
    JoinRequested,
    OutputReceived,
    RatingReceived,
    ResultReceived,
    ResumeRequested,
)

log = logging.getLogger("helpline.controller")

HEARTBEAT_SECONDS = float(os.environ.get("HELPLINE_HEARTBEAT", "20"))
#: after we end a session (technician, expiry) the customer may still rate it this long;
#: longer than the agent's two rating questions (HELPLINE_RATING_TIMEOUT, 60 s each)
RATING_WINDOW_SECONDS = float(os.environ.get("HELPLINE_RATING_WINDOW", "150"))


def utcnow() -> datetime:
    return datetime.now(UTC)


def ticket_ref(ticket_id: int) -> str:
    return f"T-{ticket_id}"


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


class GatedConnection(ServerConnection):
    """A server connection that gives back its pre-login slot however it ends.

    ``connection_lost`` runs for every accepted connection, including those whose
    websocket handshake failed after ``process_request`` counted them in.
    """

    gate: PreauthGate | None = None
    login_timer: asyncio.TimerHandle | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.login_timer is not None:
            self.login_timer.cancel()
        if self.gate is not None:
            self.gate.release(self)


@dataclass
class GrantSettings:
    grant: timedelta = timedelta(hours=2)


class Controller:
    """Shared state of one controller process."""

    def __init__(
        self,
        home: ControllerHome,
        store: Store,
        *,
        name: str,
        audit_log: AuditLog,
        settings: GrantSettings | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.home = home
        self.store = store
        self.audit_log = audit_log
        self.name = name
        self.settings = settings or GrantSettings()
        self.cert_sha256 = home.pin()
        self.pepper = home.pepper()
        self.limiter = codes.FailureLimiter()
        self.limits = limits or Limits()
        #: connections that have not joined, resumed or authenticated yet
        self.gate = PreauthGate(self.limits.preauth_per_source, self.limits.preauth_total)
        #: hostile events from one source: the first audited, then one row per interval
        self.hostile = AuditThrottle(self.audit, self.limits.report_interval)
        self.links: dict[str, AgentLink] = {}
        #: the most recently connected link per ticket: API calls find agents without a query
        self.by_ticket: dict[int, AgentLink] = {}
        self.api_connections: set[ServerConnection] = set()
        #: connections of ended sessions, closed when their rating window is over
        self._closing: set[asyncio.Task[None]] = set()
        from controller.tickets.desk import TicketDesk

        #: tickets under SLA: lifecycle, SLA monitor, webhook delivery (controller/tickets)
        self.desk = TicketDesk.for_controller(self)
        from controller.api import Api

        self.api = Api(self)

    # -- routing --------------------------------------------------------------------

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        if request.path not in ("/agent", "/api"):
            return connection.respond(404, "helpline serves /agent and /api only\n")
        # Refused here, before a websocket or a handler exists: a flood of connections
        # that never log in costs a TLS handshake each and cannot hold file descriptors.
        source = self.source(connection)
        refusal = self.gate.admit(connection, source)
        if refusal is not None:
            await self.hostile.record(
                "connection.refused",
                source,
                details={"endpoint": request.path, "reason": refusal, "waiting": self.gate.pending},
            )
            response = connection.respond(503, refusal + "\n")
            response.headers["Retry-After"] = "10"
            return response
        if isinstance(connection, GatedConnection):
            connection.gate = self.gate
            connection.login_timer = asyncio.get_running_loop().call_later(
                self.limits.login_timeout, self._login_expired, connection, request.path
            )
        return None

    def logged_in(self, connection: ServerConnection, max_frame: int) -> None:
        """The peer proved who it is: no login deadline, and its full frame limit.

        Until now websockets refused any frame over :data:`codec.PREAUTH_MAX_FRAME` before
        buffering it. The new limit applies from the next frame: the parser reads each
        limit when a frame begins, and a client sends nothing between its login and our
        answer to it.
        """
        if isinstance(connection, GatedConnection) and connection.login_timer is not None:
            connection.login_timer.cancel()
            connection.login_timer = None
        self.gate.release(connection)
        connection.protocol.max_message_size = max_frame

    def _login_expired(self, connection: ServerConnection, endpoint: str) -> None:
        task = asyncio.create_task(self._close_unauthenticated(connection, endpoint))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_unauthenticated(self, connection: ServerConnection, endpoint: str) -> None:
        """Close a connection that did not log in within the deadline."""
        self.gate.release(connection)
        source = self.source(connection)  # gone once the transport is
        seconds = self.limits.login_timeout
        try:
            # a peer that ignores the close frame holds its descriptor no longer than this
            async with asyncio.timeout(2.0):
                await connection.close(CloseCode.POLICY_VIOLATION, f"log in within {seconds:g} s")
        except TimeoutError:
            connection.transport.abort()
        await self.hostile.record(
            "connection.timed_out",
            source,
            details={"endpoint": endpoint, "login_timeout_s": seconds},
        )

    async def handle(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        if connection.request.path == "/agent":
            await self.handle_agent(connection)
        else:
            self.api_connections.add(connection)
            try:
                await self.api.handle(connection)
            finally:
                self.api_connections.discard(connection)

    async def audit(self, type: str, **fields: Any) -> None:
        """Record a security-relevant event; returns once it is durable."""
        await self.audit_log.append(type, **fields)

    @staticmethod
    def source(connection: ServerConnection) -> str:
        address = connection.remote_address
        return str(address[0]) if address else "unknown"

    async def protocol_failure(
        self, connection: ServerConnection, machine_fail: Any, exc: ProtocolError, endpoint: str
    ) -> None:
        """Answer a broken frame: error to the peer, audit, close with 1002."""
        machine_fail(exc)
        await self.hostile.record(
            "protocol.error",
            self.source(connection),
            details={"endpoint": endpoint, "code": exc.code, "reason": exc.reason},
        )

    async def frame_too_large(self, connection: ServerConnection, endpoint: str) -> None:
        """Audit a frame websockets refused with 1009 before buffering it."""
        limit = connection.protocol.max_message_size
        await self.hostile.record(
            "protocol.error",
            self.source(connection),
            details={
                "endpoint": endpoint,
                "code": "frame_too_large",
                "reason": f"a frame over {limit} bytes",
            },
        )

    # -- agent endpoint -------------------------------------------------------------

    async def handle_agent(self, connection: ServerConnection) -> None:
        machine = ControllerSession(
            challenge=signing.b64e(os.urandom(24)),
            cert_sha256=self.cert_sha256,
            controller=self.name,
            now=utcnow(),
        )
        link: AgentLink | None = None
        pending_join: dict[str, Any] = {}
        source = self.source(connection)
        try:
            await send_all(connection, machine.data_to_send())
            async for frame in connection:
                try:
                    events = machine.receive(codec.decode(frame, codec.AGENT_MAX_FRAME))
                except ProtocolError as exc:
                    await self.protocol_failure(connection, machine.fail, exc, "agent")
                    await send_all(connection, machine.data_to_send())
                    await connection.close(CloseCode.PROTOCOL_ERROR, exc.code)
                    return
                for event in events:
                    if isinstance(event, JoinRequested):
                        await self._on_join(machine, connection, event, source, pending_join)
                    elif isinstance(event, ConsentDecided):
                        link = await self._on_consent(machine, connection, event, pending_join)
                    elif isinstance(event, ResumeRequested):
                        link = await self._on_resume(machine, connection, event, source)
                    elif isinstance(event, RatingReceived) and link is not None:
                        rating = event.rating
                        await self.desk.rating(
                            link.ticket_id, link.session_id, rating.score, rating.comment, None
                        )
                    elif isinstance(event, ResultReceived) and link is not None:
                        await self._on_result(link, event.result)
                    elif isinstance(event, OutputReceived) and link is not None:
                        running = link.running.get(event.output.reply_to or "")
                        if running is not None:
                            running.add(event.output)
                        listener = link.outputs.get(event.output.reply_to or "")
                        if listener is not None:
                            await listener(event.output)
                    elif isinstance(event, Ended) and link is not None:
                        # the customer ended it: their consent is withdrawn from now on
                        await self.audit(
                            "consent.revoked",
                            source=source,
                            ticket_id=link.ticket_id,
                            session_id=link.session_id,
                            agent_id=link.agent_id,
                            details={"reason": event.reason},
                        )
                        await self.end_session(link, event.reason, by="agent")
                        link = None
                    elif isinstance(event, AuthFailed):
                        await self._on_auth_failed(event, source)
                    elif isinstance(event, Refused):
                        log.info(
                            "agent %s reported error %s: %s", source, event.code, event.message
                        )
                await send_all(connection, machine.data_to_send())
                if machine.finished:
                    await connection.close()
                    return
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
                await self.frame_too_large(connection, "agent")
        finally:
            if link is not None and self.unregister(link):
                link.drop()
                await self.audit(
                    "agent.disconnected",
                    source=source,
                    ticket_id=link.ticket_id,
                    session_id=link.session_id,
                    agent_id=link.agent_id,
                )
                await self.fixes_interrupted(link, "the connection to the agent was lost")

    async def _on_auth_failed(self, event: AuthFailed, source: str) -> None:
        """A join or resume whose signature did not verify: replayed, relayed or forged."""
        try:
            agent_id: str | None = signing.agent_id(event.public_key)
        except (ValueError, ProtocolError):  # a key that is not even base64 names no agent
            agent_id = None
        await self.hostile.record(
            "agent.auth_failed",
            source,
            agent_id=agent_id,
            session_id=event.session_id,
            details={"message": event.kind, "reason": event.reason},
        )

    async def _on_join(
        self,
        machine: ControllerSession,
        connection: ServerConnection,
        event: JoinRequested,
        source: str,
        pending: dict[str, Any],
    ) -> None:
        agent_id = signing.agent_id(event.public_key)
        key = source_key(source)
        blocked = await self.limiter.begin(key)
        if blocked:
            await self.hostile.record("code.rate_limited", source, agent_id=agent_id)
            machine.refuse("rate_limited", blocked)
            return
        canonical = codes.normalise(event.code)
        now = utcnow()
        failed = True
        try:
            if canonical is None:
                raise CodeRefused("unknown")
            code = await self.store.consume_code(codes.code_hash(self.pepper, canonical), now)
            failed = False
        except CodeRefused as exc:
            await self.audit(
                "code.failed", source=source, agent_id=agent_id, details={"reason": exc.reason}
            )
            machine.refuse("code_" + exc.reason, CODE_MESSAGES[exc.reason])
            return
        finally:
            # only a wrong code counts against the address; one being checked held a slot
            self.limiter.end(key, failed=failed)
        # a valid code is this agent's login: the customer may take their time to consent
        self.logged_in(connection, codec.AGENT_MAX_FRAME)
        ticket = await self.store.get_ticket(code.ticket_id)
        technician = await self.store.user_by_name(code.issued_by)
        assert ticket is not None
        await self.store.upsert_agent(
            agent_id, event.public_key, event.agent.hostname, event.agent.platform, now
        )
        await self.audit(
            "code.used",
            source=source,
            ticket_id=ticket.id,
            agent_id=agent_id,
            actor=code.issued_by,
            details={"hostname": event.agent.hostname, "platform": event.agent.platform},
        )
        expires_at = now + self.settings.grant
        pending.update(
            ticket=ticket,
            agent_id=agent_id,
            technician=code.issued_by,
            expires_at=expires_at,
            source=source,
        )
        machine.ask_consent(
            ConsentRequest(
                ticket=TicketRef(
                    id=ticket_ref(ticket.id), title=ticket.title, customer=ticket.customer
                ),
                technician=Technician(
                    name=code.issued_by,
                    role=technician.role if technician else "technician",
                    level=technician.level if technician else None,
                ),
                scopes=DEFAULT_SCOPES,
                expires_at=expires_at,
            )
        )
        await self.audit(
            "consent.asked",
            source=source,
            ticket_id=ticket.id,
            agent_id=agent_id,
            actor=code.issued_by,
            details={"scopes": list(DEFAULT_SCOPES)},
        )

    async def _on_consent(
        self,
        machine: ControllerSession,
        connection: ServerConnection,
        event: ConsentDecided,
        pending: dict[str, Any],
    ) -> AgentLink | None:
        ticket = pending["ticket"]
        common = {
            "source": pending["source"],
            "ticket_id": ticket.id,
            "agent_id": pending["agent_id"],
            "actor": pending["technician"],
        }
        if not event.granted:
            # said no, or nobody answered in time (an agent that predates the field: unknown)
            answer = event.refusal or "unknown"
            await self.audit("consent.refused", **common, details={"reason": answer})
            return None
        session_id = "S-" + os.urandom(8).hex()
        now = utcnow()
        await self.store.create_session(
            session_id,
            ticket.id,
            pending["agent_id"],
            pending["technician"],
            DEFAULT_SCOPES,
            now,
            pending["expires_at"],
        )
        await self.audit(
            "consent.given",
            session_id=session_id,
            **common,
            details={
                "scopes": list(DEFAULT_SCOPES),
                "expires_at": pending["expires_at"].isoformat(),
                # fixes the customer allowed without asking, and a managed config's
                # unattended list: explicit, and on the record at every join
                "preapproved": list(event.preapproved),
                "unattended": list(event.unattended),
            },
        )
        machine.start(
            SessionStarted(
                session_id=session_id,
                ticket=TicketRef(
                    id=ticket_ref(ticket.id), title=ticket.title, customer=ticket.customer
                ),
                scopes=DEFAULT_SCOPES,
                expires_at=pending["expires_at"],
            )
        )
        link = AgentLink(
            session_id, ticket.id, pending["agent_id"], connection, machine, pending["expires_at"]
        )
        self.register(link)
        await self.audit("agent.joined", session_id=session_id, **common)
        await self.desk.session_started(ticket.id, session_id, pending["technician"])
        return link

    async def _on_resume(
        self,
        machine: ControllerSession,
        connection: ServerConnection,
        event: ResumeRequested,
        source: str,
    ) -> AgentLink | None:
        agent_id = signing.agent_id(event.public_key)
        session, ticket = await self.store.get_session_and_ticket(event.session_id)
        now = utcnow()
        refusal: tuple[str, str] | None = None
        if session is None:
            refusal = ("session_unknown", "this controller has no such session")
        elif session.agent_id != agent_id:
            refusal = (
                "key_mismatch",
                "this agent's key does not match the one that joined the session",
            )
        elif session.state != "live":
            refusal = ("session_ended", f"the session has ended ({session.end_reason})")
        elif session.expires_at <= now:
            await self.store.end_session(session.id, "grant expired", now)
            refusal = ("grant_expired", "the customer's grant has expired; ask for a new code")
        if refusal is not None or session is None:
            assert refusal is not None
            await self.hostile.record(
                "agent.resume_refused",
                source,
                agent_id=agent_id,
                session_id=event.session_id,
                ticket_id=session.ticket_id if session else None,
                details={"reason": refusal[0]},
            )
            machine.refuse(*refusal)
            return None
        assert ticket is not None
        self.logged_in(connection, codec.AGENT_MAX_FRAME)
        previous = self.links.get(session.id)
        if previous is not None:
            self.unregister(previous)
            previous.drop()
            await previous.connection.close(CloseCode.NORMAL_CLOSURE, "replaced by a reconnect")
            await self.fixes_interrupted(previous, "the agent reconnected (restarted?) first")
        machine.start(
            SessionStarted(
                session_id=session.id,
                ticket=TicketRef(
                    id=ticket_ref(ticket.id), title=ticket.title, customer=ticket.customer
                ),
                scopes=DEFAULT_SCOPES,
                expires_at=session.expires_at,
                resumed=True,
            )
        )
        link = AgentLink(session.id, ticket.id, agent_id, connection, machine, session.expires_at)
        self.register(link)
        await self.audit(
            "agent.reconnected",
            source=source,
            agent_id=agent_id,
            session_id=session.id,
            ticket_id=ticket.id,
        )
        return link

    async def _on_result(self, link: AgentLink, result: Result) -> None:
        request_id = result.reply_to
        assert request_id is not None
        link.running.pop(request_id, None)
        future = link.pending.get(request_id)
        if request_id in link.pings:
            if future is not None and not future.done():
                future.set_result(result)
            return
        request = await self.store.get_request(request_id)
        if request is not None and request.session_id != link.session_id:
            # a result may only answer a request made in its own session: never let one
            # agent write onto another customer's ticket
            await self.audit(
                "result.refused",
                session_id=link.session_id,
                ticket_id=link.ticket_id,
                agent_id=link.agent_id,
                details={"request_id": request_id, "reason": "request of another session"},
            )
            link.machine.ack(request_id)
            await link.flush()
            return
        unstorable = jsondata.problem(result.data)
        if unstorable is not None and request is not None:
            # refused as data, not as a frame: the request gets a failed result on its
            # ticket (and the waiting call its answer), the agent its ack, so the outbox
            # does not redeliver it for ever
            await self.audit(
                "result.refused",
                session_id=link.session_id,
                ticket_id=link.ticket_id,
                agent_id=link.agent_id,
                details={"request_id": request_id, "reason": unstorable},
            )
            result = Result(
                id=result.id,
                reply_to=request_id,
                ok=False,
                error=f"the agent's result was refused: {unstorable}",
                produced_at=result.produced_at,
            )
        try:
            attachment, fresh = await self.store.attach_result(
                request_id, result.ok, result.data, result.produced_at, utcnow()
            )
        except KeyError:
            log.warning("result for unknown request %s from %s", request_id, link.agent_id)
        else:
            if fresh and unstorable is None:
                where = {
                    "session_id": link.session_id,
                    "ticket_id": link.ticket_id,
                    "agent_id": link.agent_id,
                }
                base = {"request_id": request_id, "attachment": attachment.id}
                for type_, details in result_events(attachment.kind, result):
                    await self.audit(type_, **where, details={**base, **details})
        link.machine.ack(request_id)
        await link.flush()
        if future is not None and not future.done():
            future.set_result(result)

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

    async def report_hostile(self) -> None:
        """Write the aggregated hostile-event rows as their intervals end."""
        while True:
            await asyncio.sleep(self.limits.report_interval / 4)
            try:
                await self.hostile.flush(time.monotonic())
            except Exception:  # a failed write is retried next time, never ends the task
                log.exception("cannot write the aggregated audit rows; retrying")

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


def result_events(kind: str, result: Result) -> list[tuple[str, dict[str, Any]]]:
    """The audit events a stored result stands for."""
    if kind != "fix":
        return [("diag.result", {"ok": result.ok})]
    report = FixReport.read(result.data)
    if report is None:
        # stored as sent; the record says it could not be read rather than guess
        reason = result.error or "the agent's report does not read as a fix report"
        return [("fix.finished", {"status": None, "reason": reason})]
    fix = {"fix": report.fix, "sha256": report.sha256}
    if report.status == "refused":
        code = report.code
        kind_of = "fix.declined" if code == "declined" else "fix.refused"
        return [(kind_of, {**fix, "code": code, "reason": result.error})]
    return [
        ("fix.approved", {**fix, "consent": report.consent, "params": report.params}),
        (
            "fix.finished",
            {
                **fix,
                "status": report.status,
                "exit_code": report.exit_code,
                "duration_ms": report.duration_ms,
                "truncated": report.truncated.model_dump() if report.truncated else None,
            },
        ),
    ]


CODE_MESSAGES = {
    "unknown": "this session code is not valid: check it with your technician",
    "expired": "this session code has expired: ask your technician for a new one",
    "used": "this session code was already used: ask your technician for a new one",
}


async def run_server(
    home: ControllerHome, listen: tuple[str, int] | None = None, ready: asyncio.Event | None = None
) -> None:
    """Serve until SIGINT/SIGTERM; migrate the store first."""
    lean_tls_buffers()  # ≈50 KB per idle agent instead of ≈290 KB
    config = home.load()
    lock = home.lock_for_serving()  # held until this process exits
    before, open_files = raise_open_files_limit()
    limits = Limits.from_env(open_files)
    log.info(
        "open files limit %d (raised from %d); at most %d connections may wait to log in "
        "(%d per address), each for %g s",
        open_files,
        before,
        limits.preauth_total,
        limits.preauth_per_source,
        limits.login_timeout,
    )
    install_resource_filter(limits.report_interval)
    store = await Store.open(config.database)
    await store.migrate()
    audit_log = AuditLog(store, load_key(home.audit_key_path), home.audit_head_path)
    await audit_log.start()
    if audit_log.halted is not None:
        # serve anyway (a tampered log must not become an outage), but nobody may miss it
        print(
            f"helpline: AUDIT LOG TAMPERED: {audit_log.halted}\n"
            "helpline: no checkpoint will be signed until an admin checks the log "
            "(`helpline audit verify`) and accepts it (`helpline audit accept --reason …`)",
            file=sys.stderr,
            flush=True,
        )
    controller = Controller(
        home,
        store,
        name=config.name,
        audit_log=audit_log,
        settings=GrantSettings(grant=timedelta(seconds=config.grant_seconds)),
        limits=limits,
    )
    host, port = listen or (config.listen_host, config.listen_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server: Server
    async with serve(
        controller.handle,
        host,
        port,
        ssl=server_context(home.cert_path, home.key_path),
        process_request=controller.process_request,
        create_connection=GatedConnection,
        # until a peer logs in; Controller.logged_in raises it to its endpoint's limit
        max_size=codec.PREAUTH_MAX_FRAME,
        ping_interval=HEARTBEAT_SECONDS,
        ping_timeout=HEARTBEAT_SECONDS,
        server_header="helpline",
        compression=None,  # small JSON frames; see agent/connection.py
    ) as server:
        bound = [sock.getsockname() for sock in server.sockets]
        log.info("helpline controller %s listening on %s", config.name, bound)
        print(f"helpline: serving on wss://{host}:{port} (agents dial {config.url})", flush=True)
        expiry = asyncio.create_task(controller.expire_grants())
        reports = asyncio.create_task(controller.report_hostile())
        await controller.desk.start()
        await stop.wait()
        expiry.cancel()
        reports.cancel()
        await controller.desk.stop()
    await controller.hostile.flush()  # counts of the last interval are not lost
    await audit_log.close()  # the last checkpoint covers everything up to shutdown
    await store.close()
    lock.close()
