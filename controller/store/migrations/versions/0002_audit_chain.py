"""Audit chain: each event carries its seq, its predecessor's hash, its own hash and the
canonical record they cover; signed checkpoints; the database refuses to edit either table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
GENESIS = "0" * 64
PROTECTED = ("audit_events", "audit_checkpoints")


def _record(row: Any) -> str:
    # frozen copy of controller.auditchain.record at version 1
    at = row.at if isinstance(row.at, str) else row.at.isoformat(timespec="microseconds")
    details = row.details if isinstance(row.details, dict) else json.loads(row.details or "{}")
    return json.dumps(
        {
            "v": 1,
            "seq": row.id,
            "at": at,
            "type": row.type,
            "actor": row.actor,
            "role": row.role,
            "source": row.source,
            "ticket": row.ticket_id,
            "session": row.session_id,
            "agent": row.agent_id,
            "details": details,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("prev_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("record", sa.Text(), nullable=True))
    # chain whatever revision 0001 recorded, in the order it was appended
    connection = op.get_bind()
    prev = GENESIS
    rows = connection.execute(sa.text("SELECT * FROM audit_events ORDER BY id")).fetchall()
    for number, row in enumerate(rows, start=1):
        text = _record(row).replace(f'"seq":{row.id}', f'"seq":{number}', 1)
        digest = hashlib.sha256(bytes.fromhex(prev) + text.encode()).hexdigest()
        connection.execute(
            sa.text(
                "UPDATE audit_events SET seq=:s, prev_hash=:p, hash=:h, record=:r WHERE id=:id"
            ),
            {"s": number, "p": prev, "h": digest, "r": text, "id": row.id},
        )
        prev = digest
    with op.batch_alter_table("audit_events") as batch:
        for name in ("seq", "prev_hash", "hash", "record"):
            batch.alter_column(name, nullable=False)
        batch.create_unique_constraint("uq_audit_events_seq", ["seq"])

    op.create_table(
        "audit_checkpoints",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("head", sa.String(64), nullable=False),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_checkpoints"),
    )
    op.create_index("ix_audit_checkpoints_seq", "audit_checkpoints", ["seq"])

    if connection.dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION helpline_audit_append_only() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, "
            "TG_TABLE_NAME; END; $$ LANGUAGE plpgsql"
        )
        for table in PROTECTED:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE OR TRUNCATE "
                f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION helpline_audit_append_only()"
            )
    else:
        for table in PROTECTED:
            for action in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: {action} on "
                    f"{table} refused'); END"
                )


def downgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name == "postgresql":
        for table in PROTECTED:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute("DROP FUNCTION IF EXISTS helpline_audit_append_only()")
    else:
        for table in PROTECTED:
            for action in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
    op.drop_index("ix_audit_checkpoints_seq", "audit_checkpoints")
    op.drop_table("audit_checkpoints")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_constraint("uq_audit_events_seq", type_="unique")
        for name in ("record", "hash", "prev_hash", "seq"):
            batch.drop_column(name)
