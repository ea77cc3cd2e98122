"""The controller's store: every piece of persistent state, on SQLite or PostgreSQL.

Callers get frozen dataclasses and ``Store`` methods; the tables, engine settings and
migrations stay inside this package.
"""

from controller.store.store import (
    Agent,
    Attachment,
    AuditEvent,
    Code,
    CodeRefused,
    NewAuditEvent,
    Request,
    Session,
    Store,
    Ticket,
    User,
)
from controller.store.ticketstore import (
    Article,
    ArticleHit,
    Change,
    Delivery,
    Rating,
    TicketEvent,
    TicketLink,
    Webhook,
)

__all__ = [
    "Agent",
    "Article",
    "ArticleHit",
    "Attachment",
    "AuditEvent",
    "Change",
    "Code",
    "CodeRefused",
    "Delivery",
    "NewAuditEvent",
    "Rating",
    "Request",
    "Session",
    "Store",
    "Ticket",
    "TicketEvent",
    "TicketLink",
    "User",
    "Webhook",
]
