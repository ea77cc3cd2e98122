"""Agents, the sessions customers grant them, requests sent to them and their results."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from controller.store.atomic import atomic_methods
from controller.store.engine import StoreBase, utc
from controller.store.schema import AgentRow, AttachmentRow, RequestRow, SessionRow, TicketRow
from controller.store.tickets import Ticket, ticket_from


@dataclass(frozen=True)
class Agent:
    id: str
    public_key: str
    hostname: str
    platform: str
    first_seen: datetime
    last_seen: datetime


@dataclass(frozen=True)
class Session:
    id: str
    ticket_id: int
    agent_id: str
    technician: str
    scopes: tuple[str, ...]
    state: str
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    end_reason: str | None


@dataclass(frozen=True)
class Request:
    id: str
    session_id: str
    ticket_id: int
    kind: str
    requested_by: str
    created_at: datetime
    answered_at: datetime | None


@dataclass(frozen=True)
class Attachment:
    id: int
    ticket_id: int
    session_id: str | None
    request_id: str | None
    kind: str
    ok: bool
    data: dict[str, Any]
    created_at: datetime
    produced_at: datetime | None


@atomic_methods
class SessionStore(StoreBase):
    """Agents, sessions, requests and attachments (part of ``Store``)."""

    # agents

    async def upsert_agent(
        self, agent_id: str, public_key: str, hostname: str, platform: str, now: datetime
    ) -> Agent:
        """Record an agent's first or latest appearance; its key may never change."""
        async with self._write() as s, s.begin():
            row = await s.get(AgentRow, agent_id)
            if row is None:
                fresh = AgentRow(
                    id=agent_id,
                    public_key=public_key,
                    hostname=hostname,
                    platform=platform,
                    first_seen=now,
                    last_seen=now,
                )
                try:
                    async with s.begin_nested():
                        s.add(fresh)
                except IntegrityError:
                    # Another connection inserted it first; fall through to the update.
                    row = await s.scalar(select(AgentRow).where(AgentRow.id == agent_id))
                    if row is None:
                        raise
                else:
                    return _agent(fresh)
            if row.public_key != public_key:
                # The id names the key; a different key under the same id is an impostor.
                raise ValueError(f"agent {agent_id} is known with a different public key")
            row.hostname = hostname
            row.platform = platform
            row.last_seen = max(row.last_seen, now)
            await s.flush()
            return _agent(row)

    async def get_agent(self, agent_id: str) -> Agent | None:
        """The agent with this id, if any."""
        async with self._read() as s:
            row = await s.get(AgentRow, agent_id)
            return None if row is None else _agent(row)

    # sessions

    async def create_session(
        self,
        session_id: str,
        ticket_id: int,
        agent_id: str,
        technician: str,
        scopes: Iterable[str],
        now: datetime,
        expires_at: datetime,
    ) -> Session:
        """Record a session the customer has granted; it starts ``live``."""
        row = SessionRow(
            id=session_id,
            ticket_id=ticket_id,
            agent_id=agent_id,
            technician=technician,
            scopes=list(scopes),
            state="live",
            created_at=now,
            expires_at=expires_at,
        )
        try:
            async with self._write() as s, s.begin():
                if await s.get(TicketRow, ticket_id) is None:
                    raise ValueError(f"no ticket T-{ticket_id}")
                if await s.get(AgentRow, agent_id) is None:
                    raise ValueError(f"no agent {agent_id}")
                s.add(row)
        except IntegrityError as exc:
            raise ValueError(f"session {session_id} already exists") from exc
        return _session(row)

    async def get_session(self, session_id: str) -> Session | None:
        """The session with this id, if any."""
        async with self._read() as s:
            row = await s.get(SessionRow, session_id)
            return None if row is None else _session(row)

    async def get_session_and_ticket(
        self, session_id: str
    ) -> tuple[Session, Ticket] | tuple[None, None]:
        """A session and its ticket in one query: the reconnect path, which an outage
        makes run for every agent at once."""
        query = (
            select(SessionRow, TicketRow)
            .join(TicketRow, TicketRow.id == SessionRow.ticket_id)
            .where(SessionRow.id == session_id)
        )
        async with self._read() as s:
            found = (await s.execute(query)).first()
            if found is None:
                return None, None
            return _session(found[0]), ticket_from(found[1])

    async def list_sessions(self, live_only: bool = True) -> list[Session]:
        """Sessions in creation order; only live ones unless told otherwise."""
        query = select(SessionRow).order_by(SessionRow.created_at, SessionRow.id)
        if live_only:
            query = query.where(SessionRow.state == "live")
        async with self._read() as s:
            return [_session(row) for row in await s.scalars(query)]

    async def sessions_for_ticket(self, ticket_id: int) -> list[Session]:
        """Every session of a ticket, in creation order."""
        query = (
            select(SessionRow)
            .where(SessionRow.ticket_id == ticket_id)
            .order_by(SessionRow.created_at, SessionRow.id)
        )
        async with self._read() as s:
            return [_session(row) for row in await s.scalars(query)]

    async def end_session(self, session_id: str, reason: str, now: datetime) -> Session | None:
        """End a live session; an ended one is returned unchanged, an unknown one as None."""
        async with self._write() as s, s.begin():
            # The first reason to end a session is the one that stays on record.
            row = await s.scalar(
                update(SessionRow)
                .where(SessionRow.id == session_id, SessionRow.state == "live")
                .values(state="ended", ended_at=now, end_reason=reason)
                .returning(SessionRow)
            )
            if row is None:
                row = await s.get(SessionRow, session_id)
            return None if row is None else _session(row)

    # requests and their results

    async def add_request(
        self,
        request_id: str,
        session_id: str,
        ticket_id: int,
        kind: str,
        requested_by: str,
        now: datetime,
    ) -> Request:
        """Record a request sent to an agent, so its result finds the ticket later."""
        row = RequestRow(
            id=request_id,
            session_id=session_id,
            ticket_id=ticket_id,
            kind=kind,
            requested_by=requested_by,
            created_at=now,
        )
        try:
            async with self._write() as s, s.begin():
                if await s.get(SessionRow, session_id) is None:
                    raise ValueError(f"no session {session_id}")
                s.add(row)
        except IntegrityError as exc:
            raise ValueError(f"request {request_id} already exists or names no ticket") from exc
        return _request(row)

    async def get_request(self, request_id: str) -> Request | None:
        """The request with this id, if any."""
        async with self._read() as s:
            row = await s.get(RequestRow, request_id)
            return None if row is None else _request(row)

    async def attach_result(
        self,
        request_id: str,
        ok: bool,
        data: dict[str, Any],
        produced_at: datetime | None,
        now: datetime,
    ) -> tuple[Attachment, bool]:
        """Attach a request's result to its ticket once; True if this call stored it.

        A redelivered result (agent outbox replay, reconnect) returns the attachment already
        stored and False. Raises ``KeyError`` for a request this controller never made.
        """
        async with self._write() as s, s.begin():
            request = await s.get(RequestRow, request_id)
            if request is None:
                raise KeyError(request_id)
            row = AttachmentRow(
                ticket_id=request.ticket_id,
                session_id=request.session_id,
                request_id=request_id,
                kind=request.kind,
                ok=ok,
                data=data,
                created_at=now,
                produced_at=produced_at,
            )
            try:
                # The savepoint keeps the transaction usable on PostgreSQL after the
                # unique violation, so the winner's row can be read back here.
                async with s.begin_nested():
                    s.add(row)
            except IntegrityError:
                existing = await s.scalar(
                    select(AttachmentRow).where(AttachmentRow.request_id == request_id)
                )
                if existing is None:
                    raise
                return _attachment(existing), False
            if request.answered_at is None:
                request.answered_at = now
            return _attachment(row), True

    async def attachments(self, ticket_id: int) -> list[Attachment]:
        """A ticket's attachments, oldest first."""
        query = (
            select(AttachmentRow)
            .where(AttachmentRow.ticket_id == ticket_id)
            .order_by(AttachmentRow.id)
        )
        async with self._read() as s:
            return [_attachment(row) for row in await s.scalars(query)]


def _agent(row: AgentRow) -> Agent:
    return Agent(
        id=row.id,
        public_key=row.public_key,
        hostname=row.hostname,
        platform=row.platform,
        first_seen=utc(row.first_seen),
        last_seen=utc(row.last_seen),
    )


def _session(row: SessionRow) -> Session:
    return Session(
        id=row.id,
        ticket_id=row.ticket_id,
        agent_id=row.agent_id,
        technician=row.technician,
        scopes=tuple(row.scopes),
        state=row.state,
        created_at=utc(row.created_at),
        expires_at=utc(row.expires_at),
        ended_at=utc(row.ended_at),
        end_reason=row.end_reason,
    )


def _request(row: RequestRow) -> Request:
    return Request(
        id=row.id,
        session_id=row.session_id,
        ticket_id=row.ticket_id,
        kind=row.kind,
        requested_by=row.requested_by,
        created_at=utc(row.created_at),
        answered_at=utc(row.answered_at),
    )


def _attachment(row: AttachmentRow) -> Attachment:
    return Attachment(
        id=row.id,
        ticket_id=row.ticket_id,
        session_id=row.session_id,
        request_id=row.request_id,
        kind=row.kind,
        ok=row.ok,
        data=row.data,
        created_at=utc(row.created_at),
        produced_at=utc(row.produced_at),
    )
