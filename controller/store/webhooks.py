"""Webhooks and their deliveries: the outbox drained under a lease, with backoff.

The outbox rows are written with each ticket event (:mod:`controller.store.events`); the
worker that sends them is :mod:`controller.tickets.webhooks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import exists, or_, select, update

from controller.store.atomic import atomic_methods
from controller.store.engine import StoreBase, utc
from controller.store.events import TicketEvent, event_from, subscribed
from controller.store.schema import OutboxRow, TicketEventRow, WebhookRow


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
        return subscribed(self.events, event_type)


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


@atomic_methods
class WebhookStore(StoreBase):
    """Webhooks and the delivery log (part of ``Store``)."""

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
        return min(utc(m) for m in moments if m is not None)

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


def _webhook(row: WebhookRow) -> Webhook:
    return Webhook(
        id=row.id,
        url=row.url,
        secret=row.secret,
        events=tuple(row.events or ()),
        created_by=row.created_by,
        created_at=utc(row.created_at),
        removed_at=utc(row.removed_at),
        failures=row.failures or 0,
        next_attempt_at=utc(row.next_attempt_at),
        last_error=row.last_error,
        last_success_at=utc(row.last_success_at),
    )


def _delivery(row: OutboxRow, event: TicketEventRow, url: str) -> Delivery:
    return Delivery(
        id=row.id,
        webhook_id=row.webhook_id,
        url=url,
        event=event_from(event),
        created_at=utc(row.created_at),
        attempts=row.attempts or 0,
        last_attempt_at=utc(row.last_attempt_at),
        last_status=row.last_status,
        last_error=row.last_error,
        delivered_at=utc(row.delivered_at),
    )
