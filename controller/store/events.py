"""A ticket's event log and its webhook outbox, written with the change they record.

:func:`append_event` runs inside the caller's transaction (a ticket change, a rating, an
article written on a ticket): the event and one ``webhook_outbox`` row per webhook that
wants it commit with the change or not at all (the transactional outbox).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.store.engine import utc
from controller.store.schema import OutboxRow, TicketEventRow, TicketRow, WebhookRow


@dataclass(frozen=True)
class TicketEvent:
    id: int
    uid: str
    ticket_id: int
    at: datetime
    type: str
    actor: str | None
    data: dict[str, Any]


async def append_event(
    s: AsyncSession,
    ticket: TicketRow,
    type_: str,
    actor: str | None,
    now: datetime,
    data: dict[str, Any],
) -> TicketEvent:
    """Add an event to ``ticket``'s timeline, and its outbox rows, in transaction ``s``."""
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
        if subscribed(hook.events or (), type_):
            s.add(
                OutboxRow(
                    webhook_id=hook.id,
                    event_id=row.id,
                    ticket_id=ticket.id,
                    created_at=now,
                    attempts=0,
                )
            )
    return event_from(row)


def subscribed(patterns: Sequence[str], event_type: str) -> bool:
    """Whether a webhook with these event patterns wants ``event_type`` (none: every type)."""
    return not patterns or any(_matches(p, event_type) for p in patterns)


def _matches(pattern: str, event_type: str) -> bool:
    if pattern.endswith("*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


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


def event_from(row: TicketEventRow) -> TicketEvent:
    return TicketEvent(
        id=row.id,
        uid=row.uid,
        ticket_id=row.ticket_id,
        at=utc(row.at),
        type=row.type,
        actor=row.actor,
        data=row.data,
    )
