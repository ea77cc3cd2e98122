"""The controller's tables as SQLAlchemy declarative models, and the column types they share.

These models are what the store queries against and what Alembic's autogenerate compares
with; the tables themselves are created and evolved only by the revision scripts under
``migrations/versions``. Nothing outside ``controller.store`` should import this module:
the store hands out frozen dataclasses, never these rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Named constraints let later migrations drop or alter them by name, which SQLite's batch
# mode needs because it cannot introspect unnamed ones reliably.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets 64 bits for the tables
# that grow without bound.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is stored as UTC and always comes back timezone-aware.

    SQLite keeps no zone at all, so values are normalised to UTC before they are written
    (which also keeps SQLite's text comparison of timestamps in chronological order) and
    tagged as UTC when read. Naive datetimes are refused rather than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; pass an aware one")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


#: made per dialect by revision 0003 for full-text search and read by raw SQL only: the
#: FTS5 table (and its shadow tables) on SQLite, the tsvector column and index on PostgreSQL
_UNMODELLED: Final = {
    "table": ("kb_fts",),
    "column": ("kb_articles.search",),
    "index": ("ix_kb_articles_search",),
}


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic's filter: leave out the search objects that exist only in migrations."""
    if not reflected or name is None:
        return True
    if type_ == "column":
        name = f"{obj.table.name}.{name}"
    return not any(
        name == known or (type_ == "table" and name.startswith(known + "_"))
        for known in _UNMODELLED.get(type_, ())
    )


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    level: Mapped[str | None] = mapped_column(String(4))
    public_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # Removed users keep their row for the audit trail, so uniqueness holds among the
    # active ones only and a name or key can be enrolled again after removal.
    __table_args__ = (
        Index(
            "ux_users_name_active",
            "name",
            unique=True,
            sqlite_where=text("removed_at IS NULL"),
            postgresql_where=text("removed_at IS NULL"),
        ),
        Index(
            "ux_users_fingerprint_active",
            "fingerprint",
            unique=True,
            sqlite_where=text("removed_at IS NULL"),
            postgresql_where=text("removed_at IS NULL"),
        ),
    )


class TicketRow(Base):
    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(Text)
    customer: Mapped[str] = mapped_column(Text)
    priority: Mapped[str] = mapped_column(String(2))
    state: Mapped[str] = mapped_column(String(16))
    opened_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # revision 0003: the ticket as a helpdesk knows it (controller/tickets/)
    contact: Mapped[str | None] = mapped_column(Text)
    channel: Mapped[str] = mapped_column(String(16), server_default="remote")
    category: Mapped[str | None] = mapped_column(String(100))
    assignee: Mapped[str | None] = mapped_column(String(100), index=True)
    level: Mapped[str] = mapped_column(String(4), server_default="L1")
    vendor: Mapped[str | None] = mapped_column(Text)
    vendor_ref: Mapped[str | None] = mapped_column(Text)
    resolution: Mapped[str | None] = mapped_column(Text)
    #: SLA alerts already raised ("resolution:at_risk,…"), so replicas raise each once
    sla_alerts: Mapped[str] = mapped_column(Text, server_default="")
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    responded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_tickets_state", "state"),)


class CodeRow(Base):
    __tablename__ = "codes"

    code_hash: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    issued_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AgentRow(Base):
    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    public_key: Mapped[str] = mapped_column(Text)
    hostname: Mapped[str] = mapped_column(Text)
    platform: Mapped[str] = mapped_column(String(64))
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)


class SessionRow(Base):
    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    technician: Mapped[str] = mapped_column(String(100))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_reason: Mapped[str | None] = mapped_column(Text)


class RequestRow(Base):
    __tablename__ = "requests"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    requested_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AttachmentRow(Base):
    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    session_id: Mapped[str | None] = mapped_column(ForeignKey("sessions.id"))
    # UNIQUE is what makes a redelivered result idempotent, even across replicas.
    request_id: Mapped[str | None] = mapped_column(ForeignKey("requests.id"), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    ok: Mapped[bool] = mapped_column(Boolean)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    produced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEventRow(Base):
    __tablename__ = "audit_events"

    # No foreign keys: the log must be able to record attempts that name tickets, sessions
    # or agents that do not exist, and must outlive anything it refers to.
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    type: Mapped[str] = mapped_column(String(64), index=True)
    actor: Mapped[str | None] = mapped_column(String(100))
    role: Mapped[str | None] = mapped_column(String(16))
    source: Mapped[str | None] = mapped_column(String(255))
    ticket_id: Mapped[int | None] = mapped_column(Integer, index=True)
    session_id: Mapped[str | None] = mapped_column(String(64))
    agent_id: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    # the chain (revision 0002): position, predecessor's link hash, own link hash, and the
    # canonical record those hashes cover
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    record: Mapped[str] = mapped_column(Text)


class AuditCheckpointRow(Base):
    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    head: Mapped[str] = mapped_column(String(64))
    at: Mapped[str] = mapped_column(String(40))
    signature: Mapped[str] = mapped_column(String(128))


# -- revision 0003: tickets under SLA, knowledge base, webhooks -------------------------


class TicketEventRow(Base):
    """A ticket's timeline, and the transactional outbox its webhooks are fed from."""

    __tablename__ = "ticket_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    #: the id receivers de-duplicate on: stable across retries and replicas
    uid: Mapped[str] = mapped_column(String(32), unique=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    type: Mapped[str] = mapped_column(String(48), index=True)
    actor: Mapped[str | None] = mapped_column(String(100))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class TicketLinkRow(Base):
    __tablename__ = "ticket_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    other_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("ticket_id", "other_id", "kind"),)


class TicketRatingRow(Base):
    __tablename__ = "ticket_ratings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    # UNIQUE: one rating per session, however often the agent sends it
    session_id: Mapped[str | None] = mapped_column(ForeignKey("sessions.id"), unique=True)
    score: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    technician: Mapped[str | None] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class ArticleRow(Base):
    """A knowledge-base article. Full-text search lives beside it, per dialect: the FTS5
    table ``kb_fts`` on SQLite, a generated ``search`` tsvector column on PostgreSQL;
    both are made by revision 0003 and read by raw SQL, so neither is modelled here."""

    __tablename__ = "kb_articles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    author: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ArticleLinkRow(Base):
    """What an article is about: finding rule ids and fix ids."""

    __tablename__ = "kb_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("kb_articles.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    ref: Mapped[str] = mapped_column(String(100))

    __table_args__ = (
        UniqueConstraint("article_id", "kind", "ref"),
        Index("ix_kb_links_kind_ref", "kind", "ref"),
    )


class WebhookRow(Base):
    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(128))
    #: event types (``ticket.*`` patterns allowed); empty: every event
    events: Mapped[list[str]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # delivery state: consecutive failures drive the backoff; the lease lets one worker
    # (of several replicas) drain an endpoint at a time, in order
    failures: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OutboxRow(Base):
    """One event owed to one webhook: written in the transaction that made the event."""

    __tablename__ = "webhook_outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id"))
    event_id: Mapped[int] = mapped_column(ForeignKey("ticket_events.id"), index=True)
    ticket_id: Mapped[int] = mapped_column(Integer, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index(
            "ix_webhook_outbox_pending",
            "webhook_id",
            "id",
            sqlite_where=text("delivered_at IS NULL"),
            postgresql_where=text("delivered_at IS NULL"),
        ),
    )
