"""The KPI report over tickets worked through the desk (so the events are the real ones)."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any

from controller.tickets import kpi
from tests.tickets.conftest import T0, Desk


async def _report(office: Desk, by: str | None = None) -> dict[str, Any]:
    store = office.store
    since = T0 - timedelta(hours=1)
    tickets = await store.tickets_active_since(since)
    timelines = await store.events_for(t.id for t in tickets)
    ratings: dict[int, list[Any]] = {}
    for rating in await store.ratings(since=since):
        ratings.setdefault(rating.ticket_id, []).append(rating)
    facts = [kpi.Facts(t, timelines.get(t.id, []), ratings.get(t.id, [])) for t in tickets]
    return kpi.report(facts, office.desk.policy, since, office.clock(), by)


async def _scenario(office: Desk) -> None:
    desk, alice, clock = office.desk, office.alice, office.clock
    clock.now = T0 - timedelta(days=40)
    await desk.open(alice, title="old and forgotten", customer="Z", priority="P3")
    clock.now = T0
    one = await desk.open(alice, title="one", customer="A", priority="P1", assignee="alice")
    two = await desk.open(alice, title="two", customer="B", priority="P1")
    await desk.open(alice, title="three", customer="C", priority="P1")
    clock.now = T0 + timedelta(minutes=10)
    await desk.note(alice, one.id, "on it")
    clock.now = T0 + timedelta(minutes=20)
    await desk.note(alice, two.id, "on it")
    await desk.escalate(alice, two.id, "L2", "needs a specialist")
    await desk.assign(alice, two.id, "bob")
    clock.now = T0 + timedelta(hours=2)
    await desk.resolve(alice, one.id, "fixed")
    await office.store.add_rating(one.id, None, 5, "great", "alice", clock.now)
    clock.now = T0 + timedelta(hours=5)
    await desk.resolve(alice, two.id, "fixed")
    clock.now = T0 + timedelta(hours=6)
    await desk.reopen(alice, two.id, "not fixed")
    clock.now = T0 + timedelta(hours=7)
    await desk.resolve(alice, two.id, "really fixed")
    await office.store.add_rating(two.id, None, 2, "slow", "bob", clock.now)
    clock.now = T0 + timedelta(hours=8)


async def test_the_kpis_of_a_morning(office: Desk) -> None:
    await _scenario(office)
    total = (await _report(office))["total"]
    assert (total["opened"], total["resolved"]) == (3, 2)
    assert total["first_response"] == {"count": 2, "median_s": 900, "p90_s": 1200, "mean_s": 900}
    # resolution: one took 2 h; two ran 5 h, paused while resolved, then 1 h more
    assert total["resolution"] == {"count": 2, "median_s": 4 * 3600, "p90_s": 6 * 3600,
                                   "mean_s": 4 * 3600}  # fmt: skip
    assert total["sla"] == {
        # met: one; breached: two (answered late), three (never answered, in the window)
        "first_response": {"met": 1, "breached": 2, "compliance": 0.3333},
        # met: one; breached: two (at resolution), three (still open, breached at +4 h)
        "resolution": {"met": 1, "breached": 2, "compliance": 0.3333},
    }
    assert total["first_contact_resolution"] == 0.5  # two was escalated
    assert total["reopen_rate"] == 0.5
    assert total["satisfaction"] == {"ratings": 2, "mean": 3.5, "satisfied": 0.5}


async def test_kpis_by_level_and_by_technician(office: Desk) -> None:
    await _scenario(office)
    by_level = {r["group"]: r for r in (await _report(office, "level"))["rows"]}
    assert set(by_level) == {"L1", "L2"}
    assert (by_level["L1"]["opened"], by_level["L1"]["resolved"]) == (2, 1)
    assert (by_level["L2"]["resolved"], by_level["L2"]["first_contact_resolution"]) == (1, 0.0)
    by_tech = {r["group"]: r for r in (await _report(office, "technician"))["rows"]}
    assert set(by_tech) == {"alice", "bob", kpi.UNASSIGNED}
    assert by_tech["bob"]["satisfaction"]["mean"] == 2.0
    assert by_tech[kpi.UNASSIGNED]["sla"]["resolution"]["breached"] == 1
    rows = list(csv.DictReader(io.StringIO(kpi.to_csv(await _report(office, "technician")))))
    assert [r["group"] for r in rows] == ["alice", "bob", kpi.UNASSIGNED, "total"]
    assert rows[-1]["first_contact_resolution"] == "0.5"


async def test_an_empty_window(office: Desk) -> None:
    report = await _report(office)
    assert report["rows"] == [] and report["total"]["opened"] == 0
    assert report["total"]["first_response"]["median_s"] is None
    assert report["total"]["sla"]["resolution"]["compliance"] is None


def test_percentiles_are_nearest_rank() -> None:
    assert kpi.percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90) == 9
    assert kpi.percentile([5], 90) == 5
    assert kpi.percentile([1, 100], 50) == 1
