"""Tickets: their lifecycle columns, timeline, links and ratings.

Every change to a ticket goes through :meth:`TicketStore.change_ticket`: under a row lock
it hands the current ticket to the caller's ``decide`` function (the lifecycle rules live
in :mod:`controller.tickets`, not here), applies the column changes it returns, and in
the **same transaction** appends the events to ``ticket_events`` and one
``webhook_outbox`` row per webhook that wants them. So an event exists if and only if its
change committed, and no committed event can miss its webhooks (the transactional outbox,
:mod:`controller.store.events`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError

from controller.store.atomic import atomic_methods
from controller.store.engine import StoreBase, utc
from controller.store.events import TicketEvent, append_event, event_from
from controller.store.schema import TicketEventRow, TicketLinkRow, TicketRatingRow, TicketRow
from protocol.vocabulary import PRIORITIES

#: columns a ``Change`` may set
TICKET_FIELDS: Final = frozenset(
    {
        "state",
        "priority",
        "contact",
        "category",
        "assignee",
        "level",
        "vendor",
        "vendor_ref",
        "resolution",
        "responded_at",
        "resolved_at",
        "closed_at",
        "sla_alerts",
    }
)
#: a link seen from the other ticket
INVERSE: Final = {
    "relates": "relates",
    "duplicates": "duplicated_by",
    "duplicated_by": "duplicates",
    "follows": "followed_by",
    "followed_by": "follows",
    "blocks": "blocked_by",
    "blocked_by": "blocks",
}
#: search terms: letters and digits; any punctuation (and _) splits, as in the index
_CHUNK: Final = 500  # ids per IN (...) list


@dataclass(frozen=True)
class Ticket:
    id: int
    title: str
    customer: str
    priority: str
    state: str
    opened_by: str
    created_at: datetime
    contact: str | None = None
    channel: str = "remote"
    category: str | None = None
    assignee: str | None = None
    level: str = "L1"
    vendor: str | None = None
    vendor_ref: str | None = None
    resolution: str | None = None
    updated_at: datetime | None = None
    responded_at: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    sla_alerts: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        """The ticket as people write it: ``T-<id>``."""
        return f"T-{self.id}"


@dataclass(frozen=True)
class Change:
    """What a decision does to a ticket: column values, and the event that records it."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TicketLink:
    """A link as seen from ``ticket_id``: ``kind`` is inverted for the other end."""

    ticket_id: int
    other_id: int
    kind: str
    created_by: str
    created_at: datetime


@dataclass(frozen=True)
class Rating:
    id: int
    ticket_id: int
    session_id: str | None
    score: int
    comment: str | None
    technician: str | None
    at: datetime


Decide = Callable[[Ticket], Sequence[Change]]


@atomic_methods
class TicketStore(StoreBase):
    """Tickets, their timeline, links and ratings (part of ``Store``)."""

    async def open_ticket(
        self,
        title: str,
        customer: str,
        priority: str,
        opened_by: str,
        now: datetime,
        *,
        contact: str | None = None,
        channel: str = "remote",
        category: str | None = None,
    ) -> Ticket:
        """Open a ticket in state ``new``; its ``ticket.opened`` event commits with it."""
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {sorted(PRIORITIES)}, not {priority!r}")
        row = TicketRow(
            title=title,
            customer=customer,
            priority=priority,
            state="new",
            opened_by=opened_by,
            created_at=now,
            contact=contact,
            channel=channel,
            category=category,
            level="L1",
            sla_alerts="",
            updated_at=now,
        )
        async with self._write() as s, s.begin():
            s.add(row)
            await s.flush()
            data = {"title": title, "customer": customer, "priority": priority, "channel": channel}
            await append_event(s, row, "ticket.opened", opened_by, now, data)
        return ticket_from(row)

    async def get_ticket(self, ticket_id: int) -> Ticket | None:
        """The ticket with this id, if any."""
        async with self._read() as s:
            row = await s.get(TicketRow, ticket_id)
            return None if row is None else ticket_from(row)

    async def list_tickets(
        self,
        *,
        states: Iterable[str] | None = None,
        level: str | None = None,
        assignee: str | None = None,
        customer: str | None = None,
        limit: int | None = None,
    ) -> list[Ticket]:
        """Tickets, newest first, optionally filtered."""
        query = select(TicketRow).order_by(TicketRow.created_at.desc(), TicketRow.id.desc())
        if states is not None:
            query = query.where(TicketRow.state.in_(list(states)))
        if level is not None:
            query = query.where(TicketRow.level == level)
        if assignee is not None:
            query = query.where(TicketRow.assignee == assignee)
        if customer is not None:
            query = query.where(TicketRow.customer == customer)
        if limit is not None:
            query = query.limit(limit)
        async with self._read() as s:
            return [ticket_from(row) for row in await s.scalars(query)]

    async def tickets_active_since(self, since: datetime) -> list[Ticket]:
        """Tickets opened since ``since``, with events since then, or still being worked."""
        touched = select(TicketEventRow.ticket_id).where(TicketEventRow.at >= since)
        query = (
            select(TicketRow)
            .where(
                or_(
                    TicketRow.created_at >= since,
                    TicketRow.id.in_(touched),
                    TicketRow.state.in_(("new", "open", "waiting")),
                )
            )
            .order_by(TicketRow.id)
        )
        async with self._read() as s:
            return [ticket_from(row) for row in await s.scalars(query)]

    async def change_ticket(
        self, ticket_id: int, now: datetime, actor: str | None, decide: Decide
    ) -> tuple[Ticket, list[TicketEvent]] | None:
        """Apply ``decide(current ticket)`` under a row lock, events and outbox included.

        ``decide`` may raise to refuse; nothing is written then. None if there is no such
        ticket.
        """
        async with self._write() as s, s.begin():
            row = await s.scalar(
                select(TicketRow).where(TicketRow.id == ticket_id).with_for_update()
            )
            if row is None:
                return None
            events = []
            for change in decide(ticket_from(row)):
                for key, value in change.fields.items():
                    if key not in TICKET_FIELDS:
                        raise ValueError(f"a change may not set {key!r}")
                    setattr(row, key, ",".join(value) if key == "sla_alerts" else value)
                if change.fields:
                    row.updated_at = now
                events.append(await append_event(s, row, change.type, actor, now, change.data))
            await s.flush()
            return ticket_from(row), events

    async def ticket_events(
        self, ticket_id: int, types: Iterable[str] | None = None
    ) -> list[TicketEvent]:
        """A ticket's timeline, oldest first."""
        return (await self.events_for([ticket_id], types)).get(ticket_id, [])

    async def events_for(
        self, ticket_ids: Iterable[int], types: Iterable[str] | None = None
    ) -> dict[int, list[TicketEvent]]:
        """Timelines of several tickets at once (oldest first each)."""
        ids = sorted(set(ticket_ids))
        wanted = list(types) if types is not None else None
        out: dict[int, list[TicketEvent]] = {}
        async with self._read() as s:
            for start in range(0, len(ids), _CHUNK):
                query = (
                    select(TicketEventRow)
                    .where(TicketEventRow.ticket_id.in_(ids[start : start + _CHUNK]))
                    .order_by(TicketEventRow.id)
                )
                if wanted is not None:
                    query = query.where(TicketEventRow.type.in_(wanted))
                for row in await s.scalars(query):
                    out.setdefault(row.ticket_id, []).append(event_from(row))
        return out

    # -- links and ratings ------------------------------------------------------------------

    async def link_tickets(
        self, ticket_id: int, other_id: int, kind: str, actor: str, now: datetime
    ) -> TicketLink:
        """Link two tickets (``kind`` from the first one's side); an event on each.

        ``KeyError`` names a ticket that does not exist; ``ValueError`` a link that does.
        """
        if kind not in INVERSE:
            raise ValueError(f"links are {', '.join(INVERSE)}, not {kind!r}")
        if ticket_id == other_id:
            raise ValueError("a ticket cannot be linked to itself")
        row = TicketLinkRow(
            ticket_id=ticket_id, other_id=other_id, kind=kind, created_by=actor, created_at=now
        )
        try:
            async with self._write() as s, s.begin():
                tickets = {}
                for number in (ticket_id, other_id):
                    ticket = await s.get(TicketRow, number)
                    if ticket is None:
                        raise KeyError(f"T-{number}")
                    tickets[number] = ticket
                clash = await s.scalar(
                    select(TicketLinkRow).where(
                        or_(
                            and_(
                                TicketLinkRow.ticket_id == ticket_id,
                                TicketLinkRow.other_id == other_id,
                                TicketLinkRow.kind == kind,
                            ),
                            and_(
                                TicketLinkRow.ticket_id == other_id,
                                TicketLinkRow.other_id == ticket_id,
                                TicketLinkRow.kind == INVERSE[kind],
                            ),
                        )
                    )
                )
                if clash is not None:
                    raise ValueError(f"T-{ticket_id} already {kind} T-{other_id}")
                s.add(row)
                await s.flush()
                for this, other, how in (
                    (ticket_id, other_id, kind),
                    (other_id, ticket_id, INVERSE[kind]),
                ):
                    data = {"kind": how, "other": f"T-{other}"}
                    await append_event(s, tickets[this], "ticket.linked", actor, now, data)
        except IntegrityError as exc:
            raise ValueError(f"T-{ticket_id} already {kind} T-{other_id}") from exc
        return _link(row, ticket_id)

    async def ticket_links(self, ticket_id: int) -> list[TicketLink]:
        """Every link of a ticket, seen from it."""
        query = (
            select(TicketLinkRow)
            .where(or_(TicketLinkRow.ticket_id == ticket_id, TicketLinkRow.other_id == ticket_id))
            .order_by(TicketLinkRow.id)
        )
        async with self._read() as s:
            return [_link(row, ticket_id) for row in await s.scalars(query)]

    async def add_rating(
        self,
        ticket_id: int,
        session_id: str | None,
        score: int,
        comment: str | None,
        technician: str | None,
        now: datetime,
    ) -> Rating | None:
        """Record a customer's rating once per session; None if the session already rated."""
        if not 1 <= score <= 5:
            raise ValueError(f"a rating is 1 to 5, not {score}")
        row = TicketRatingRow(
            ticket_id=ticket_id,
            session_id=session_id,
            score=score,
            comment=comment,
            technician=technician,
            at=now,
        )
        async with self._write() as s, s.begin():
            ticket = await s.get(TicketRow, ticket_id)
            if ticket is None:
                raise KeyError(f"T-{ticket_id}")
            try:
                async with s.begin_nested():
                    s.add(row)
            except IntegrityError:
                return None
            data = {"score": score, "comment": comment, "session": session_id}
            data["technician"] = technician
            await append_event(s, ticket, "ticket.rated", None, now, data)
        return _rating(row)

    async def ratings(
        self, *, ticket_id: int | None = None, since: datetime | None = None
    ) -> list[Rating]:
        """Ratings, oldest first: one ticket's, or all since a moment."""
        query = select(TicketRatingRow).order_by(TicketRatingRow.id)
        if ticket_id is not None:
            query = query.where(TicketRatingRow.ticket_id == ticket_id)
        if since is not None:
            query = query.where(TicketRatingRow.at >= since)
        async with self._read() as s:
            return [_rating(row) for row in await s.scalars(query)]


def ticket_from(row: TicketRow) -> Ticket:
    return Ticket(
        id=row.id,
        title=row.title,
        customer=row.customer,
        priority=row.priority,
        state=row.state,
        opened_by=row.opened_by,
        created_at=utc(row.created_at),
        contact=row.contact,
        channel=row.channel or "remote",
        category=row.category,
        assignee=row.assignee,
        level=row.level or "L1",
        vendor=row.vendor,
        vendor_ref=row.vendor_ref,
        resolution=row.resolution,
        updated_at=utc(row.updated_at),
        responded_at=utc(row.responded_at),
        resolved_at=utc(row.resolved_at),
        closed_at=utc(row.closed_at),
        sla_alerts=tuple(a for a in (row.sla_alerts or "").split(",") if a),
    )


def _link(row: TicketLinkRow, seen_from: int) -> TicketLink:
    if row.ticket_id == seen_from:
        return TicketLink(
            row.ticket_id, row.other_id, row.kind, row.created_by, utc(row.created_at)
        )
    return TicketLink(
        row.other_id, row.ticket_id, INVERSE[row.kind], row.created_by, utc(row.created_at)
    )


def _rating(row: TicketRatingRow) -> Rating:
    return Rating(
        id=row.id,
        ticket_id=row.ticket_id,
        session_id=row.session_id,
        score=row.score,
        comment=row.comment,
        technician=row.technician,
        at=utc(row.at),
    )
