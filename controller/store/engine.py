"""The store's engine: connection settings, migrations' configuration, the shared base.

Every per-aggregate part of :class:`controller.store.Store` derives from :class:`StoreBase`,
so all of them share one engine and its two session factories: reads (deferred, concurrent)
and writes (which take SQLite's write lock up front).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, overload

import orjson
from alembic.config import Config
from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

MIGRATIONS: Final = Path(__file__).resolve().parent / "migrations"

# Marks the connections of write transactions; see ``create_engine``.
_WRITE: Final = "helpline_write"


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


class StoreBase:
    """The engine and session factories every part of the store queries through."""

    url: str
    _engine: AsyncEngine
    _write_engine: AsyncEngine
    _read: async_sessionmaker[AsyncSession]
    _write: async_sessionmaker[AsyncSession]

    def __init__(self, url: str, engine: AsyncEngine) -> None:
        self.url = url
        self._engine = engine
        self._write_engine = engine.execution_options(**{_WRITE: True})
        self._read = async_sessionmaker(engine, expire_on_commit=False)
        self._write = async_sessionmaker(self._write_engine, expire_on_commit=False)


@overload
def utc(value: datetime) -> datetime: ...
@overload
def utc(value: None) -> None: ...
def utc(value: datetime | None) -> datetime | None:
    # Rows just written still hold the caller's datetimes, in whatever zone they came.
    return None if value is None else value.astimezone(UTC)
