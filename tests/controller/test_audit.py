"""The audit chain on SQLite and PostgreSQL: appends, checkpoints, attacks, exports, crashes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from controller import auditchain
from controller.audit import AuditLog, create_key, read_head_file
from controller.store import NewAuditEvent, Store
from tests.conftest import scaled
from tests.controller.conftest import open_store, postgres_database


@pytest.fixture
async def log(store: Store, tmp_path: Path) -> AsyncIterator[AuditLog]:
    audit_log = AuditLog(
        store, create_key(tmp_path / "audit.pem"), tmp_path / "head.json", checkpoint_events=10
    )
    await audit_log.start()
    try:
        yield audit_log
    finally:
        await audit_log.close()


async def fill(log: AuditLog, count: int) -> None:
    await asyncio.gather(
        *(
            log.append(
                "code.failed",
                source="127.0.0.1",
                ticket_id=i % 3 or None,
                details={"reason": "unknown", "n": i, "text": "ünïcödé"},
            )
            for i in range(count)
        )
    )


async def sql(store: Store, statement: str, params: dict[str, object] | None = None) -> None:
    """Run raw SQL as an attacker with database access would."""
    async with store._engine.begin() as connection:
        await connection.execute(text(statement), params or {})


async def drop_protection(store: Store) -> None:
    """What an attacker with full database rights does first."""
    if store._engine.dialect.name == "postgresql":
        for table in ("audit_events", "audit_checkpoints"):
            await sql(store, f"DROP TRIGGER {table}_append_only ON {table}")
    else:
        for table in ("audit_events", "audit_checkpoints"):
            for action in ("update", "delete"):
                await sql(store, f"DROP TRIGGER {table}_no_{action}")


async def test_appends_form_one_verified_chain(log: AuditLog) -> None:
    for n in range(25):  # one at a time, so that each batch is one event
        await log.append("code.failed", details={"n": n})
    report = await log.verify()
    assert report.ok, report.problem
    assert report.events == 25
    seqs = [e.id for e in await log.store.audit_events()]
    assert seqs == list(range(1, 26))
    # every 10 events a checkpoint was signed, and the head file follows the last one
    checkpoints = await log.store.audit_checkpoints()
    assert [c.seq for c in checkpoints][:2] == [10, 20]
    head = read_head_file(log.head_file) if log.head_file else None
    assert head is not None and head.checkpoint == checkpoints[-1]


async def test_the_database_refuses_updates_and_deletes(log: AuditLog) -> None:
    await fill(log, 3)
    await log.checkpoint()
    for statement in (
        "UPDATE audit_events SET type = 'nothing' WHERE seq = 2",
        "DELETE FROM audit_events WHERE seq = 3",
        "UPDATE audit_checkpoints SET seq = 1",
        "DELETE FROM audit_checkpoints",
    ):
        with pytest.raises((IntegrityError, DBAPIError), match="append-only"):
            await sql(log.store, statement)
    assert (await log.verify()).ok


async def test_modified_record_is_detected(log: AuditLog) -> None:
    await fill(log, 12)
    await drop_protection(log.store)
    await sql(
        log.store,
        "UPDATE audit_events SET record = replace(record, 'unknown', 'fine') WHERE seq = 5",
    )
    report = await log.verify()
    assert not report.ok
    assert report.bad_seq == 5
    assert "modified" in (report.problem or "")


async def test_modified_column_is_detected(log: AuditLog) -> None:
    await fill(log, 12)
    await drop_protection(log.store)
    # the queryable column changes, the hashed record does not: a filter would lie
    await sql(log.store, "UPDATE audit_events SET type = 'harmless' WHERE seq = 7")
    report = await log.verify()
    assert report.bad_seq == 7


async def test_modified_time_or_details_column_is_detected(log: AuditLog) -> None:
    await fill(log, 12)
    await drop_protection(log.store)
    # a --since filter must not be fooled by a back-dated row
    await sql(log.store, "UPDATE audit_events SET at = '2020-01-01 00:00:00' WHERE seq = 6")
    report = await log.verify()
    assert report.bad_seq == 6
    await sql(
        log.store,
        "UPDATE audit_events SET at = (SELECT at FROM audit_events WHERE seq = 5) WHERE seq = 6",
    )
    await sql(log.store, """UPDATE audit_events SET details = '{"n": 1}' WHERE seq = 4""")
    report = await log.verify()
    assert report.bad_seq == 4


async def test_deleted_event_is_detected(log: AuditLog) -> None:
    await fill(log, 12)
    await drop_protection(log.store)
    await sql(log.store, "DELETE FROM audit_events WHERE seq = 4")
    report = await log.verify()
    assert report.bad_seq == 4
    assert "missing" in (report.problem or "")


async def test_reordered_events_are_detected(log: AuditLog) -> None:
    await fill(log, 12)
    await drop_protection(log.store)
    # swap the positions of events 3 and 8, hashes and all
    await sql(log.store, "UPDATE audit_events SET seq = -3 WHERE seq = 3")
    await sql(log.store, "UPDATE audit_events SET seq = 3 WHERE seq = 8")
    await sql(log.store, "UPDATE audit_events SET seq = 8 WHERE seq = -3")
    report = await log.verify()
    assert not report.ok
    assert report.bad_seq == 3


async def test_truncated_tail_is_detected_by_a_checkpoint(log: AuditLog) -> None:
    await fill(log, 15)
    await log.checkpoint()
    await drop_protection(log.store)
    await sql(log.store, "DELETE FROM audit_events WHERE seq > 12")
    report = await log.verify()
    assert not report.ok
    assert "truncated" in (report.problem or "")


async def test_truncation_with_checkpoints_removed_is_caught_by_the_head_file(
    log: AuditLog,
) -> None:
    await fill(log, 15)
    await log.checkpoint()
    await drop_protection(log.store)
    await sql(log.store, "DELETE FROM audit_events WHERE seq > 12")
    await sql(log.store, "DELETE FROM audit_checkpoints")
    report = await log.verify()
    assert not report.ok
    assert "truncated" in (report.problem or "")


async def test_forged_checkpoint_is_detected(log: AuditLog) -> None:
    await fill(log, 5)
    forger = Ed25519PrivateKey.generate()
    seq, head = await log.store.audit_head()
    from datetime import UTC, datetime

    await log.store.add_checkpoint(auditchain.sign_checkpoint(forger, seq, head, datetime.now(UTC)))
    report = await log.verify()
    assert "bad signature" in (report.problem or "")


async def test_concurrent_writers_in_two_connections_keep_one_chain(
    store: Store, tmp_path: Path
) -> None:
    """Two Store instances stand for two controller processes writing at once."""
    other = await Store.open(store.url)
    key = create_key(tmp_path / "audit.pem")
    first = AuditLog(store, key, None, shared=True)
    second = AuditLog(other, key, None, shared=True)
    await first.start()
    await second.start()
    try:
        await asyncio.gather(fill(first, 60), fill(second, 60))
        report = await first.verify()
        assert report.ok, report.problem
        assert report.events == 120
    finally:
        await first.close()
        await second.close()
        await other.close()


def _export_lines(
    links: list[auditchain.Link], checkpoints: list[auditchain.Checkpoint], key: Ed25519PrivateKey
) -> list[str]:
    from datetime import UTC, datetime

    header = auditchain.export_header(
        key,
        controller="test",
        exported_at=datetime.now(UTC),
        head_seq=links[-1].seq,
        head=links[-1].hash,
        checkpoints=checkpoints,
    )
    lines = [auditchain.canonical(header)]
    lines += [auditchain.checkpoint_line(c) for c in checkpoints]
    lines += [auditchain.link_line(link) for link in links]
    return [line + "\n" for line in lines]


async def test_export_verifies_and_any_edited_byte_fails(log: AuditLog) -> None:
    await fill(log, 12)
    await log.checkpoint()
    lines = _export_lines(
        await log.store.audit_links(), await log.store.audit_checkpoints(), log.key
    )
    public = log.key.public_key()
    assert auditchain.verify_export(lines, public).ok
    assert not auditchain.verify_export(lines[:-1], public).ok  # truncated
    assert not auditchain.verify_export(lines, Ed25519PrivateKey.generate().public_key()).ok
    blob = "".join(lines).encode()

    @settings(
        max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(st.integers(0, len(blob) - 1), st.integers(1, 255))
    def one_byte(position: int, flip: int) -> None:
        edited = bytearray(blob)
        edited[position] ^= flip
        try:
            text_lines = bytes(edited).decode("utf-8").splitlines(keepends=True)
        except UnicodeDecodeError:
            return  # the CLI reports undecodable files as tampered
        assert not auditchain.verify_export(text_lines, public).ok

    one_byte()


CRASHER = """
import asyncio, sys
from pathlib import Path
from controller.audit import AuditLog, load_key
from controller.store import Store

async def main() -> None:
    store = await Store.open(sys.argv[1])
    log = AuditLog(store, load_key(Path(sys.argv[2])), None)
    await log.start()
    n = 0
    while True:
        events = await asyncio.gather(*(log.append("bench.event", details={"n": n + i})
                                       for i in range(20)))
        n += 20
        print(" ".join(str(e.id) for e in events), flush=True)

asyncio.run(main())
"""


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_sigkill_mid_append_loses_no_acknowledged_event(backend: str, tmp_path: Path) -> None:
    key_path = tmp_path / "audit.pem"
    key = create_key(key_path)
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'helpline.db'}"
        await _crash_and_check(url, key_path, key)
    else:
        async with postgres_database() as url:
            await _crash_and_check(url, key_path, key)


async def _crash_and_check(url: str, key_path: Path, key: Ed25519PrivateKey) -> None:
    async with open_store(url):
        pass  # migrated
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHER,
        url,
        str(key_path),
        stdout=subprocess.PIPE,
        env={**os.environ},
    )
    assert process.stdout is not None
    acknowledged: list[int] = []
    async with asyncio.timeout(scaled(60)):
        while len(acknowledged) < 400:
            line = await process.stdout.readline()
            assert line, "the appender died on its own"
            acknowledged += [int(x) for x in line.split()]
    process.send_signal(signal.SIGKILL)
    await process.wait()
    async with open_store(url) as store:
        stored = {e.id for e in await store.audit_events(limit=100_000)}
        assert set(acknowledged) <= stored
        report = auditchain.verify(await store.audit_links(0, 100_000), [], key.public_key())
        assert report.ok, report.problem
        assert report.events == len(stored)


async def test_an_edit_in_the_unsigned_window_is_never_signed(log: AuditLog) -> None:
    from controller.audit import AuditTampered

    await fill(log, 5)
    await log.checkpoint()
    signed = await log.store.last_checkpoint()
    await fill(log, 5)  # events 6..10: not yet covered by a signature
    await drop_protection(log.store)
    # an attacker rewrites event 8 and recomputes the hashes after it
    links = await log.store.audit_links(0, 100)
    prev = links[6].hash
    for link in links[7:]:
        record = link.record.replace('"unknown"', '"fine"') if link.seq == 8 else link.record
        digest = auditchain.link_hash(prev, record)
        await sql(
            log.store,
            "UPDATE audit_events SET record = :r, prev_hash = :p, hash = :h WHERE seq = :s",
            {"r": record, "p": prev, "h": digest, "s": link.seq},
        )
        prev = digest
    with pytest.raises(AuditTampered):
        await log.checkpoint()
    assert await log.store.last_checkpoint() == signed  # nothing new was signed
    assert not (await log.verify()).ok


# -- a database-only attacker against the signer ------------------------------------------


async def rewrite_from(store: Store, seq: int, old: str, new: str) -> None:
    """Edit event ``seq`` and recompute every later hash, as a careful attacker would."""
    import json

    links = await store.audit_links(0, 100_000)
    prev = links[seq - 2].hash if seq > 1 else auditchain.GENESIS
    details = "CAST(:d AS JSON)" if store._engine.dialect.name == "postgresql" else ":d"
    for link in links[seq - 1 :]:
        record = link.record.replace(old, new) if link.seq == seq else link.record
        digest = auditchain.link_hash(prev, record)
        await sql(
            store,
            "UPDATE audit_events SET record = :r, prev_hash = :p, hash = :h, "  # noqa: S608
            f"details = {details} WHERE seq = :s",
            {
                "r": record,
                "p": prev,
                "h": digest,
                "s": link.seq,
                "d": json.dumps(json.loads(record)["details"]),
            },
        )
        prev = digest


def reopen(log: AuditLog, **options: float) -> AuditLog:
    """The same home and database as a restarted controller sees them."""
    return AuditLog(log.store, log.key, log.head_file, **options)  # type: ignore[arg-type]


async def test_laundered_history_is_never_signed_after_a_restart(log: AuditLog) -> None:
    from controller.audit import AuditTampered

    await fill(log, 15)
    await log.close()  # the final checkpoint: seq 15 in the head file
    assert log.head_file is not None
    signed = read_head_file(log.head_file)
    assert signed is not None and signed.checkpoint.seq == 15 and signed.final
    await drop_protection(log.store)
    await rewrite_from(log.store, 3, '"unknown"', '"fine"')
    await sql(log.store, "DELETE FROM audit_checkpoints")
    # every link is consistent now: only the head this controller signed tells the truth
    assert auditchain.verify(await log.store.audit_links(0, 100), [], log.key.public_key()).ok

    restarted = reopen(log)
    await restarted.start()
    try:
        assert restarted.halted is not None
        assert "event 15 differs from the head this controller signed" in restarted.halted
        await fill(restarted, 5)  # appends go on while signing is stopped
        with pytest.raises(AuditTampered):
            await restarted.checkpoint()
        report = await restarted.verify()
        assert not report.ok
        assert "differs from the signed checkpoint" in (report.problem or "")
    finally:
        await restarted.close()
    after = read_head_file(log.head_file)
    assert after is not None and after.checkpoint == signed.checkpoint  # never moved
    assert await log.store.audit_checkpoints() == []  # and nothing was signed in the database


async def test_rewrite_while_running_is_never_signed(log: AuditLog) -> None:
    from controller.audit import AuditTampered

    await fill(log, 12)
    await log.checkpoint()
    await drop_protection(log.store)
    await rewrite_from(log.store, 2, '"unknown"', '"fine"')
    await sql(log.store, "DELETE FROM audit_checkpoints")
    with pytest.raises(AuditTampered, match="differs from the head this controller signed"):
        await log.checkpoint()
    assert log.status()["signing"] == "stopped"
    assert not (await log.verify()).ok


async def test_a_tail_cut_below_the_signed_head_is_never_signed(log: AuditLog) -> None:
    from controller.audit import AuditTampered

    await fill(log, 30)
    await log.checkpoint()
    assert log.head_file is not None
    before = read_head_file(log.head_file)
    assert before is not None and before.checkpoint.seq == 30
    await drop_protection(log.store)
    await sql(log.store, "DELETE FROM audit_events WHERE seq > 20")  # checkpoints kept
    with pytest.raises(AuditTampered, match=r"truncated|ends at event 20"):
        await log.checkpoint()
    restarted = reopen(log)
    await restarted.start()
    await restarted.close()
    assert restarted.halted is not None and "truncated" in restarted.halted
    after = read_head_file(log.head_file)
    assert after is not None and after.checkpoint.seq == 30  # the head file never goes back


async def test_unsigned_tail_rewritten_with_checkpoints_gone_is_never_signed(
    log: AuditLog,
) -> None:
    from controller.audit import AuditTampered

    await fill(log, 5)
    await log.checkpoint()
    await fill(log, 4)  # events 6..9: covered by no signature yet, only by memory
    await drop_protection(log.store)
    await rewrite_from(log.store, 7, '"unknown"', '"fine"')
    with pytest.raises(AuditTampered, match="last appended event 9"):
        await log.checkpoint()


async def test_events_slipped_in_behind_the_writer_halt_signing(log: AuditLog) -> None:
    await fill(log, 5)
    await log.checkpoint()
    # another "writer" appends a well-linked event the controller never wrote
    await log.store.append_audit(
        [NewAuditEvent(datetime.now(UTC), "user.added", actor="init", details={"user": "mallory"})]
    )
    await fill(log, 1)
    assert log.halted is not None and "behind its back" in log.halted


async def test_events_after_the_final_checkpoint_are_not_adopted(log: AuditLog) -> None:
    await fill(log, 5)
    await log.close()
    await log.store.append_audit(
        [NewAuditEvent(datetime.now(UTC), "user.added", actor="init", details={"user": "mallory"})]
    )
    restarted = reopen(log)
    await restarted.start()
    await restarted.close()
    assert restarted.halted is not None
    assert "after the final checkpoint" in restarted.halted


async def test_events_after_a_crash_are_adopted_and_signed(log: AuditLog) -> None:
    await fill(log, 5)
    await log.checkpoint()
    await fill(log, 3)  # then the process dies: no final checkpoint
    for task in log._tasks:
        task.cancel()
    log._tasks = []
    restarted = reopen(log)
    await restarted.start()
    try:
        assert restarted.halted is None
        assert restarted.status()["signed_seq"] == 8  # signed as it started
        assert (await restarted.verify()).ok
    finally:
        await restarted.close()


async def test_an_admin_accepts_the_chain_and_it_is_recorded(log: AuditLog) -> None:
    from controller.audit import AuditNothingToAccept

    await fill(log, 12)
    with pytest.raises(AuditNothingToAccept):
        await log.accept(actor="ada", role="admin", source="127.0.0.1", reason="nothing")
    await log.checkpoint()
    old_checkpoints = await log.store.audit_checkpoints()
    await drop_protection(log.store)
    await sql(log.store, "DELETE FROM audit_events WHERE seq > 8")
    await fill(log, 2)  # 9 and 10 again, linked to the cut chain
    assert log.halted is not None
    accepted = await log.accept(
        actor="ada", role="admin", source="127.0.0.1", reason="restored the backup of Monday"
    )
    assert log.halted is None
    event = (await log.store.audit_events(type="audit.accepted"))[-1]
    assert event.id == accepted["accepted"] == 11
    assert event.actor == "ada"
    assert event.details["reason"] == "restored the backup of Monday"
    assert "truncated" in event.details["problem"] or "behind" in event.details["problem"]
    assert event.details["signed_before"]["seq"] == 12
    superseded = {c["seq"] for c in event.details["superseded"]}
    assert {c.seq for c in old_checkpoints if c.seq > 8} <= superseded
    report = await log.verify()
    assert report.ok, report.problem
    assert any("superseded when ada accepted" in note for note in report.notes)
    await fill(log, 3)
    signed = await log.checkpoint()
    assert signed is not None and signed.seq == 14


async def test_a_chain_broken_in_itself_cannot_be_accepted(log: AuditLog) -> None:
    from controller.audit import AuditTampered

    await fill(log, 8)
    await log.checkpoint()
    await drop_protection(log.store)
    await sql(log.store, "DELETE FROM audit_events WHERE seq = 4")
    await sql(log.store, "DELETE FROM audit_events WHERE seq > 6")
    with pytest.raises(AuditTampered):
        await log.checkpoint()
    with pytest.raises(AuditTampered, match="broken in itself"):
        await log.accept(actor="ada", role="admin", source=None, reason="whatever")
    assert log.halted is not None


async def test_checkpoint_failures_are_retried_not_fatal(store: Store, tmp_path: Path) -> None:
    head = tmp_path / "head.json"
    log = AuditLog(store, create_key(tmp_path / "audit.pem"), head, checkpoint_seconds=0.05)
    await log.start()
    try:
        await fill(log, 3)
        assert log.status()["signed_seq"] == 0
        # the head file cannot be written (as with "too many open files")
        head.with_suffix(".tmp").mkdir()
        await fill(log, 3)
        await asyncio.sleep(0.3)
        assert all(not task.done() for task in log._tasks)  # the timer lives on
        assert (read_head_file(head) is None) or read_head_file(head).checkpoint.seq < 6  # type: ignore[union-attr]
        head.with_suffix(".tmp").rmdir()
        async with asyncio.timeout(scaled(10)):
            while log.status()["signed_seq"] != 6:  # noqa: ASYNC110 - polls the timer's work
                await asyncio.sleep(0.05)
        written = read_head_file(head)
        assert written is not None and written.checkpoint.seq == 6
    finally:
        await log.close()


async def test_dropping_a_checkpoint_line_from_an_export_is_detected(log: AuditLog) -> None:
    await fill(log, 25)
    await log.checkpoint()
    lines = _export_lines(
        await log.store.audit_links(), await log.store.audit_checkpoints(), log.key
    )
    assert lines[1].startswith('{"checkpoint"')
    public = log.key.public_key()
    assert auditchain.verify_export(lines, public).ok
    report = auditchain.verify_export(lines[:1] + lines[2:], public)
    assert not report.ok
    assert "checkpoint lines were removed" in (report.problem or "")
