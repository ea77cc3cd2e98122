"""The ticket desk on SQLite and PostgreSQL: lifecycle, levels, SLA monitor, audit."""

from __future__ import annotations

import asyncio

import pytest

from controller.store import Change, Ticket
from controller.tickets.desk import DeskError, Who
from tests.tickets.conftest import T0, Desk

SYSTEM = Who("sla-policy")


async def _open(office: Desk, priority: str = "P2", **kw: str) -> Ticket:
    return await office.desk.open(
        office.alice, title="Printer offline", customer="ACME", priority=priority, **kw
    )


async def test_a_ticket_lives_through_its_states_and_every_step_is_on_its_timeline(
    office: Desk,
) -> None:
    t = await _open(office)
    assert (t.state, t.level, t.assignee, t.responded_at) == ("new", "L1", None, None)
    office.clock.advance(minutes=5)
    t = await office.desk.assign(office.alice, t.id, "alice")
    assert (t.state, t.assignee, t.responded_at) == ("open", "alice", None)  # internal: no response
    office.clock.advance(minutes=5)
    t = await office.desk.note(office.alice, t.id, "called the customer, printer shows error 49")
    assert t.responded_at == office.clock.now
    t = await office.desk.wait(office.alice, t.id, "customer restarts the printer")
    assert t.state == "waiting"
    t = await office.desk.resume(office.alice, t.id, "customer called back")
    t, article = await office.desk.resolve(office.alice, t.id, "firmware update fixed error 49")
    assert (t.state, t.resolution, article) == ("resolved", "firmware update fixed error 49", None)
    t = await office.desk.reopen(office.alice, t.id, "error 49 is back")
    assert (t.state, t.resolution, t.resolved_at) == ("open", None, None)
    t, _ = await office.desk.resolve(office.alice, t.id, "replaced the formatter board")
    t = await office.desk.close(office.alice, t.id)
    assert t.state == "closed" and t.closed_at == office.clock.now

    events = await office.store.ticket_events(t.id)
    assert [e.type for e in events] == [
        "ticket.opened",
        "ticket.assigned",
        "ticket.noted",
        "ticket.waiting",
        "ticket.resumed",
        "ticket.resolved",
        "ticket.reopened",
        "ticket.resolved",
        "ticket.closed",
    ]
    transitions = [e.data.get("transition") for e in events]
    assert transitions == [
        None,
        ["new", "open"],
        None,
        ["open", "waiting"],
        ["waiting", "open"],
        ["open", "resolved"],
        ["resolved", "open"],
        ["open", "resolved"],
        ["resolved", "closed"],
    ]
    assert all(e.data["ticket"]["id"] == t.ref for e in events)
    assert len({e.uid for e in events}) == len(events)
    # accountable steps are audited: the assignment and every state change
    assert (
        office.audit.types() == ["ticket.opened", "ticket.assigned"] + ["ticket.state_changed"] * 6
    )


@pytest.mark.parametrize(
    ("steps", "action", "message"),
    [
        ([], "close", "cannot close T-1: it is new (resolve it first)"),
        (["resolve", "close"], "reopen", "closed tickets are final"),
        ([], "resume", "it is not waiting on the customer"),
        (["resolve"], "resolve", "it is already resolved"),
        (["resolve", "close"], "note", "cannot respond T-1: it is closed"),
        (["resolve"], "wait", "allowed now: respond, close, reopen"),
    ],
)
async def test_illegal_transitions_are_refused_and_change_nothing(
    office: Desk, steps: list[str], action: str, message: str
) -> None:
    t = await _open(office)
    calls = {
        "resolve": lambda: office.desk.resolve(office.alice, t.id, "done"),
        "close": lambda: office.desk.close(office.alice, t.id),
        "reopen": lambda: office.desk.reopen(office.alice, t.id, "again"),
        "resume": lambda: office.desk.resume(office.alice, t.id, "back"),
        "note": lambda: office.desk.note(office.alice, t.id, "hello"),
        "wait": lambda: office.desk.wait(office.alice, t.id, "logs"),
    }
    for step in steps:
        await calls[step]()
    before = await office.store.get_ticket(t.id)
    events = await office.store.ticket_events(t.id)
    with pytest.raises(DeskError) as info:
        await calls[action]()
    assert info.value.code == "conflict"
    assert message.replace("T-1", t.ref) in info.value.message
    assert await office.store.get_ticket(t.id) == before
    assert await office.store.ticket_events(t.id) == events


async def test_unknown_ticket(office: Desk) -> None:
    with pytest.raises(DeskError, match="there is no ticket T-99") as info:
        await office.desk.note(office.alice, 99, "x")
    assert info.value.code == "not_found"


async def test_escalation_records_who_and_why_unassigns_and_checks_levels(office: Desk) -> None:
    t = await _open(office, assignee="alice")
    assert t.assignee == "alice"
    t = await office.desk.escalate(office.alice, t.id, "L2", "needs driver expertise")
    assert (t.level, t.assignee) == ("L2", None)  # alice is L1
    [event] = await office.store.ticket_events(t.id, ["ticket.escalated"])
    assert (event.actor, event.data["from"], event.data["to"]) == ("alice", "L1", "L2")
    assert event.data["reason"] == "needs driver expertise"
    assert event.data["unassigned"] == "alice"
    audit = dict(office.audit.events)["ticket.escalated"]
    assert audit["actor"] == "alice" and audit["details"]["to"] == "L2"

    with pytest.raises(DeskError, match="may not work it"):
        await office.desk.assign(office.alice, t.id, "alice")
    assert (await office.desk.assign(office.alice, t.id, "bob")).assignee == "bob"
    with pytest.raises(DeskError, match="already at L2; escalation goes up"):
        await office.desk.escalate(office.alice, t.id, "L1", "back down")
    for bad, message in (("L5", "there is no support level 'L5'"), ("X", "levels are L1")):
        with pytest.raises(DeskError, match=message) as info:
            await office.desk.escalate(office.alice, t.id, bad, "why not")
        assert info.value.code == "bad_request"
    with pytest.raises(DeskError, match="name them with --vendor"):
        await office.desk.escalate(office.alice, t.id, "L4", "firmware bug")
    t = await office.desk.escalate(
        office.alice, t.id, "L4", "firmware bug", vendor="Kyocera", vendor_ref="KY-123"
    )
    assert (t.level, t.vendor, t.vendor_ref, t.assignee) == ("L4", "Kyocera", "KY-123", None)
    assert (
        await office.desk.assign(office.alice, t.id, "carol")
    ).assignee == "carol"  # L3 follows L4
    with pytest.raises(DeskError, match="no user 'mallory'"):
        await office.desk.assign(office.alice, t.id, "mallory")
    with pytest.raises(DeskError, match="may not work it"):
        await office.desk.assign(office.alice, t.id, "dave")  # auditors work no tickets


async def test_a_decision_that_raises_writes_nothing(office: Desk) -> None:
    t = await _open(office)

    def decide(ticket: Ticket) -> list[Change]:
        raise DeskError("conflict", "no")

    with pytest.raises(DeskError):
        await office.store.change_ticket(t.id, office.clock(), "alice", decide)
    assert [e.type for e in await office.store.ticket_events(t.id)] == ["ticket.opened"]
    with pytest.raises(ValueError, match="may not set 'title'"):
        await office.store.change_ticket(
            t.id, office.clock(), "x", lambda _: [Change("x", {}, {"title": "y"})]
        )
    assert (await office.store.get_ticket(t.id)) == t


async def test_concurrent_resolutions_one_wins_one_is_refused(office: Desk) -> None:
    t = await _open(office)
    results = await asyncio.gather(
        *(office.desk.resolve(office.alice, t.id, f"fix {n}") for n in range(4)),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, DeskError)]
    assert len(won) == 1 and len(lost) == 3
    assert len(await office.store.ticket_events(t.id, ["ticket.resolved"])) == 1


async def test_a_session_is_a_response_and_ends_waiting(office: Desk) -> None:
    t = await _open(office)
    await office.desk.wait(office.alice, t.id, "customer is away")
    office.clock.advance(minutes=30)
    await office.desk.session_started(t.id, "S-1", "alice")
    t = await office.desk.get(t.id)
    assert t.state == "open"
    types = [e.type for e in await office.store.ticket_events(t.id)]
    assert types[-2:] == ["ticket.resumed", "ticket.session_started"]
    # on a closed ticket the session is recorded, nothing else happens
    await office.desk.resolve(office.alice, t.id, "ok")
    await office.desk.close(office.alice, t.id)
    await office.desk.session_started(t.id, "S-2", "alice")
    assert (await office.desk.get(t.id)).state == "closed"


async def test_links_are_seen_from_both_ends(office: Desk) -> None:
    a, b = await _open(office), await _open(office)
    await office.desk.link(office.alice, b.id, a.id, "follows")
    [from_b] = await office.store.ticket_links(b.id)
    [from_a] = await office.store.ticket_links(a.id)
    assert (from_b.other_id, from_b.kind) == (a.id, "follows")
    assert (from_a.other_id, from_a.kind) == (b.id, "followed_by")
    for other, kind, code in (
        (a.id, "follows", "conflict"),
        (a.id, "likes", "bad_request"),
        (b.id, "relates", "bad_request"),
        (999, "relates", "not_found"),
    ):
        with pytest.raises(DeskError) as info:
            await office.desk.link(office.alice, b.id, other, kind)
        assert info.value.code == code
    with pytest.raises(DeskError) as info:
        await office.desk.link(
            office.alice, a.id, b.id, "followed_by"
        )  # the same link, other way round
    assert info.value.code == "conflict"


async def test_ratings_land_once_per_session(office: Desk) -> None:
    t = await _open(office)
    sessions = await _session(office, t)
    assert await office.desk.rating(t.id, sessions, 5, "quick", "alice") is True
    assert await office.desk.rating(t.id, sessions, 1, "again", "alice") is False
    [rating] = await office.store.ratings(ticket_id=t.id)
    assert (rating.score, rating.comment, rating.technician) == (5, "quick", "alice")
    [event] = await office.store.ticket_events(t.id, ["ticket.rated"])
    assert event.data["score"] == 5


async def _session(office: Desk, t: Ticket) -> str:
    await office.store.upsert_agent("agent-1", "k" * 43, "pc", "linux", T0)
    session = await office.store.create_session(
        "S-rated", t.id, "agent-1", "alice", ["diagnostics:read"], T0, T0.replace(hour=23)
    )
    return session.id


async def test_sla_monitor_alerts_once_and_escalates_by_policy(office: Desk) -> None:
    t = await _open(office, priority="P1")  # 24/7: 15 min response, 4 h resolution, escalate to L2
    assert await office.desk.check_sla() == []
    office.clock.advance(minutes=12)  # 3 of 15 minutes left: at risk
    [alert] = await office.desk.check_sla()
    assert (alert.type, alert.data["clock"]) == ("ticket.sla_at_risk", "first_response")
    assert await office.desk.check_sla() == []  # raised once
    await office.desk.note(office.alice, t.id, "on it")
    office.clock.advance(hours=3, minutes=10)  # resolution: 3h22 of 4h gone
    [alert] = await office.desk.check_sla()
    assert (alert.type, alert.data["clock"]) == ("ticket.sla_at_risk", "resolution")
    t = await office.desk.get(t.id)
    assert t.level == "L2"
    [escalated] = await office.store.ticket_events(t.id, ["ticket.escalated"])
    assert escalated.actor == "sla-policy" and escalated.data["auto"] is True
    assert "resolution SLA at risk" in escalated.data["reason"]
    office.clock.advance(hours=1)
    [alert] = await office.desk.check_sla()
    assert alert.type == "ticket.sla_breached"
    assert set(t.sla_alerts) | {"resolution:breached"} == set(
        (await office.desk.get(t.id)).sla_alerts
    )
    assert ("ticket.escalated", "sla-policy") in [(k, f["actor"]) for k, f in office.audit.events]


async def test_waiting_pauses_the_resolution_clock(office: Desk) -> None:
    t = await _open(office, priority="P2")  # office hours, 8 h
    await office.desk.note(office.alice, t.id, "asked for logs")
    office.clock.advance(hours=1)
    await office.desk.wait(office.alice, t.id, "logs")
    office.clock.advance(hours=20)  # paused, across the night
    t = await office.desk.get(t.id)
    first, resolution = office.desk.clocks(t, await office.store.ticket_events(t.id))
    assert first.status == "met"
    assert resolution.status == "paused" and resolution.elapsed.total_seconds() == 3600
    assert resolution.deadline is None
    await office.desk.resume(office.alice, t.id, "logs came")
    t = await office.desk.get(t.id)
    _, resolution = office.desk.clocks(t, await office.store.ticket_events(t.id))
    assert resolution.status == "on_track"
    assert resolution.deadline == office.clock.now.replace(hour=14)  # 7 h more of office time
