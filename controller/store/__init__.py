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

__all__ = [
    "Agent",
    "Attachment",
    "AuditEvent",
    "Code",
    "CodeRefused",
    "NewAuditEvent",
    "Request",
    "Session",
    "Store",
    "Ticket",
    "User",
]
