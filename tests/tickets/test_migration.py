"""Revision 0003 on SQLite and PostgreSQL: over a database with tickets from before it,
and back down to 0002 without losing them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, text

from controller.store import Store
from controller.store.engine import alembic_config, create_engine
from controller.tickets import sla
from controller.tickets.desk import TicketDesk, Who
from tests.controller.conftest import postgres_database
from tests.tickets.conftest import T0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    else:
        async with postgres_database() as database:
            yield database


async def _alembic(url: str, action: str, revision: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:

            def run(sync: object) -> None:
                config = alembic_config(url)
                config.attributes["connection"] = sync
                getattr(command, action)(config, revision)

            await connection.run_sync(run)
    finally:
        await engine.dispose()


async def _sql(url: str, statement: str) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            result = await connection.execute(text(statement))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        await engine.dispose()


async def _columns(url: str, table: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: {c["name"] for c in inspect(sync).get_columns(table)}
            )
    finally:
        await engine.dispose()


async def test_tickets_from_before_revision_0003_keep_working(url: str) -> None:
    await _alembic(url, "upgrade", "0002")
    old = await _columns(url, "tickets")
    await _sql(
        url,
        "INSERT INTO tickets (title, customer, priority, state, opened_by, created_at) "
        "VALUES ('Laptop slow', 'ACME', 'P2', 'open', 'alice', '2026-03-02 09:00:00+00:00')",
    )
    store = await Store.open(url)
    try:
        await store.migrate()
        [ticket] = await store.list_tickets()
        assert (ticket.state, ticket.level, ticket.channel, ticket.assignee) == (
            "open", "L1", "remote", None,
        )  # fmt: skip
        assert ticket.updated_at == ticket.created_at == T0
        desk = TicketDesk(store, sla.load_policy(None), clock=lambda: T0)
        assert sla.history(ticket, []) == [(T0, "open")]
        await desk.wait(Who("alice"), ticket.id, "logs")
        assert sla.history(await desk.get(ticket.id), await store.ticket_events(ticket.id)) == [
            (T0, "open"),
            (T0, "waiting"),
        ]
        article = await store.add_article("Slow laptop", "Disable the indexer.", "alice", T0)
        assert [h.article.id for h in await store.search_articles("indexer")] == [article.id]
    finally:
        await store.close()

    await _alembic(url, "downgrade", "0002")
    assert await _columns(url, "tickets") == old
    assert await _sql(url, "SELECT title, state FROM tickets") == [("Laptop slow", "waiting")]
    tables = await _sql(
        url,
        "SELECT name FROM sqlite_master WHERE name LIKE 'kb%'"
        if url.startswith("sqlite")
        else "SELECT tablename FROM pg_tables WHERE tablename LIKE 'kb%'",
    )
    assert tables == []
    await _alembic(url, "upgrade", "head")  # and up again
    assert "assignee" in await _columns(url, "tickets")
