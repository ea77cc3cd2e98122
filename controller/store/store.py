"""The controller's persistent state behind one async API: ``Store``.

The store owns the engine, its connection settings, schema migration and every query the
controller makes; it hands out frozen dataclasses, never ORM rows, so callers cannot touch
the database behind its back. The same code runs on SQLite (embedded default) and
PostgreSQL (scale-out). Each method is one short transaction and takes ``now`` from the
caller, so time is never read behind a test's back.

``Store`` is one facade over one part per aggregate, each in its own module and all on
the same engine (:class:`~controller.store.engine.StoreBase`): users and codes
(:mod:`.users`), agents, sessions, requests and results (:mod:`.sessions`), the audit chain
(:mod:`.audit`), tickets (:mod:`.tickets`, their event log and outbox in :mod:`.events`),
the knowledge base (:mod:`.kb`) and webhooks (:mod:`.webhooks`).
"""

from __future__ import annotations

from typing import Final

from alembic import command
from sqlalchemy import Connection, text

from controller.store.atomic import atomic_methods
from controller.store.audit import AuditStore
from controller.store.engine import alembic_config, create_engine
from controller.store.kb import ArticleStore
from controller.store.sessions import SessionStore
from controller.store.tickets import TicketStore
from controller.store.users import UserStore
from controller.store.webhooks import WebhookStore

# Any fixed 64-bit key: it only has to be the same for every replica of this controller.
_MIGRATION_LOCK: Final = 0x68656C706C696E65  # "helpline"


@atomic_methods
class Store(UserStore, SessionStore, AuditStore, TicketStore, ArticleStore, WebhookStore):
    """The controller's database: users, tickets, codes, agents, sessions, results, audit,
    the knowledge base and webhooks."""

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


__all__ = ["Store"]
