"""The controller's persistent state behind one async API: ``Store``.

The store owns the engine, its connection settings, schema migration and every query the
controller makes; it hands out frozen dataclasses, never ORM rows, so callers cannot touch
the database behind its back. The same code runs on SQLite (embedded default) and
PostgreSQL (scale-out). Each method is one short transaction and takes ``now`` from the
caller, so time is never read behind a test's back.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, overload

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from controller import auditchain
from controller.store.atomic import atomic_methods
from controller.store.schema import (
    AgentRow,
    AttachmentRow,
    AuditCheckpointRow,
    AuditEventRow,
    CodeRow,
    RequestRow,
    SessionRow,
    TicketRow,
    UserRow,
)
from controller.store.ticketstore import Ticket, TicketStore, _ticket
from protocol.vocabulary import ROLES, STAFF_LEVELS

MIGRATIONS: Final = Path(__file__).resolve().parent / "migrations"

# Marks the connections of write transactions; see ``create_engine``.
_WRITE: Final = "helpline_write"
# Any fixed 64-bit key: it only has to be the same for every replica of this controller.
_MIGRATION_LOCK: Final = 0x68656C706C696E65  # "helpline"
_AUDIT_LOCK: Final = 0x61756469745F6C67  # "audit_lg"


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    level: str | None
    public_key: str
    fingerprint: str
    created_at: datetime
    removed_at: datetime | None


@dataclass(frozen=True)
class Code:
    code_hash: bytes
    ticket_id: int
    issued_by: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None


@dataclass(frozen=True)
class Agent:
    id: str
    public_key: str
    hostname: str
    platform: str
    first_seen: datetime
    last_seen: datetime


@dataclass(frozen=True)
class Session:
    id: str
    ticket_id: int
    agent_id: str
    technician: str
    scopes: tuple[str, ...]
    state: str
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    end_reason: str | None


@dataclass(frozen=True)
class Request:
    id: str
    session_id: str
    ticket_id: int
    kind: str
    requested_by: str
    created_at: datetime
    answered_at: datetime | None


@dataclass(frozen=True)
class Attachment:
    id: int
    ticket_id: int
    session_id: str | None
    request_id: str | None
    kind: str
    ok: bool
    data: dict[str, Any]
    created_at: datetime
    produced_at: datetime | None


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


RefusalReason = Literal["unknown", "expired", "used"]

_REFUSALS: Final[dict[str, str]] = {
    "unknown": "no such session code was issued",
    "expired": "the session code has expired",
    "used": "the session code has already been used",
}


class CodeRefused(Exception):
    """A session code could not be consumed; ``reason`` says why."""

    def __init__(self, reason: RefusalReason) -> None:
        self.reason: RefusalReason = reason
        super().__init__(_REFUSALS[reason])


def create_engine(url: str) -> AsyncEngine:
    """An async engine for ``url`` with the connection settings the store relies on."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return _create_async_engine(url, json_serializer=_json_text, json_deserializer=orjson.loads)
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        # Each pooled connection would see its own empty database.
        raise ValueError(f"the store needs a SQLite file path, not {url!r}")
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = _create_async_engine(url, json_serializer=_json_text, json_deserializer=orjson.loads)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Take BEGIN away from the driver so that SQLAlchemy emits it (below): the driver's
        # legacy mode never begins before SELECT or DDL, which breaks savepoints and
        # transactional migrations.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # WAL lets readers run alongside the one writer; busy_timeout makes writers
            # queue instead of failing at once.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=5000")
            # an acknowledged audit event must survive a crash of the machine, not only
            # of the process: fsync the WAL at every commit
            cursor.execute("PRAGMA synchronous=FULL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A deferred transaction that reads and then writes fails with SQLITE_BUSY (which
        # busy_timeout cannot wait out) when another writer committed in between, so write
        # transactions take the write lock up front. Reads stay deferred and concurrent.
        if connection.get_execution_options().get(_WRITE):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")

    return engine


def alembic_config(url: str) -> Config:
    """An Alembic configuration for the packaged migrations, independent of the cwd."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    # ConfigParser interpolates '%', which URL-encoded passwords contain.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _json_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


@atomic_methods
class Store(TicketStore):
    """The controller's database: users, tickets, codes, agents, sessions, results, audit.

    Tickets, their timeline, the knowledge base and webhooks: :class:`TicketStore`.
    """

    def __init__(self, url: str, engine: AsyncEngine) -> None:
        self.url = url
        self._engine = engine
        self._write_engine = engine.execution_options(**{_WRITE: True})
        self._read = async_sessionmaker(engine, expire_on_commit=False)
        self._write = async_sessionmaker(self._write_engine, expire_on_commit=False)

    @classmethod
    async def open(cls, url: str) -> Store:
        """Connect to ``url`` and check that the database answers; does not migrate."""
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except BaseException:
            await engine.dispose()
            raise
        return cls(url, engine)

    async def migrate(self) -> None:
        """Bring the schema to the newest revision; a no-op when it is already there."""
        async with self._write_engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Replicas starting together must not race to create the same tables.
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK}
                )
            await connection.run_sync(self._upgrade)

    def _upgrade(self, connection: Connection) -> None:
        config = alembic_config(self.url)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    async def close(self) -> None:
        """Release every pooled connection."""
        await self._engine.dispose()

    # users

    async def add_user(
        self,
        name: str,
        role: str,
        level: str | None,
        public_key: str,
        fingerprint: str,
        now: datetime,
    ) -> User:
        """Enrol a user; names and key fingerprints are unique among active users."""
        _check_role(role, level)
        try:
            async with self._write() as s, s.begin():
                clash = await s.scalar(
                    select(UserRow).where(
                        UserRow.removed_at.is_(None),
                        (UserRow.name == name) | (UserRow.fingerprint == fingerprint),
                    )
                )
                if clash is not None:
                    raise ValueError(_user_clash(clash, name))
                row = UserRow(
                    name=name,
                    role=role,
                    level=level,
                    public_key=public_key,
                    fingerprint=fingerprint,
                    created_at=now,
                )
                s.add(row)
        except IntegrityError as exc:
            # Another controller enrolled the same name or key between check and insert.
            raise ValueError(f"user {name!r} or key {fingerprint} is already enrolled") from exc
        return _user(row)

    async def remove_user(self, name: str, now: datetime) -> User | None:
        """Mark an active user removed (the row stays for the record); None if none."""
        async with self._write() as s, s.begin():
            row = await s.scalar(
                update(UserRow)
                .where(UserRow.name == name, UserRow.removed_at.is_(None))
                .values(removed_at=now)
                .returning(UserRow)
            )
            return None if row is None else _user(row)

    async def user_by_fingerprint(self, fingerprint: str) -> User | None:
        """The active user whose key has this fingerprint, if any."""
        async with self._read() as s:
            row = await s.scalar(
                select(UserRow).where(
                    UserRow.fingerprint == fingerprint, UserRow.removed_at.is_(None)
                )
            )
            return None if row is None else _user(row)

    async def user_by_name(self, name: str) -> User | None:
        """The active user with this name, if any."""
        async with self._read() as s:
            row = await s.scalar(
                select(UserRow).where(UserRow.name == name, UserRow.removed_at.is_(None))
            )
            return None if row is None else _user(row)

    async def list_users(self, *, include_removed: bool = False) -> list[User]:
        """Users in enrolment order; removed ones only when asked for."""
        query = select(UserRow).order_by(UserRow.id)
        if not include_removed:
            query = query.where(UserRow.removed_at.is_(None))
        async with self._read() as s:
            return [_user(row) for row in await s.scalars(query)]

    # session codes

    async def add_code(
        self,
        code_hash: bytes,
        ticket_id: int,
        issued_by: str,
        now: datetime,
        expires_at: datetime,
    ) -> Code:
        """Store the hash of a freshly issued code for a ticket."""
        row = CodeRow(
            code_hash=code_hash,
            ticket_id=ticket_id,
            issued_by=issued_by,
            created_at=now,
            expires_at=expires_at,
        )
        try:
            async with self._write() as s, s.begin():
                if await s.get(TicketRow, ticket_id) is None:
                    raise ValueError(f"no ticket T-{ticket_id}")
                s.add(row)
        except IntegrityError as exc:
            raise ValueError("a code with this hash already exists") from exc
        return _code(row)

    async def consume_code(self, code_hash: bytes, now: datetime) -> Code:
        """Use a code once; raise ``CodeRefused`` if it is unknown, expired or used."""
        async with self._write() as s, s.begin():
            # One conditional UPDATE is the whole decision, so of any number of concurrent
            # consumers (on any replica) exactly one sees a row come back.
            row = await s.scalar(
                update(CodeRow)
                .where(
                    CodeRow.code_hash == code_hash,
                    CodeRow.used_at.is_(None),
                    CodeRow.expires_at > now,
                )
                .values(used_at=now)
                .returning(CodeRow)
            )
            if row is not None:
                return _code(row)
            existing = await s.get(CodeRow, code_hash)
        if existing is None:
            raise CodeRefused("unknown")
        if existing.used_at is not None:
            raise CodeRefused("used")
        raise CodeRefused("expired")

    # agents

    async def upsert_agent(
        self, agent_id: str, public_key: str, hostname: str, platform: str, now: datetime
    ) -> Agent:
        """Record an agent's first or latest appearance; its key may never change."""
        async with self._write() as s, s.begin():
            row = await s.get(AgentRow, agent_id)
            if row is None:
                fresh = AgentRow(
                    id=agent_id,
                    public_key=public_key,
                    hostname=hostname,
                    platform=platform,
                    first_seen=now,
                    last_seen=now,
                )
                try:
                    async with s.begin_nested():
                        s.add(fresh)
                except IntegrityError:
                    # Another connection inserted it first; fall through to the update.
                    row = await s.scalar(select(AgentRow).where(AgentRow.id == agent_id))
                    if row is None:
                        raise
                else:
                    return _agent(fresh)
            if row.public_key != public_key:
                # The id names the key; a different key under the same id is an impostor.
                raise ValueError(f"agent {agent_id} is known with a different public key")
            row.hostname = hostname
            row.platform = platform
            row.last_seen = max(row.last_seen, now)
            await s.flush()
            return _agent(row)

    async def get_agent(self, agent_id: str) -> Agent | None:
        """The agent with this id, if any."""
        async with self._read() as s:
            row = await s.get(AgentRow, agent_id)
            return None if row is None else _agent(row)

    # sessions

    async def create_session(
        self,
        session_id: str,
        ticket_id: int,
        agent_id: str,
        technician: str,
        scopes: Iterable[str],
        now: datetime,
        expires_at: datetime,
    ) -> Session:
        """Record a session the customer has granted; it starts ``live``."""
        row = SessionRow(
            id=session_id,
            ticket_id=ticket_id,
            agent_id=agent_id,
            technician=technician,
            scopes=list(scopes),
            state="live",
            created_at=now,
            expires_at=expires_at,
        )
        try:
            async with self._write() as s, s.begin():
                if await s.get(TicketRow, ticket_id) is None:
                    raise ValueError(f"no ticket T-{ticket_id}")
                if await s.get(AgentRow, agent_id) is None:
                    raise ValueError(f"no agent {agent_id}")
                s.add(row)
        except IntegrityError as exc:
            raise ValueError(f"session {session_id} already exists") from exc
        return _session(row)

    async def get_session(self, session_id: str) -> Session | None:
        """The session with this id, if any."""
        async with self._read() as s:
            row = await s.get(SessionRow, session_id)
            return None if row is None else _session(row)

    async def get_session_and_ticket(
        self, session_id: str
    ) -> tuple[Session, Ticket] | tuple[None, None]:
        """A session and its ticket in one query: the reconnect path, which an outage
        makes run for every agent at once."""
        query = (
            select(SessionRow, TicketRow)
            .join(TicketRow, TicketRow.id == SessionRow.ticket_id)
            .where(SessionRow.id == session_id)
        )
        async with self._read() as s:
            found = (await s.execute(query)).first()
            if found is None:
                return None, None
            return _session(found[0]), _ticket(found[1])

    async def list_sessions(self, live_only: bool = True) -> list[Session]:
        """Sessions in creation order; only live ones unless told otherwise."""
        query = select(SessionRow).order_by(SessionRow.created_at, SessionRow.id)
        if live_only:
            query = query.where(SessionRow.state == "live")
        async with self._read() as s:
            return [_session(row) for row in await s.scalars(query)]

    async def sessions_for_ticket(self, ticket_id: int) -> list[Session]:
        """Every session of a ticket, in creation order."""
        query = (
            select(SessionRow)
            .where(SessionRow.ticket_id == ticket_id)
            .order_by(SessionRow.created_at, SessionRow.id)
        )
        async with self._read() as s:
            return [_session(row) for row in await s.scalars(query)]

    async def end_session(self, session_id: str, reason: str, now: datetime) -> Session | None:
        """End a live session; an ended one is returned unchanged, an unknown one as None."""
        async with self._write() as s, s.begin():
            # The first reason to end a session is the one that stays on record.
            row = await s.scalar(
                update(SessionRow)
                .where(SessionRow.id == session_id, SessionRow.state == "live")
                .values(state="ended", ended_at=now, end_reason=reason)
                .returning(SessionRow)
            )
            if row is None:
                row = await s.get(SessionRow, session_id)
            return None if row is None else _session(row)

    # requests and their results

    async def add_request(
        self,
        request_id: str,
        session_id: str,
        ticket_id: int,
        kind: str,
        requested_by: str,
        now: datetime,
    ) -> Request:
        """Record a request sent to an agent, so its result finds the ticket later."""
        row = RequestRow(
            id=request_id,
            session_id=session_id,
            ticket_id=ticket_id,
            kind=kind,
            requested_by=requested_by,
            created_at=now,
        )
        try:
            async with self._write() as s, s.begin():
                if await s.get(SessionRow, session_id) is None:
                    raise ValueError(f"no session {session_id}")
                s.add(row)
        except IntegrityError as exc:
            raise ValueError(f"request {request_id} already exists or names no ticket") from exc
        return _request(row)

    async def get_request(self, request_id: str) -> Request | None:
        """The request with this id, if any."""
        async with self._read() as s:
            row = await s.get(RequestRow, request_id)
            return None if row is None else _request(row)

    async def attach_result(
        self,
        request_id: str,
        ok: bool,
        data: dict[str, Any],
        produced_at: datetime | None,
        now: datetime,
    ) -> tuple[Attachment, bool]:
        """Attach a request's result to its ticket once; True if this call stored it.

        A redelivered result (agent outbox replay, reconnect) returns the attachment already
        stored and False. Raises ``KeyError`` for a request this controller never made.
        """
        async with self._write() as s, s.begin():
            request = await s.get(RequestRow, request_id)
            if request is None:
                raise KeyError(request_id)
            row = AttachmentRow(
                ticket_id=request.ticket_id,
                session_id=request.session_id,
                request_id=request_id,
                kind=request.kind,
                ok=ok,
                data=data,
                created_at=now,
                produced_at=produced_at,
            )
            try:
                # The savepoint keeps the transaction usable on PostgreSQL after the
                # unique violation, so the winner's row can be read back here.
                async with s.begin_nested():
                    s.add(row)
            except IntegrityError:
                existing = await s.scalar(
                    select(AttachmentRow).where(AttachmentRow.request_id == request_id)
                )
                if existing is None:
                    raise
                return _attachment(existing), False
            if request.answered_at is None:
                request.answered_at = now
            return _attachment(row), True

    async def attachments(self, ticket_id: int) -> list[Attachment]:
        """A ticket's attachments, oldest first."""
        query = (
            select(AttachmentRow)
            .where(AttachmentRow.ticket_id == ticket_id)
            .order_by(AttachmentRow.id)
        )
        async with self._read() as s:
            return [_attachment(row) for row in await s.scalars(query)]

    # audit

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
                        _utc(e.at),
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

    async def set_role(self, name: str, role: str, level: str | None) -> User | None:
        """Change an active user's role (and level); None when there is no such user."""
        _check_role(role, level)
        async with self._write() as s, s.begin():
            row = await s.scalar(
                update(UserRow)
                .where(UserRow.name == name, UserRow.removed_at.is_(None))
                .values(role=role, level=level)
                .returning(UserRow)
            )
            return None if row is None else _user(row)


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


def _check_role(role: str, level: str | None) -> None:
    if role not in ROLES:
        raise ValueError(f"role must be one of {sorted(ROLES)}, not {role!r}")
    if role == "technician" and level not in STAFF_LEVELS:
        raise ValueError(f"a technician needs a level of {sorted(STAFF_LEVELS)}, not {level!r}")
    if role != "technician" and level is not None:
        raise ValueError(f"only technicians have a level; {role} was given {level!r}")


def _user_clash(row: UserRow, name: str) -> str:
    if row.name == name:
        return f"a user named {name!r} is already enrolled"
    return f"this key ({row.fingerprint}) is already enrolled for user {row.name!r}"


@overload
def _utc(value: datetime) -> datetime: ...
@overload
def _utc(value: None) -> None: ...
def _utc(value: datetime | None) -> datetime | None:
    # Rows just written still hold the caller's datetimes, in whatever zone they came.
    return None if value is None else value.astimezone(UTC)


def _user(row: UserRow) -> User:
    return User(
        id=row.id,
        name=row.name,
        role=row.role,
        level=row.level,
        public_key=row.public_key,
        fingerprint=row.fingerprint,
        created_at=_utc(row.created_at),
        removed_at=_utc(row.removed_at),
    )


def _code(row: CodeRow) -> Code:
    return Code(
        code_hash=row.code_hash,
        ticket_id=row.ticket_id,
        issued_by=row.issued_by,
        created_at=_utc(row.created_at),
        expires_at=_utc(row.expires_at),
        used_at=_utc(row.used_at),
    )


def _agent(row: AgentRow) -> Agent:
    return Agent(
        id=row.id,
        public_key=row.public_key,
        hostname=row.hostname,
        platform=row.platform,
        first_seen=_utc(row.first_seen),
        last_seen=_utc(row.last_seen),
    )


def _session(row: SessionRow) -> Session:
    return Session(
        id=row.id,
        ticket_id=row.ticket_id,
        agent_id=row.agent_id,
        technician=row.technician,
        scopes=tuple(row.scopes),
        state=row.state,
        created_at=_utc(row.created_at),
        expires_at=_utc(row.expires_at),
        ended_at=_utc(row.ended_at),
        end_reason=row.end_reason,
    )


def _request(row: RequestRow) -> Request:
    return Request(
        id=row.id,
        session_id=row.session_id,
        ticket_id=row.ticket_id,
        kind=row.kind,
        requested_by=row.requested_by,
        created_at=_utc(row.created_at),
        answered_at=_utc(row.answered_at),
    )


def _attachment(row: AttachmentRow) -> Attachment:
    return Attachment(
        id=row.id,
        ticket_id=row.ticket_id,
        session_id=row.session_id,
        request_id=row.request_id,
        kind=row.kind,
        ok=row.ok,
        data=row.data,
        created_at=_utc(row.created_at),
        produced_at=_utc(row.produced_at),
    )


def _audit_event(row: AuditEventRow) -> AuditEvent:
    return AuditEvent(
        id=row.seq,
        at=_utc(row.at),
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
    "alembic_config",
    "create_engine",
]
