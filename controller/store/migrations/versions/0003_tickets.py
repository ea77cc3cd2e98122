"""Tickets under SLA: helpdesk columns on tickets, the event timeline (and webhook outbox),
links, customer ratings, the knowledge base with full-text search, webhooks.

Full-text search differs per dialect and is made here, not from the models: SQLite gets an
FTS5 table ``kb_fts`` over ``kb_articles`` kept in step by triggers; PostgreSQL gets a
generated ``search`` tsvector column (title weighted above body) with a GIN index. Both
tokenise alike: no stemming, no folding of diacritics, punctuation splits words
(``unicode61`` / ``simple`` over text with punctuation made spaces), so German, Russian
and English articles are found the same way on either.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
PENDING = sa.text("delivered_at IS NULL")

TICKET_COLUMNS = (
    ("contact", sa.Text(), None),
    ("channel", sa.String(16), "remote"),
    ("category", sa.String(100), None),
    ("assignee", sa.String(100), None),
    ("level", sa.String(4), "L1"),
    ("vendor", sa.Text(), None),
    ("vendor_ref", sa.Text(), None),
    ("resolution", sa.Text(), None),
    ("sla_alerts", sa.Text(), ""),
    ("updated_at", TS, None),
    ("responded_at", TS, None),
    ("resolved_at", TS, None),
    ("closed_at", TS, None),
)

SQLITE_FTS = (
    "CREATE VIRTUAL TABLE kb_fts USING fts5(title, body, content='kb_articles', "
    "content_rowid='id', tokenize='unicode61 remove_diacritics 0')",
    "CREATE TRIGGER kb_articles_fts_insert AFTER INSERT ON kb_articles BEGIN "
    "INSERT INTO kb_fts(rowid, title, body) VALUES (new.id, new.title, new.body); END",
    "CREATE TRIGGER kb_articles_fts_delete AFTER DELETE ON kb_articles BEGIN "
    "INSERT INTO kb_fts(kb_fts, rowid, title, body) VALUES ('delete', old.id, old.title, "
    "old.body); END",
    "CREATE TRIGGER kb_articles_fts_update AFTER UPDATE ON kb_articles BEGIN "
    "INSERT INTO kb_fts(kb_fts, rowid, title, body) VALUES ('delete', old.id, old.title, "
    "old.body); INSERT INTO kb_fts(rowid, title, body) VALUES (new.id, new.title, new.body); "
    "END",
)
# PostgreSQL's parser keeps paths, hosts and hyphenated words whole (/var/log, wi-fi);
# FTS5 splits them. Punctuation to spaces first, so both find the same words.
_WORDS = "regexp_replace(coalesce({}, ''), '[[:punct:]]', ' ', 'g')"
POSTGRES_FTS = (
    "ALTER TABLE kb_articles ADD COLUMN search tsvector GENERATED ALWAYS AS ("
    f"setweight(to_tsvector('simple', {_WORDS.format('title')}), 'A') || "
    f"setweight(to_tsvector('simple', {_WORDS.format('body')}), 'B')) STORED",
    "CREATE INDEX ix_kb_articles_search ON kb_articles USING GIN (search)",
)


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        for name, type_, default in TICKET_COLUMNS:
            batch.add_column(
                sa.Column(
                    name,
                    type_,
                    nullable=default is None,
                    server_default=None if default is None else sa.text(f"'{default}'"),
                )
            )
    op.execute("UPDATE tickets SET updated_at = created_at")
    op.create_index("ix_tickets_state", "tickets", ["state"])
    op.create_index("ix_tickets_assignee", "tickets", ["assignee"])

    op.create_table(
        "ticket_events",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("uid", sa.String(32), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("type", sa.String(48), nullable=False),
        sa.Column("actor", sa.String(100), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ticket_events"),
        sa.UniqueConstraint("uid", name="uq_ticket_events_uid"),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], name="fk_ticket_events_ticket_id_tickets"
        ),
    )
    for column in ("ticket_id", "at", "type"):
        op.create_index(f"ix_ticket_events_{column}", "ticket_events", [column])

    op.create_table(
        "ticket_links",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("other_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ticket_links"),
        sa.UniqueConstraint(
            "ticket_id", "other_id", "kind", name="uq_ticket_links_ticket_id_other_id_kind"
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], name="fk_ticket_links_ticket_id_tickets"
        ),
        sa.ForeignKeyConstraint(
            ["other_id"], ["tickets.id"], name="fk_ticket_links_other_id_tickets"
        ),
    )
    op.create_index("ix_ticket_links_ticket_id", "ticket_links", ["ticket_id"])
    op.create_index("ix_ticket_links_other_id", "ticket_links", ["other_id"])

    op.create_table(
        "ticket_ratings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=True),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("technician", sa.String(100), nullable=True),
        sa.Column("at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ticket_ratings"),
        sa.UniqueConstraint("session_id", name="uq_ticket_ratings_session_id"),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], name="fk_ticket_ratings_ticket_id_tickets"
        ),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name="fk_ticket_ratings_session_id_sessions"
        ),
    )
    op.create_index("ix_ticket_ratings_ticket_id", "ticket_ratings", ["ticket_id"])
    op.create_index("ix_ticket_ratings_at", "ticket_ratings", ["at"])

    op.create_table(
        "kb_articles",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=True),
        sa.Column("author", sa.String(100), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_kb_articles"),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], name="fk_kb_articles_ticket_id_tickets"
        ),
    )
    op.create_index("ix_kb_articles_ticket_id", "kb_articles", ["ticket_id"])
    op.create_table(
        "kb_links",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ref", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_kb_links"),
        sa.UniqueConstraint("article_id", "kind", "ref", name="uq_kb_links_article_id_kind_ref"),
        sa.ForeignKeyConstraint(
            ["article_id"], ["kb_articles.id"], name="fk_kb_links_article_id_kb_articles"
        ),
    )
    op.create_index("ix_kb_links_article_id", "kb_links", ["article_id"])
    op.create_index("ix_kb_links_kind_ref", "kb_links", ["kind", "ref"])
    dialect = op.get_bind().dialect.name
    for statement in POSTGRES_FTS if dialect == "postgresql" else SQLITE_FTS:
        op.execute(statement)

    op.create_table(
        "webhooks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("removed_at", TS, nullable=True),
        sa.Column("failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_success_at", TS, nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_webhooks"),
    )
    op.create_table(
        "webhook_outbox",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("webhook_id", sa.Integer(), nullable=False),
        sa.Column("event_id", BIG_ID, nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_attempt_at", TS, nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_outbox"),
        sa.ForeignKeyConstraint(
            ["webhook_id"], ["webhooks.id"], name="fk_webhook_outbox_webhook_id_webhooks"
        ),
        sa.ForeignKeyConstraint(
            ["event_id"], ["ticket_events.id"], name="fk_webhook_outbox_event_id_ticket_events"
        ),
    )
    op.create_index("ix_webhook_outbox_event_id", "webhook_outbox", ["event_id"])
    op.create_index("ix_webhook_outbox_ticket_id", "webhook_outbox", ["ticket_id"])
    op.create_index(
        "ix_webhook_outbox_pending",
        "webhook_outbox",
        ["webhook_id", "id"],
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.drop_table("webhook_outbox")
    op.drop_table("webhooks")
    if dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_kb_articles_search")
    else:
        for action in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS kb_articles_fts_{action}")
        op.execute("DROP TABLE IF EXISTS kb_fts")
    op.drop_table("kb_links")
    op.drop_table("kb_articles")
    op.drop_table("ticket_ratings")
    op.drop_table("ticket_links")
    op.drop_table("ticket_events")
    op.drop_index("ix_tickets_assignee", "tickets")
    op.drop_index("ix_tickets_state", "tickets")
    # native DROP COLUMN (SQLite 3.35+): batch mode would rebuild ``tickets``, and
    # dropping the old table fails while codes and sessions still point at it
    for name, _type, _default in reversed(TICKET_COLUMNS):
        op.execute(f"ALTER TABLE tickets DROP COLUMN {name}")
