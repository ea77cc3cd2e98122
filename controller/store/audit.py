"""The audit chain's rows: appends under one lock, reads, the verifier's pages, checkpoints.

The chain itself (records, link hashes, checkpoints) is :mod:`controller.auditchain`; the
writer that batches appends and signs checkpoints is :mod:`controller.audit`.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from sqlalchemy import insert, select, text

from controller import auditchain
from controller.store.atomic import atomic_methods
from controller.store.engine import StoreBase, utc
from controller.store.schema import AuditCheckpointRow, AuditEventRow

# Any fixed 64-bit key: it only has to be the same for every replica of this controller.
_AUDIT_LOCK: Final = 0x61756469745F6C67  # "audit_lg"


@dataclass(frozen=True)
class AuditEvent:
    id: int
    at: datetime
    type: str
    actor: str | None
    role: str | None
    source: str | None
    ticket_id: int | None
    session_id: str | None
    agent_id: str | None
    details: dict[str, Any]
    #: the link hashes: what the writer checks its own appends against
    prev_hash: str = ""
    hash: str = ""


@dataclass(frozen=True)
class NewAuditEvent:
    """An event about to be appended."""

    at: datetime
    type: str
    actor: str | None = None
    role: str | None = None
    source: str | None = None
    ticket_id: int | None = None
    session_id: str | None = None
    agent_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@atomic_methods
class AuditStore(StoreBase):
    """The audit chain (part of ``Store``)."""

    async def audit(
        self,
        type: str,
        *,
        now: datetime,
        actor: str | None = None,
        role: str | None = None,
        source: str | None = None,
        ticket_id: int | None = None,
        session_id: str | None = None,
        agent_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditEvent:
        """Append one event to the audit chain (see :meth:`append_audit` for batches)."""
        event = NewAuditEvent(
            now, type, actor, role, source, ticket_id, session_id, agent_id, dict(details or {})
        )
        return (await self.append_audit([event]))[0]

    async def append_audit(self, events: Iterable[NewAuditEvent]) -> list[AuditEvent]:
        """Append events to the chain in one transaction; durable when this returns.

        Writers serialise on the chain head: SQLite's write lock (``BEGIN IMMEDIATE``) or a
        PostgreSQL advisory lock, so concurrent writers, even in several processes, extend
        one chain instead of forking it.
        """
        async with self._write() as s, s.begin():
            if self._engine.dialect.name == "postgresql":
                await s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _AUDIT_LOCK})
            last = (
                await s.execute(
                    select(AuditEventRow.seq, AuditEventRow.hash)
                    .order_by(AuditEventRow.seq.desc())
                    .limit(1)
                )
            ).first()
            seq, prev = (last[0], last[1]) if last else (0, auditchain.GENESIS)
            rows: list[dict[str, Any]] = []
            out: list[AuditEvent] = []
            for e in events:
                seq += 1
                record = auditchain.record(
                    seq=seq,
                    at=e.at,
                    type=e.type,
                    actor=e.actor,
                    role=e.role,
                    source=e.source,
                    ticket_id=e.ticket_id,
                    session_id=e.session_id,
                    agent_id=e.agent_id,
                    details=e.details,
                )
                digest = auditchain.link_hash(prev, record)
                rows.append(
                    {
                        "at": e.at,
                        "type": e.type,
                        "actor": e.actor,
                        "role": e.role,
                        "source": e.source,
                        "ticket_id": e.ticket_id,
                        "session_id": e.session_id,
                        "agent_id": e.agent_id,
                        "details": e.details,
                        "seq": seq,
                        "prev_hash": prev,
                        "hash": digest,
                        "record": record,
                    }
                )
                out.append(
                    AuditEvent(
                        seq,
                        utc(e.at),
                        e.type,
                        e.actor,
                        e.role,
                        e.source,
                        e.ticket_id,
                        e.session_id,
                        e.agent_id,
                        e.details,
                        prev,
                        digest,
                    )
                )
                prev = digest
            if rows:
                await s.execute(insert(AuditEventRow), rows)
        return out

    async def audit_head(self) -> tuple[int, str]:
        """The last seq and its link hash (0 and the genesis hash when empty)."""
        async with self._read() as s:
            last = (
                await s.execute(
                    select(AuditEventRow.seq, AuditEventRow.hash)
                    .order_by(AuditEventRow.seq.desc())
                    .limit(1)
                )
            ).first()
        return (last[0], last[1]) if last else (0, auditchain.GENESIS)

    async def audit_events(
        self,
        *,
        type: str | None = None,
        ticket_id: int | None = None,
        session_id: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
        types: Iterable[str] | None = None,
        hide_types: Iterable[str] = (),
    ) -> list[AuditEvent]:
        """Audit events in chain order, optionally filtered (``types``: any of these;
        ``hide_types``: none of these); the newest ``limit`` of them."""
        query = select(AuditEventRow).order_by(AuditEventRow.seq.desc()).limit(limit)
        if type is not None:
            query = query.where(AuditEventRow.type == type)
        if types is not None:
            query = query.where(AuditEventRow.type.in_(list(types)))
        hidden = list(hide_types)
        if hidden:
            query = query.where(AuditEventRow.type.not_in(hidden))
        if ticket_id is not None:
            query = query.where(AuditEventRow.ticket_id == ticket_id)
        if session_id is not None:
            query = query.where(AuditEventRow.session_id == session_id)
        if actor is not None:
            query = query.where(AuditEventRow.actor == actor)
        if since is not None:
            query = query.where(AuditEventRow.at >= since)
        async with self._read() as s:
            rows = list(await s.scalars(query))
        return [_audit_event(row) for row in reversed(rows)]

    async def audit_types(self) -> set[str]:
        """Every event type the log holds (a type a newer or older controller wrote too)."""
        async with self._read() as s:
            return set(await s.scalars(select(AuditEventRow.type).distinct()))

    async def audit_links(
        self, after_seq: int = 0, limit: int = 10_000, *, check_columns: bool = True
    ) -> list[auditchain.Link]:
        """A page of the chain as the verifier needs it, in seq order.

        With ``check_columns`` each record is rebuilt from the queryable columns, and a row
        whose columns were edited behind its record's back is marked, so that verification
        names it: filters run on the columns, so they must not lie.
        """
        # Raw rows, no ORM and no column types: verification reads every event there is,
        # and decoding each timestamp and JSON column through SQLAlchemy was most of its
        # cost. The columns are compared with the parsed record instead of re-encoding it.
        query = text(
            "SELECT seq, prev_hash, hash, record, at, type, actor, role, source, ticket_id,"
            " session_id, agent_id, details FROM audit_events"
            " WHERE seq > :after ORDER BY seq LIMIT :limit"
        )
        async with self._read() as s:
            rows = (await s.execute(query, {"after": after_seq, "limit": limit})).all()
        links = []
        for seq, prev, digest, text_, at, *columns in rows:
            match = not check_columns or _columns_match(text_, seq, at, columns)
            links.append(auditchain.Link(seq, prev, digest, text_, match))
        return links

    async def add_checkpoint(self, checkpoint: auditchain.Checkpoint) -> None:
        """Store a signed checkpoint of the chain head."""
        async with self._write() as s, s.begin():
            s.add(
                AuditCheckpointRow(
                    seq=checkpoint.seq,
                    head=checkpoint.head,
                    at=checkpoint.at,
                    signature=checkpoint.signature,
                )
            )

    async def last_checkpoint(self) -> auditchain.Checkpoint | None:
        """The newest stored checkpoint, if any."""
        async with self._read() as s:
            row = await s.scalar(
                select(AuditCheckpointRow).order_by(AuditCheckpointRow.id.desc()).limit(1)
            )
            return (
                None
                if row is None
                else auditchain.Checkpoint(row.seq, row.head, row.at, row.signature)
            )

    async def audit_checkpoints(self) -> list[auditchain.Checkpoint]:
        """Every stored checkpoint, oldest first."""
        async with self._read() as s:
            rows = await s.scalars(select(AuditCheckpointRow).order_by(AuditCheckpointRow.id))
            return [auditchain.Checkpoint(r.seq, r.head, r.at, r.signature) for r in rows]


_RECORD_COLUMNS: Final = operator.itemgetter(
    "type", "actor", "role", "source", "ticket", "session", "agent"
)


def _columns_match(record_text: str, seq: int, at: Any, columns: list[Any]) -> bool:
    """Whether a row's queryable columns say what its hashed record says."""
    try:
        record = orjson.loads(record_text)
        *scalars, details = columns
        if record["seq"] != seq or _RECORD_COLUMNS(record) != tuple(scalars):
            return False
        if isinstance(details, str | bytes):
            details = orjson.loads(details)
        if record["details"] != details:
            return False
        recorded = record["at"]
        if isinstance(at, str):
            # SQLite keeps UTC as "YYYY-MM-DD HH:MM:SS.ffffff": compare the text itself
            return bool(recorded.endswith("+00:00") and recorded[:-6].replace("T", " ") == at)
        stamp = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        return bool(datetime.fromisoformat(recorded) == stamp)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return False


def _audit_event(row: AuditEventRow) -> AuditEvent:
    return AuditEvent(
        id=row.seq,
        at=utc(row.at),
        type=row.type,
        actor=row.actor,
        role=row.role,
        source=row.source,
        ticket_id=row.ticket_id,
        session_id=row.session_id,
        agent_id=row.agent_id,
        details=row.details,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )
