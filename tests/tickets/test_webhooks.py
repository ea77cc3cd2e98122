"""Webhooks against a real HTTP receiver on 127.0.0.1 that fails on purpose, on SQLite and
PostgreSQL: signed, in order, nothing lost, repeats recognisable by event id."""

from __future__ import annotations

import asyncio
import socket
from datetime import timedelta

import pytest

from controller.store import Webhook
from controller.tickets import webhooks
from tests.tickets.conftest import Desk
from tests.tickets.receiver import receiver

SECRET = "s3cret-s3cret-s3cret"


async def _hook(office: Desk, url: str, events: tuple[str, ...] = ()) -> Webhook:
    return await office.store.add_webhook(url, SECRET, events, "root", office.clock())


async def _work(office: Desk, ticket_count: int = 2) -> list[str]:
    """Some ticket activity; returns the event ids in the order they were written."""
    for n in range(ticket_count):
        t = await office.desk.open(office.alice, title=f"t{n}", customer="ACME", priority="P3")
        await office.desk.note(office.alice, t.id, "looking")
        await office.desk.resolve(office.alice, t.id, "done")
    events = await office.store.events_for(range(1, ticket_count + 1))
    return [e.uid for e in sorted((e for es in events.values() for e in es), key=lambda e: e.id)]


async def _drain(office: Desk, rounds: int = 60, step: float = 1.0) -> None:
    """Let the worker run, moving the clock past each backoff (bounded)."""
    for _ in range(rounds):
        await office.desk.deliverer.drain()
        if not await office.store.deliveries(pending=True):
            return
        office.clock.advance(seconds=step)
    raise AssertionError("events still pending after the last round")


async def test_failures_are_retried_in_order_and_repeats_carry_the_same_id(office: Desk) -> None:
    # 2nd and 4th answered 503, 6th stored by the receiver but answered 500
    script = {2: 503, 4: 503, 6: "store-then-fail"}
    with receiver(lambda n: script.get(n, 200)) as rx:
        await _hook(office, rx.url)
        written = await _work(office)
        await _drain(office)
    assert rx.unique_ids() == written  # everything, in the order it happened
    ids = rx.ids()
    assert len(ids) == len(written) + 1  # the one repeat
    [repeat] = [i for i in set(ids) if ids.count(i) == 2]
    twice = [r for r in rx.stored if r.event["id"] == repeat]
    assert twice[0].body == twice[1].body
    for request in rx.stored:
        assert request.signed_with(SECRET)
        assert not request.signed_with("another secret")
        assert request.headers[webhooks.DELIVERY.lower()] == request.event["id"]
        assert request.headers[webhooks.EVENT.lower()] == request.event["type"]
    first = rx.stored[0].event
    assert first["type"] == "ticket.opened"
    assert first["ticket"]["id"] == "T-1" and first["ticket"]["state"] == "new"
    assert first["data"] == {
        "title": "t0",
        "customer": "ACME",
        "priority": "P3",
        "channel": "remote",
    }
    log = await office.store.deliveries(ticket_id=1)
    assert all(d.delivered_at is not None for d in log)
    assert [d.attempts for d in log] == [1, 2, 2]  # T-1: opened; noted and resolved after 503s


async def test_a_receiver_down_for_an_hour_gets_everything_when_it_is_back(office: Desk) -> None:
    with socket.socket() as probe:  # a port with nobody listening: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hook = await _hook(office, f"http://127.0.0.1:{port}/hooks")
    written = await _work(office, ticket_count=3)
    for _ in range(30):  # an hour of refused attempts, in two-minute steps of the clock
        await office.desk.deliverer.drain()
        office.clock.advance(minutes=2)
    [state] = await office.store.list_webhooks()
    assert state.failures >= 5 and "refused" in (state.last_error or "").lower()
    assert state.next_attempt_at is not None
    assert state.next_attempt_at - office.clock() <= timedelta(seconds=0.05)  # capped backoff
    pending = await office.store.deliveries(pending=True)
    assert [d.event.uid for d in pending] == written  # queued, none lost, none skipped
    assert pending[0].attempts == state.failures and pending[1].attempts == 0  # head of line
    with receiver(port=port) as rx:
        await _drain(office)
    assert rx.unique_ids() == written
    assert hook.id == state.id


async def test_filters_removal_and_retry(office: Desk) -> None:
    with receiver() as rx:
        only = await _hook(office, rx.url, ("ticket.resolved", "ticket.sla_*"))
        await _work(office, ticket_count=1)
        await _drain(office)
        assert [r.event["type"] for r in rx.stored] == ["ticket.resolved"]
        assert await office.store.remove_webhook(only.id, office.clock()) is not None
        assert await office.store.remove_webhook(only.id, office.clock()) is None
        await _work(office, ticket_count=1)
        await _drain(office)
        assert len(rx.stored) == 1
    assert await office.store.retry_webhook(only.id, office.clock()) is None  # removed


async def test_two_workers_never_send_the_same_event_twice_when_all_goes_well(
    office: Desk,
) -> None:
    other = webhooks.Deliverer(office.store, clock=office.clock, base=0.01, cap=0.05, poll=0.05)
    with receiver() as rx:
        await _hook(office, rx.url)
        written = await _work(office, ticket_count=3)
        for _ in range(10):
            await asyncio.gather(office.desk.deliverer.drain(), other.drain())
            if not await office.store.deliveries(pending=True):
                break
    assert rx.ids() == written


def test_backoff_grows_and_is_capped() -> None:
    worker = webhooks.Deliverer(None, base=1.0, cap=60.0)  # type: ignore[arg-type]
    for failures in range(1, 12):
        wait = worker.backoff(failures).total_seconds()
        assert 1.0 <= wait <= min(60.0, 2 ** (failures - 1))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/x", r"http\(s\)"),
        ("file:///etc/passwd", r"http\(s\)"),
        ("https://user:pw@example.com/", "no credentials"),
        ("example.com/hook", r"http\(s\)"),
    ],
)
def test_bad_webhook_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        webhooks.check_url(url)
    with pytest.raises(ValueError):
        webhooks.post(url, b"{}", {}, 1.0)


def test_signatures_cover_the_timestamp_and_the_body() -> None:
    sig = webhooks.signature(SECRET, 1700000000, b'{"a":1}')
    assert webhooks.verify(SECRET, "1700000000", b'{"a":1}', sig)
    assert not webhooks.verify(SECRET, "1700000001", b'{"a":1}', sig)
    assert not webhooks.verify(SECRET, "1700000000", b'{"a":2}', sig)
    assert not webhooks.verify(SECRET, "x", b'{"a":1}', sig)
