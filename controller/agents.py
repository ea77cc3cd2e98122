"""The ``/agent`` endpoint: joins with a session code, consent, resumes, and what a live
session sends (results, fix output, ratings, leaving).

Each connection runs a :class:`~protocol.session.ControllerSession`; this module moves
frames between it, the store, the audit log and the desk, and hands a session that went
live to :class:`~controller.links.Links`, through which API calls reach the agent.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from controller import codes
from controller.guard import AuditThrottle, source_key
from controller.links import AgentLink, Links, send_all, utcnow
from controller.store import CodeRefused, Store
from protocol import codec, jsondata, signing
from protocol.calls.fixes import FixReport
from protocol.errors import ProtocolError
from protocol.machine import Ended, Refused
from protocol.messages import (
    ConsentRequest,
    Result,
    SessionStarted,
    Technician,
    TicketRef,
)
from protocol.session import (
    AuthFailed,
    ConsentDecided,
    ControllerSession,
    JoinRequested,
    OutputReceived,
    RatingReceived,
    ResultReceived,
    ResumeRequested,
)
from protocol.vocabulary import DEFAULT_SCOPES

if TYPE_CHECKING:
    from controller.tickets.desk import Audit, TicketDesk

log = logging.getLogger("helpline.controller")


def ticket_ref(ticket_id: int) -> str:
    return f"T-{ticket_id}"


@dataclass
class GrantSettings:
    """How long a customer's consent lasts (``helpline init --grant``)."""

    grant: timedelta = timedelta(hours=2)


class Door(Protocol):
    """What the server does for every connection, whichever endpoint it reached."""

    def source(self, connection: ServerConnection) -> str: ...

    def logged_in(self, connection: ServerConnection, max_frame: int) -> None: ...

    async def protocol_failure(
        self, connection: ServerConnection, machine_fail: Any, exc: ProtocolError, endpoint: str
    ) -> None: ...

    async def frame_too_large(self, connection: ServerConnection, endpoint: str) -> None: ...


class AgentEndpoint:
    """The agent endpoint: :meth:`handle` serves one connection from hello to close."""

    def __init__(
        self,
        *,
        name: str,
        cert_sha256: str,
        pepper: bytes,
        settings: GrantSettings,
        store: Store,
        links: Links,
        desk: TicketDesk,
        audit: Audit,
        hostile: AuditThrottle,
        door: Door,
    ) -> None:
        self.name = name
        self.cert_sha256 = cert_sha256
        self.pepper = pepper
        self.settings = settings
        self.store = store
        self.links = links
        self.desk = desk
        self.audit = audit
        #: hostile events from one source: the first audited, then one row per interval
        self.hostile = hostile
        self.door = door
        self.limiter = codes.FailureLimiter()

    async def handle(self, connection: ServerConnection) -> None:
        machine = ControllerSession(
            challenge=signing.b64e(os.urandom(24)),
            cert_sha256=self.cert_sha256,
            controller=self.name,
            now=utcnow(),
        )
        link: AgentLink | None = None
        pending_join: dict[str, Any] = {}
        source = self.door.source(connection)
        try:
            await send_all(connection, machine.data_to_send())
            async for frame in connection:
                try:
                    events = machine.receive(codec.decode(frame, codec.AGENT_MAX_FRAME))
                except ProtocolError as exc:
                    await self.door.protocol_failure(connection, machine.fail, exc, "agent")
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
                        await self.links.end_session(link, event.reason, by="agent")
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
                await self.door.frame_too_large(connection, "agent")
        finally:
            if link is not None and self.links.unregister(link):
                link.drop()
                await self.audit(
                    "agent.disconnected",
                    source=source,
                    ticket_id=link.ticket_id,
                    session_id=link.session_id,
                    agent_id=link.agent_id,
                )
                await self.links.fixes_interrupted(link, "the connection to the agent was lost")

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
        self.door.logged_in(connection, codec.AGENT_MAX_FRAME)
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
        self.links.register(link)
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
        self.door.logged_in(connection, codec.AGENT_MAX_FRAME)
        previous = self.links.links.get(session.id)
        if previous is not None:
            self.links.unregister(previous)
            previous.drop()
            await previous.connection.close(CloseCode.NORMAL_CLOSURE, "replaced by a reconnect")
            await self.links.fixes_interrupted(previous, "the agent reconnected (restarted?) first")
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
        self.links.register(link)
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
