"""The controller's store: every piece of persistent state, on SQLite or PostgreSQL.

Callers get frozen dataclasses and ``Store`` methods; the tables, engine settings and
migrations stay inside this package.
"""

from controller.store.audit import AuditEvent, NewAuditEvent
from controller.store.events import TicketEvent
from controller.store.kb import Article, ArticleHit
from controller.store.sessions import Agent, Attachment, Request, Session
from controller.store.store import Store
from controller.store.tickets import Change, Rating, Ticket, TicketLink
from controller.store.users import Code, CodeRefused, User
from controller.store.webhooks import Delivery, Webhook

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
