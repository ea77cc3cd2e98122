"""Fixtures for the ticket tests: the store on SQLite and PostgreSQL (from the controller
tests), a desk on it with a clock the test moves, and an audit log that records."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.store import Store, User
from controller.tickets import sla, webhooks
from controller.tickets.desk import TicketDesk, Who
from tests.controller.conftest import store  # noqa: F401 - the fixture, on both backends

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday, 10:00 in Berlin
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPlaceholderPlaceholderPlaceholder0000"
POLICY = """
at_risk = 0.25
[calendars.office]
timezone = "Europe/Berlin"
hours = ["mon-fri 08:00-18:00"]
holidays = ["12-25"]
[priorities.P1]
first_response = "15m"
resolution = "4h"
escalate_at_risk = "L2"
[priorities.P2]
calendar = "office"
first_response = "1h"
resolution = "8h"
[priorities.P3]
calendar = "office"
first_response = "4h"
resolution = "30h"
"""


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass
class Recorder:
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def __call__(self, type: str, **fields: Any) -> None:
        self.events.append((type, fields))

    def types(self) -> list[str]:
        return [t for t, _ in self.events]


@dataclass
class Desk:
    desk: TicketDesk
    store: Store
    clock: Clock
    audit: Recorder
    alice: Who
    users: dict[str, User]


@pytest.fixture
async def office(store: Store) -> AsyncIterator[Desk]:  # noqa: F811 - the imported fixture
    clock = Clock()
    audit = Recorder()
    deliverer = webhooks.Deliverer(store, clock=clock, base=0.01, cap=0.05, poll=0.05)
    policy = sla.parse_policy(POLICY, "test")
    users = {}
    for n, (name, role, level) in enumerate(
        [
            ("alice", "technician", "L1"),
            ("bob", "technician", "L2"),
            ("carol", "technician", "L3"),
            ("dave", "auditor", None),
            ("root", "admin", None),
        ]
    ):
        users[name] = await store.add_user(
            name, role, level, KEY, f"SHA256:{name}{n}", T0 - timedelta(days=1)
        )
    yield Desk(
        TicketDesk(store, policy, audit=audit, clock=clock, deliverer=deliverer),
        store,
        clock,
        audit,
        Who("alice", "technician", "127.0.0.1"),
        users,
    )
