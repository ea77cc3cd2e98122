"""The controller's store on a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, text
from sqlalchemy.exc import StatementError

from controller.store import (
    Attachment,
    Code,
    CodeRefused,
    Session,
    Store,
    Ticket,
)
from controller.store.engine import alembic_config, create_engine
from controller.store.schema import Base, include_object

T0 = datetime(2026, 5, 9, 12, 0, tzinfo=UTC)
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleExampleExampleExampleExampleExample alice@desk"


def h(code: str) -> bytes:
    return hashlib.sha256(code.encode()).digest()


async def ticket(store: Store, title: str = "printer offline", now: datetime = T0) -> Ticket:
    return await store.open_ticket(title, "ACME GmbH", "P2", "alice", now)


async def live_session(store: Store, session_id: str = "S-1") -> Session:
    t = await ticket(store)
    await store.upsert_agent("A-1", "agent-key", "desk-01", "linux", T0)
    return await store.create_session(
        session_id, t.id, "A-1", "alice", ("diagnostics",), T0, T0 + timedelta(hours=1)
    )


# migrations


async def test_migrate_twice_is_a_no_op_and_keeps_data(store: Store) -> None:
    t = await ticket(store)
    await store.migrate()
    await store.migrate()
    assert await store.get_ticket(t.id) == t
    engine = create_engine(store.url)
    try:
        async with engine.connect() as connection:
            versions = await connection.execute(text("SELECT version_num FROM alembic_version"))
            assert versions.scalars().all() == [
                ScriptDirectory.from_config(alembic_config(store.url)).get_current_head()
            ]
    finally:
        await engine.dispose()


async def test_migrations_build_exactly_the_models(store: Store) -> None:
    def diff(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_object": include_object}
        )
        diffs: list[Any] = compare_metadata(context, Base.metadata)
        return diffs

    engine = create_engine(store.url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(diff) == []
    finally:
        await engine.dispose()


async def test_sqlite_connections_get_wal_foreign_keys_and_busy_timeout(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'helpline.db'}")
    try:
        async with engine.connect() as connection:
            pragmas = {
                name: (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout")
            }
    finally:
        await engine.dispose()
    assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 5000}


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(ValueError, match="SQLite file path"):
        create_engine("sqlite+aiosqlite:///:memory:")


# users


async def test_users_add_look_up_and_refuse_duplicates(store: Store) -> None:
    alice = await store.add_user("alice", "technician", "L2", KEY, "SHA256:alice", T0)
    assert (alice.name, alice.role, alice.level, alice.removed_at) == (
        "alice",
        "technician",
        "L2",
        None,
    )
    assert await store.user_by_fingerprint("SHA256:alice") == alice
    assert await store.user_by_name("alice") == alice
    assert await store.user_by_fingerprint("SHA256:nobody") is None

    with pytest.raises(ValueError, match="named 'alice'"):
        await store.add_user("alice", "admin", None, "other key", "SHA256:other", T0)
    with pytest.raises(ValueError, match="already enrolled for user 'alice'"):
        await store.add_user("bob", "admin", None, KEY, "SHA256:alice", T0)
    bob = await store.add_user("bob", "auditor", None, "bob key", "SHA256:bob", T0)
    assert await store.list_users() == [alice, bob]


async def test_user_roles_and_levels_are_checked(store: Store) -> None:
    with pytest.raises(ValueError, match="role"):
        await store.add_user("eve", "root", None, KEY, "SHA256:eve", T0)
    with pytest.raises(ValueError, match="level"):
        await store.add_user("eve", "technician", None, KEY, "SHA256:eve", T0)
    with pytest.raises(ValueError, match="only technicians"):
        await store.add_user("eve", "admin", "L1", KEY, "SHA256:eve", T0)
    assert await store.list_users() == []


async def test_a_removed_user_is_gone_but_kept_and_can_be_enrolled_again(store: Store) -> None:
    old = await store.add_user("carol", "technician", "L1", KEY, "SHA256:carol", T0)
    removed = await store.remove_user("carol", T0 + timedelta(days=1))
    assert removed is not None and removed.removed_at == T0 + timedelta(days=1)
    assert await store.remove_user("carol", T0) is None
    assert await store.user_by_fingerprint("SHA256:carol") is None
    assert await store.list_users() == []

    new = await store.add_user("carol", "technician", "L3", KEY, "SHA256:carol", T0)
    assert new.id != old.id
    assert await store.user_by_name("carol") == new
    assert [u.id for u in await store.list_users(include_removed=True)] == [old.id, new.id]


# tickets


async def test_tickets_open_get_and_list_newest_first(store: Store) -> None:
    first = await ticket(store, "printer offline", T0)
    second = await ticket(store, "VPN drops", T0 + timedelta(minutes=1))
    assert first.state == "new"
    assert first.ref == f"T-{first.id}"
    assert second.id > first.id
    assert await store.get_ticket(first.id) == first
    assert await store.get_ticket(second.id + 100) is None
    assert await store.list_tickets() == [second, first]


async def test_ticket_priority_is_checked(store: Store) -> None:
    with pytest.raises(ValueError, match="priority"):
        await store.open_ticket("x", "y", "P9", "alice", T0)


# session codes


async def test_a_code_is_used_once(store: Store) -> None:
    t = await ticket(store)
    issued = await store.add_code(h("A"), t.id, "alice", T0, T0 + timedelta(minutes=10))
    assert issued.used_at is None

    used = await store.consume_code(h("A"), T0 + timedelta(minutes=1))
    assert used == Code(h("A"), t.id, "alice", T0, T0 + timedelta(minutes=10), used.used_at)
    assert used.used_at == T0 + timedelta(minutes=1)

    with pytest.raises(CodeRefused) as refused:
        await store.consume_code(h("A"), T0 + timedelta(minutes=2))
    assert refused.value.reason == "used"
    assert "already been used" in str(refused.value)


async def test_expired_and_unknown_codes_are_refused_with_their_reason(store: Store) -> None:
    t = await ticket(store)
    await store.add_code(h("B"), t.id, "alice", T0, T0 + timedelta(minutes=10))
    with pytest.raises(CodeRefused) as expired:
        # Expiry is exclusive: at the very instant it is already too late.
        await store.consume_code(h("B"), T0 + timedelta(minutes=10))
    assert expired.value.reason == "expired"
    with pytest.raises(CodeRefused) as unknown:
        await store.consume_code(h("never issued"), T0)
    assert unknown.value.reason == "unknown"
    assert str(unknown.value) == "no such session code was issued"


async def test_code_for_an_unknown_ticket_or_twice_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="no ticket"):
        await store.add_code(h("C"), 999, "alice", T0, T0 + timedelta(minutes=10))
    t = await ticket(store)
    await store.add_code(h("C"), t.id, "alice", T0, T0 + timedelta(minutes=10))
    with pytest.raises(ValueError, match="already exists"):
        await store.add_code(h("C"), t.id, "alice", T0, T0 + timedelta(minutes=10))


async def test_concurrent_consumers_of_one_code_have_exactly_one_winner(store: Store) -> None:
    t = await ticket(store)
    await store.add_code(h("D"), t.id, "alice", T0, T0 + timedelta(minutes=10))
    outcomes = await asyncio.gather(
        *(store.consume_code(h("D"), T0 + timedelta(seconds=i)) for i in range(5)),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if isinstance(o, Code)]
    losers = [o for o in outcomes if isinstance(o, CodeRefused)]
    assert len(winners) == 1
    assert [loser.reason for loser in losers] == ["used"] * 4


# agents


async def test_agents_are_upserted_but_keep_their_key(store: Store) -> None:
    first = await store.upsert_agent("A-1", "key-1", "desk-01", "linux", T0)
    assert (first.first_seen, first.last_seen) == (T0, T0)
    later = T0 + timedelta(hours=2)
    again = await store.upsert_agent("A-1", "key-1", "desk-01.lan", "linux", later)
    assert (again.hostname, again.first_seen, again.last_seen) == ("desk-01.lan", T0, later)
    assert await store.get_agent("A-1") == again
    assert await store.get_agent("A-2") is None
    with pytest.raises(ValueError, match="different public key"):
        await store.upsert_agent("A-1", "key-2", "desk-01", "linux", later)
    assert await store.get_agent("A-1") == again


async def test_concurrent_first_sightings_of_an_agent_make_one_row(store: Store) -> None:
    agents = await asyncio.gather(
        *(store.upsert_agent("A-9", "key-9", f"host-{i}", "linux", T0) for i in range(5))
    )
    assert {a.id for a in agents} == {"A-9"}
    stored = await store.get_agent("A-9")
    assert stored is not None and stored.first_seen == T0


# sessions


async def test_a_reconnect_reads_its_session_and_ticket_in_one_query(store: Store) -> None:
    session = await live_session(store, "S-7")
    found, ticket_of = await store.get_session_and_ticket("S-7")
    assert found == session
    assert ticket_of is not None and ticket_of == await store.get_ticket(session.ticket_id)
    assert await store.get_session_and_ticket("S-unknown") == (None, None)


async def test_sessions_are_created_listed_and_ended_once(store: Store) -> None:
    session = await live_session(store, "S-1")
    assert (session.state, session.scopes, session.ended_at) == ("live", ("diagnostics",), None)
    assert await store.get_session("S-1") == session
    assert await store.list_sessions() == [session]
    assert await store.sessions_for_ticket(session.ticket_id) == [session]

    ended = await store.end_session("S-1", "customer left", T0 + timedelta(minutes=5))
    assert ended is not None
    assert (ended.state, ended.end_reason) == ("ended", "customer left")
    assert ended.ended_at == T0 + timedelta(minutes=5)
    # The first reason stays on record.
    assert await store.end_session("S-1", "grant expired", T0 + timedelta(hours=2)) == ended
    assert await store.end_session("S-404", "whatever", T0) is None

    assert await store.list_sessions() == []
    assert await store.list_sessions(live_only=False) == [ended]
    assert await store.sessions_for_ticket(session.ticket_id) == [ended]


async def test_a_session_needs_a_ticket_and_an_agent(store: Store) -> None:
    t = await ticket(store)
    with pytest.raises(ValueError, match="no agent"):
        await store.create_session("S-2", t.id, "A-404", "alice", (), T0, T0)
    await store.upsert_agent("A-1", "k", "h", "linux", T0)
    with pytest.raises(ValueError, match="no ticket"):
        await store.create_session("S-2", t.id + 1, "A-1", "alice", (), T0, T0)
    await store.create_session("S-2", t.id, "A-1", "alice", (), T0, T0)
    with pytest.raises(ValueError, match="already exists"):
        await store.create_session("S-2", t.id, "A-1", "alice", (), T0, T0)


# requests and results


async def test_a_result_is_attached_once_to_the_requests_ticket(store: Store) -> None:
    session = await live_session(store)
    request = await store.add_request(
        "R-1", session.id, session.ticket_id, "diagnostics", "alice", T0
    )
    assert request.answered_at is None
    assert await store.get_request("R-1") == request

    data: dict[str, Any] = {"cpu": {"percent": 12.5}, "disks": [{"mount": "/", "free": 10}]}
    produced = T0 + timedelta(seconds=3)
    attachment, fresh = await store.attach_result(
        "R-1", True, data, produced, T0 + timedelta(seconds=4)
    )
    assert fresh is True
    assert attachment == Attachment(
        attachment.id,
        session.ticket_id,
        session.id,
        "R-1",
        "diagnostics",
        True,
        data,
        T0 + timedelta(seconds=4),
        produced,
    )
    answered = await store.get_request("R-1")
    assert answered is not None and answered.answered_at == T0 + timedelta(seconds=4)

    again, fresh = await store.attach_result(
        "R-1", False, {"other": 1}, None, T0 + timedelta(minutes=1)
    )
    assert fresh is False
    assert again == attachment
    assert await store.attachments(session.ticket_id) == [attachment]


async def test_concurrent_deliveries_of_one_result_store_one_attachment(store: Store) -> None:
    session = await live_session(store)
    await store.add_request("R-2", session.id, session.ticket_id, "diagnostics", "alice", T0)
    outcomes = await asyncio.gather(
        *(store.attach_result("R-2", True, {"try": i}, T0, T0) for i in range(5))
    )
    assert sorted(fresh for _, fresh in outcomes) == [False, False, False, False, True]
    assert len({attachment.id for attachment, _ in outcomes}) == 1
    assert len(await store.attachments(session.ticket_id)) == 1


async def test_results_for_unknown_requests_raise_key_error(store: Store) -> None:
    await live_session(store)
    with pytest.raises(KeyError):
        await store.attach_result("R-404", True, {}, None, T0)
    with pytest.raises(ValueError, match="no session"):
        await store.add_request("R-3", "S-404", 1, "diagnostics", "alice", T0)


async def test_attachments_are_listed_oldest_first_per_ticket(store: Store) -> None:
    session = await live_session(store)
    other = await ticket(store, "another")
    for i in range(3):
        await store.add_request(f"R-{i}", session.id, session.ticket_id, "diagnostics", "alice", T0)
        await store.attach_result(f"R-{i}", True, {"n": i}, None, T0 + timedelta(seconds=i))
    listed = await store.attachments(session.ticket_id)
    assert [a.data["n"] for a in listed] == [0, 1, 2]
    assert await store.attachments(other.id) == []


# audit


async def test_audit_appends_and_filters_in_order(store: Store) -> None:
    first = await store.audit("code.issued", now=T0, actor="alice", role="technician", ticket_id=1)
    await store.audit("code.failed", now=T0, source="127.0.0.7", details={"reason": "unknown"})
    third = await store.audit(
        "code.used",
        now=T0 + timedelta(seconds=1),
        ticket_id=1,
        agent_id="A-1",
        session_id="S-1",
        details={"hostname": "desk-01", "nested": {"list": [1, 2]}},
    )
    assert first.details == {}
    assert third.id > first.id

    everything = await store.audit_events()
    assert [e.type for e in everything] == ["code.issued", "code.failed", "code.used"]
    assert everything[2] == third
    assert everything[1].details == {"reason": "unknown"}
    assert await store.audit_events(type="code.failed") == [everything[1]]
    assert await store.audit_events(ticket_id=1) == [first, third]
    assert await store.audit_events(session_id="S-1") == [third]
    assert await store.audit_events(limit=2) == everything[-2:]  # the newest two


# time


async def test_datetimes_come_back_aware_utc_whatever_zone_went_in(store: Store) -> None:
    berlin_summer = timezone(timedelta(hours=2))
    local = datetime(2026, 5, 9, 14, 0, tzinfo=berlin_summer)
    t = await store.open_ticket("x", "y", "P1", "alice", local)
    stored = await store.get_ticket(t.id)
    assert stored is not None
    assert stored.created_at == T0
    assert stored.created_at.utcoffset() == timedelta(0)
    assert t.created_at == T0 and t.created_at.utcoffset() == timedelta(0)
    returned = await store.audit("x", now=local)
    (listed,) = await store.audit_events()
    for at in (returned.at, listed.at):
        assert at == T0 and at.utcoffset() == timedelta(0)


async def test_expiry_compares_instants_not_wall_clock_text(store: Store) -> None:
    # Written as 05:10 in UTC-8 this is 13:10 UTC: later than 12:30 UTC, although "05:10"
    # sorts before "12:30" as text. The store must compare the instants.
    pacific = timezone(timedelta(hours=-8))
    t = await ticket(store)
    await store.add_code(h("E"), t.id, "alice", T0, datetime(2026, 5, 9, 5, 10, tzinfo=pacific))
    used = await store.consume_code(h("E"), T0 + timedelta(minutes=30))
    assert used.expires_at == T0 + timedelta(hours=1, minutes=10)


async def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        await store.open_ticket("x", "y", "P1", "alice", datetime(2026, 5, 9, 12, 0))
    assert await store.list_tickets() == []


# cancellation


async def test_a_cancelled_caller_does_not_cut_a_transaction_in_half(store: Store) -> None:
    # A technician's connection ending cancels its calls. Cut inside a transaction, the
    # driver's connection used to be terminated ("Exception during reset"; on SQLite the
    # write lock held until the close ran). The store finishes the call, then cancels.
    dropped: list[str] = []
    pool = store._engine.sync_engine.pool
    for name in ("invalidate", "close", "close_detached"):
        event.listen(pool, name, lambda *_args, name=name: dropped.append(name))
    started: list[str] = []
    for step in range(40):
        name = f"user{step}"

        async def enrol(name: str = name) -> None:
            started.append(name)
            await store.add_user(name, "technician", "L1", KEY, f"SHA256:{name}", T0)

        task = asyncio.create_task(enrol())
        for _ in range(step):  # cancel at every await point in turn
            await asyncio.sleep(0)
        if task.cancel():
            with pytest.raises(asyncio.CancelledError):
                await task
        else:  # it finished first: a fast machine
            await task
    assert dropped == []
    enrolled = {user.name for user in await store.list_users()}
    assert enrolled == set(started)
    assert len(started) >= 39  # every task but the one cancelled before it ran
