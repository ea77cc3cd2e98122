"""The store's ticket half: tickets, their timeline, links, ratings, knowledge base, webhooks.

``TicketStore`` is mixed into :class:`controller.store.Store` (same engine, same
sessions); it lives apart only to keep each module readable. The rules of the store hold
here too: frozen dataclasses out, one short transaction per method, ``now`` from the
caller, the same code on SQLite and PostgreSQL.

Every change to a ticket goes through :meth:`TicketStore.change_ticket`: under a row lock
it hands the current ticket to the caller's ``decide`` function (the lifecycle rules live
in :mod:`controller.tickets`, not here), applies the column changes it returns, and in
the **same transaction** appends the events to ``ticket_events`` and one
``webhook_outbox`` row per webhook that wants them. So an event exists if and only if its
change committed, and no committed event can miss its webhooks (the transactional outbox).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import and_, exists, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from controller.store.atomic import atomic_methods
from controller.store.schema import (
    ArticleLinkRow,
    ArticleRow,
    OutboxRow,
    TicketEventRow,
    TicketLinkRow,
    TicketRatingRow,
    TicketRow,
    WebhookRow,
)
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
_WORD: Final = re.compile(r"[^\W_]+")
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
class TicketEvent:
    id: int
    uid: str
    ticket_id: int
    at: datetime
    type: str
    actor: str | None
    data: dict[str, Any]


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


@dataclass(frozen=True)
class Article:
    id: int
    title: str
    body: str
    ticket_id: int | None
    author: str
    created_at: datetime
    updated_at: datetime
    findings: tuple[str, ...] = ()
    fixes: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"KB-{self.id}"


@dataclass(frozen=True)
class ArticleHit:
    article: Article
    rank: float
    snippet: str


@dataclass(frozen=True)
class Webhook:
    id: int
    url: str
    secret: str
    events: tuple[str, ...]
    created_by: str
    created_at: datetime
    removed_at: datetime | None
    failures: int
    next_attempt_at: datetime | None
    last_error: str | None
    last_success_at: datetime | None

    def wants(self, event_type: str) -> bool:
        """Whether this webhook subscribed to ``event_type`` (no filter: everything)."""
        return not self.events or any(_matches(p, event_type) for p in self.events)


@dataclass(frozen=True)
class Delivery:
    """One event owed to one webhook, with what its delivery attempts found."""

    id: int
    webhook_id: int
    url: str
    event: TicketEvent
    created_at: datetime
    attempts: int
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None


Decide = Callable[[Ticket], Sequence[Change]]


@atomic_methods
class TicketStore:
    """Ticket, knowledge-base and webhook queries (mixed into ``Store``)."""

    _engine: AsyncEngine
    _read: async_sessionmaker[AsyncSession]
    _write: async_sessionmaker[AsyncSession]

    # -- tickets --------------------------------------------------------------------------

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
            await self._append_event(s, row, "ticket.opened", opened_by, now, data)
        return _ticket(row)

    async def get_ticket(self, ticket_id: int) -> Ticket | None:
        """The ticket with this id, if any."""
        async with self._read() as s:
            row = await s.get(TicketRow, ticket_id)
            return None if row is None else _ticket(row)

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
            return [_ticket(row) for row in await s.scalars(query)]

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
            return [_ticket(row) for row in await s.scalars(query)]

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
            for change in decide(_ticket(row)):
                for key, value in change.fields.items():
                    if key not in TICKET_FIELDS:
                        raise ValueError(f"a change may not set {key!r}")
                    setattr(row, key, ",".join(value) if key == "sla_alerts" else value)
                if change.fields:
                    row.updated_at = now
                events.append(
                    await self._append_event(s, row, change.type, actor, now, change.data)
                )
            await s.flush()
            return _ticket(row), events

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
                    out.setdefault(row.ticket_id, []).append(_ticket_event(row))
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
                    await self._append_event(s, tickets[this], "ticket.linked", actor, now, data)
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
            await self._append_event(s, ticket, "ticket.rated", None, now, data)
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

    # -- knowledge base -------------------------------------------------------------------

    async def add_article(
        self,
        title: str,
        body: str,
        author: str,
        now: datetime,
        *,
        ticket_id: int | None = None,
        findings: Iterable[str] = (),
        fixes: Iterable[str] = (),
    ) -> Article:
        """Write an article (the search index follows by trigger or generated column)."""
        row = ArticleRow(
            title=title,
            body=body,
            ticket_id=ticket_id,
            author=author,
            created_at=now,
            updated_at=now,
        )
        links = [("finding", ref) for ref in dict.fromkeys(findings)]
        links += [("fix", ref) for ref in dict.fromkeys(fixes)]
        async with self._write() as s, s.begin():
            ticket = None if ticket_id is None else await s.get(TicketRow, ticket_id)
            if ticket_id is not None and ticket is None:
                raise KeyError(f"T-{ticket_id}")
            s.add(row)
            await s.flush()
            for kind, ref in links:
                s.add(ArticleLinkRow(article_id=row.id, kind=kind, ref=ref))
            if ticket is not None:
                data = {"article": f"KB-{row.id}", "title": title}
                await self._append_event(s, ticket, "ticket.article_written", author, now, data)
        return _article(row, links)

    async def get_article(self, article_id: int) -> Article | None:
        """The article with this id, if any."""
        return (await self._articles([article_id])).get(article_id)

    async def list_articles(self, limit: int = 100) -> list[Article]:
        """The newest articles."""
        query = select(ArticleRow.id).order_by(ArticleRow.id.desc()).limit(limit)
        async with self._read() as s:
            ids = list(await s.scalars(query))
        found = await self._articles(ids)
        return [found[i] for i in ids]

    async def search_articles(
        self, words: str, limit: int = 10, *, match_all: bool = True
    ) -> list[ArticleHit]:
        """Full-text search, best match first; every word (or, with ``match_all=False``,
        any word) must match, as a prefix."""
        terms = [w.lower() for w in _WORD.findall(words)][:12]
        if not match_all:
            terms = [t for t in terms if len(t) >= 3]
        if not terms:
            return []
        if self._engine.dialect.name == "postgresql":
            query = text(
                "SELECT a.id, ts_rank(a.search, q) AS rank, "
                "ts_headline('simple', a.body, q, "
                "'StartSel=«, StopSel=», MaxWords=18, MinWords=6, MaxFragments=1') "
                "FROM kb_articles a, to_tsquery('simple', :q) q "
                "WHERE a.search @@ q ORDER BY rank DESC, a.id DESC LIMIT :n"
            )
            match = (" & " if match_all else " | ").join(f"{t}:*" for t in terms)
        else:
            # bm25: lower is better; the title weighs ten times the body
            query = text(
                "SELECT kb_fts.rowid, -bm25(kb_fts, 10.0, 1.0) AS rank, "
                "snippet(kb_fts, 1, '«', '»', '…', 18) "
                "FROM kb_fts WHERE kb_fts MATCH :q ORDER BY rank DESC, kb_fts.rowid DESC "
                "LIMIT :n"
            )
            match = (" " if match_all else " OR ").join(f'"{t}"*' for t in terms)
        async with self._read() as s:
            rows = (await s.execute(query, {"q": match, "n": limit})).all()
        found = await self._articles([r[0] for r in rows])
        return [ArticleHit(found[r[0]], float(r[1]), str(r[2] or "")) for r in rows]

    async def articles_for(
        self, findings: Iterable[str] = (), fixes: Iterable[str] = (), limit: int = 5
    ) -> list[Article]:
        """Articles linked to any of these findings or fixes, most links in common first."""
        refs = [("finding", f) for f in findings] + [("fix", f) for f in fixes]
        if not refs:
            return []
        condition = or_(*(and_(ArticleLinkRow.kind == k, ArticleLinkRow.ref == r) for k, r in refs))
        hits = func.count(ArticleLinkRow.id)
        query = (
            select(ArticleLinkRow.article_id, hits)
            .where(condition)
            .group_by(ArticleLinkRow.article_id)
            .order_by(hits.desc(), ArticleLinkRow.article_id.desc())
            .limit(limit)
        )
        async with self._read() as s:
            ids = [row[0] for row in (await s.execute(query)).all()]
        found = await self._articles(ids)
        return [found[i] for i in ids]

    async def _articles(self, ids: Sequence[int]) -> dict[int, Article]:
        if not ids:
            return {}
        async with self._read() as s:
            rows = list(await s.scalars(select(ArticleRow).where(ArticleRow.id.in_(ids))))
            links: dict[int, list[tuple[str, str]]] = {}
            query = (
                select(ArticleLinkRow)
                .where(ArticleLinkRow.article_id.in_(ids))
                .order_by(ArticleLinkRow.id)
            )
            for link in await s.scalars(query):
                links.setdefault(link.article_id, []).append((link.kind, link.ref))
        return {row.id: _article(row, links.get(row.id, [])) for row in rows}

    # -- webhooks ---------------------------------------------------------------------------

    async def add_webhook(
        self, url: str, secret: str, events: Sequence[str], created_by: str, now: datetime
    ) -> Webhook:
        """Register a webhook; it receives events from now on."""
        row = WebhookRow(
            url=url,
            secret=secret,
            events=list(events),
            created_by=created_by,
            created_at=now,
            failures=0,
        )
        async with self._write() as s, s.begin():
            s.add(row)
        return _webhook(row)

    async def list_webhooks(self, *, include_removed: bool = False) -> list[Webhook]:
        """Webhooks in creation order."""
        query = select(WebhookRow).order_by(WebhookRow.id)
        if not include_removed:
            query = query.where(WebhookRow.removed_at.is_(None))
        async with self._read() as s:
            return [_webhook(row) for row in await s.scalars(query)]

    async def remove_webhook(self, webhook_id: int, now: datetime) -> Webhook | None:
        """Stop a webhook (its undelivered events stay on record, undelivered)."""
        async with self._write() as s, s.begin():
            row = await s.scalar(
                update(WebhookRow)
                .where(WebhookRow.id == webhook_id, WebhookRow.removed_at.is_(None))
                .values(removed_at=now)
                .returning(WebhookRow)
            )
            return None if row is None else _webhook(row)

    async def retry_webhook(self, webhook_id: int, now: datetime) -> Webhook | None:
        """Cut a webhook's backoff short: its pending events are due now."""
        async with self._write() as s, s.begin():
            row = await s.scalar(
                update(WebhookRow)
                .where(WebhookRow.id == webhook_id, WebhookRow.removed_at.is_(None))
                .values(next_attempt_at=now)
                .returning(WebhookRow)
            )
            return None if row is None else _webhook(row)

    async def claim_webhooks(self, owner: str, now: datetime, lease: timedelta) -> list[Webhook]:
        """Lease every active webhook that has events due and no other worker draining it."""
        free = or_(WebhookRow.lease_until.is_(None), WebhookRow.lease_until <= now)
        due = or_(WebhookRow.next_attempt_at.is_(None), WebhookRow.next_attempt_at <= now)
        pending = exists().where(
            OutboxRow.webhook_id == WebhookRow.id, OutboxRow.delivered_at.is_(None)
        )
        claimed = []
        async with self._write() as s, s.begin():
            candidates = list(
                await s.scalars(
                    select(WebhookRow.id).where(WebhookRow.removed_at.is_(None), free, due, pending)
                )
            )
            for webhook_id in candidates:
                # the condition again: on PostgreSQL another replica may have won meanwhile
                row = await s.scalar(
                    update(WebhookRow)
                    .where(WebhookRow.id == webhook_id, free)
                    .values(lease_owner=owner, lease_until=now + lease)
                    .returning(WebhookRow)
                )
                if row is not None:
                    claimed.append(_webhook(row))
        return claimed

    async def release_webhook(self, webhook_id: int, owner: str) -> None:
        """Give up a lease (only if it is still ours)."""
        async with self._write() as s, s.begin():
            await s.execute(
                update(WebhookRow)
                .where(WebhookRow.id == webhook_id, WebhookRow.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )

    async def next_webhook_due(self) -> datetime | None:
        """The earliest retry time among webhooks with pending events (None: nothing owed)."""
        pending = exists().where(
            OutboxRow.webhook_id == WebhookRow.id, OutboxRow.delivered_at.is_(None)
        )
        query = select(WebhookRow.next_attempt_at).where(WebhookRow.removed_at.is_(None), pending)
        async with self._read() as s:
            moments = list(await s.scalars(query))
        if not moments:
            return None
        if any(m is None for m in moments):
            return datetime.min.replace(tzinfo=UTC)
        return min(_aware(m) for m in moments if m is not None)

    async def pending_deliveries(self, webhook_id: int, limit: int = 50) -> list[Delivery]:
        """A webhook's undelivered events, oldest first."""
        return await self.deliveries(webhook_id=webhook_id, pending=True, limit=limit)

    async def deliveries(
        self,
        *,
        ticket_id: int | None = None,
        webhook_id: int | None = None,
        pending: bool = False,
        limit: int = 500,
    ) -> list[Delivery]:
        """The delivery log, oldest first: one ticket's, one webhook's, or pending only."""
        query = (
            select(OutboxRow, TicketEventRow, WebhookRow.url)
            .join(TicketEventRow, TicketEventRow.id == OutboxRow.event_id)
            .join(WebhookRow, WebhookRow.id == OutboxRow.webhook_id)
            .order_by(OutboxRow.id)
            .limit(limit)
        )
        if ticket_id is not None:
            query = query.where(OutboxRow.ticket_id == ticket_id)
        if webhook_id is not None:
            query = query.where(OutboxRow.webhook_id == webhook_id)
        if pending:
            query = query.where(OutboxRow.delivered_at.is_(None))
        async with self._read() as s:
            rows = (await s.execute(query)).all()
        return [_delivery(outbox, event, url) for outbox, event, url in rows]

    async def record_delivery(
        self,
        delivery_id: int,
        webhook_id: int,
        owner: str,
        now: datetime,
        *,
        ok: bool,
        status: int | None,
        error: str | None,
        next_attempt_at: datetime | None,
        lease: timedelta,
    ) -> None:
        """Record one attempt: the event delivered, or the endpoint's backoff grown."""
        async with self._write() as s, s.begin():
            await s.execute(
                update(OutboxRow)
                .where(OutboxRow.id == delivery_id)
                .values(
                    attempts=OutboxRow.attempts + 1,
                    last_attempt_at=now,
                    last_status=status,
                    last_error=error,
                    delivered_at=now if ok else None,
                )
            )
            values: dict[str, Any] = {"lease_until": now + lease}
            if ok:
                values.update(
                    failures=0, next_attempt_at=None, last_error=None, last_success_at=now
                )
            else:
                values.update(
                    failures=WebhookRow.failures + 1,
                    next_attempt_at=next_attempt_at,
                    last_error=error,
                )
            await s.execute(
                update(WebhookRow)
                .where(WebhookRow.id == webhook_id, WebhookRow.lease_owner == owner)
                .values(**values)
            )

    # -- the event log and its outbox ---------------------------------------------------------

    async def _append_event(
        self,
        s: AsyncSession,
        ticket: TicketRow,
        type_: str,
        actor: str | None,
        now: datetime,
        data: dict[str, Any],
    ) -> TicketEvent:
        row = TicketEventRow(
            uid=os.urandom(16).hex(),
            ticket_id=ticket.id,
            at=now,
            type=type_,
            actor=actor,
            # the ticket as it stood right after the event: receivers need no second call
            data={**data, "ticket": _summary(ticket)},
        )
        s.add(row)
        await s.flush()
        hooks = await s.scalars(select(WebhookRow).where(WebhookRow.removed_at.is_(None)))
        for hook in hooks:
            if _webhook(hook).wants(type_):
                s.add(
                    OutboxRow(
                        webhook_id=hook.id,
                        event_id=row.id,
                        ticket_id=ticket.id,
                        created_at=now,
                        attempts=0,
                    )
                )
        return _ticket_event(row)


def _matches(pattern: str, event_type: str) -> bool:
    if pattern.endswith("*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def _aware(value: datetime) -> datetime:
    # SQLite hands back what UTCDateTime made of it; rows just written hold the caller's
    return value.astimezone(UTC)


def _opt(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _summary(row: TicketRow) -> dict[str, Any]:
    return {
        "id": f"T-{row.id}",
        "title": row.title,
        "customer": row.customer,
        "priority": row.priority,
        "state": row.state,
        "level": row.level,
        "assignee": row.assignee,
        "channel": row.channel,
        "category": row.category,
    }


def _ticket(row: TicketRow) -> Ticket:
    return Ticket(
        id=row.id,
        title=row.title,
        customer=row.customer,
        priority=row.priority,
        state=row.state,
        opened_by=row.opened_by,
        created_at=_aware(row.created_at),
        contact=row.contact,
        channel=row.channel or "remote",
        category=row.category,
        assignee=row.assignee,
        level=row.level or "L1",
        vendor=row.vendor,
        vendor_ref=row.vendor_ref,
        resolution=row.resolution,
        updated_at=_opt(row.updated_at),
        responded_at=_opt(row.responded_at),
        resolved_at=_opt(row.resolved_at),
        closed_at=_opt(row.closed_at),
        sla_alerts=tuple(a for a in (row.sla_alerts or "").split(",") if a),
    )


def _ticket_event(row: TicketEventRow) -> TicketEvent:
    return TicketEvent(
        id=row.id,
        uid=row.uid,
        ticket_id=row.ticket_id,
        at=_aware(row.at),
        type=row.type,
        actor=row.actor,
        data=row.data,
    )


def _link(row: TicketLinkRow, seen_from: int) -> TicketLink:
    if row.ticket_id == seen_from:
        return TicketLink(
            row.ticket_id, row.other_id, row.kind, row.created_by, _aware(row.created_at)
        )
    return TicketLink(
        row.other_id, row.ticket_id, INVERSE[row.kind], row.created_by, _aware(row.created_at)
    )


def _rating(row: TicketRatingRow) -> Rating:
    return Rating(
        id=row.id,
        ticket_id=row.ticket_id,
        session_id=row.session_id,
        score=row.score,
        comment=row.comment,
        technician=row.technician,
        at=_aware(row.at),
    )


def _article(row: ArticleRow, links: Sequence[tuple[str, str]]) -> Article:
    return Article(
        id=row.id,
        title=row.title,
        body=row.body,
        ticket_id=row.ticket_id,
        author=row.author,
        created_at=_aware(row.created_at),
        updated_at=_aware(row.updated_at),
        findings=tuple(ref for kind, ref in links if kind == "finding"),
        fixes=tuple(ref for kind, ref in links if kind == "fix"),
    )


def _webhook(row: WebhookRow) -> Webhook:
    return Webhook(
        id=row.id,
        url=row.url,
        secret=row.secret,
        events=tuple(row.events or ()),
        created_by=row.created_by,
        created_at=_aware(row.created_at),
        removed_at=_opt(row.removed_at),
        failures=row.failures or 0,
        next_attempt_at=_opt(row.next_attempt_at),
        last_error=row.last_error,
        last_success_at=_opt(row.last_success_at),
    )


def _delivery(row: OutboxRow, event: TicketEventRow, url: str) -> Delivery:
    return Delivery(
        id=row.id,
        webhook_id=row.webhook_id,
        url=url,
        event=_ticket_event(event),
        created_at=_aware(row.created_at),
        attempts=row.attempts or 0,
        last_attempt_at=_opt(row.last_attempt_at),
        last_status=row.last_status,
        last_error=row.last_error,
        delivered_at=_opt(row.delivered_at),
    )
