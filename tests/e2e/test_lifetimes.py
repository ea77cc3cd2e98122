"""The customer's grant ends by itself; the whole journey also runs on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import ControllerFactory, wait_until
from tests.services import require_service

POSTGRES = os.environ.get("HELPLINE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")


def test_grant_expires_by_itself(make_controller: ControllerFactory) -> None:
    controller = make_controller("--grant", "3s")
    ticket = controller.open_ticket()
    agent = controller.start_agent(controller.issue_code(ticket))
    controller.connected_session(ticket)
    assert agent.wait(20) == 0
    assert "expired" in agent.output()
    ended = wait_until(lambda: controller.json("sessions", "--all"), 10, "the ended session")
    assert ended[0]["state"] == "ended"
    assert ended[0]["end_reason"] == "grant expired"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    import asyncpg

    name = f"helpline_e2e_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(POSTGRES + "/postgres")
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        require_service("PostgreSQL", exc, "127.0.0.1:5432")
    try:
        yield POSTGRES.replace("postgresql://", "postgresql+asyncpg://") + f"/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.postgres
def test_journey_on_postgresql(make_controller: ControllerFactory, postgres_url: str) -> None:
    controller = make_controller(env={"HELPLINE_DB": postgres_url})
    ticket = controller.open_ticket()
    controller.start_agent(controller.issue_code(ticket))
    controller.connected_session(ticket)
    assert controller.json("diag", ticket)["ok"] is True
    shown = controller.json("ticket", "show", ticket)
    assert len(shown["attachments"]) == 1
    assert "postgresql" in (controller.home / "controller.toml").read_text()
