"""Fixtures for the store tests: a migrated ``Store`` on a SQLite file and on PostgreSQL.

Each PostgreSQL test gets a database of its own, created on the local server and dropped
(with FORCE, so a leaked connection cannot keep it alive) when the test ends.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from controller.store import Store
from tests.services import require_service

POSTGRES_ADMIN_URL = os.environ.get(
    "HELPLINE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh, empty database on the test server; yields its URL."""
    admin_url = make_url(POSTGRES_ADMIN_URL)
    admin = create_async_engine(
        admin_url,
        isolation_level="AUTOCOMMIT",  # CREATE/DROP DATABASE refuse to run in a transaction
        poolclass=NullPool,
        connect_args={"timeout": 5},
    )
    name = f"helpline_test_{secrets.token_hex(6)}"
    try:
        try:
            async with admin.connect() as connection:
                await connection.execute(text(f'CREATE DATABASE "{name}"'))
        except (OSError, TimeoutError, SQLAlchemyError) as exc:
            require_service("PostgreSQL", exc, where=f"{admin_url.host}:{admin_url.port or 5432}")
        try:
            yield admin_url.set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as connection:
                await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@asynccontextmanager
async def open_store(url: str) -> AsyncIterator[Store]:
    store = await Store.open(url)
    try:
        await store.migrate()
        yield store
    finally:
        await store.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A migrated, empty store on each backend."""
    if request.param == "sqlite":
        async with open_store(f"sqlite+aiosqlite:///{tmp_path / 'helpline.db'}") as store:
            yield store
    else:
        async with postgres_database() as url, open_store(url) as store:
            yield store
