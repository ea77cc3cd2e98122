"""Tickets under SLA: what the ticket features cost as the desk fills up.

Measured in-process against a real SQLite file (the store as the controller uses it) and a
real HTTP receiver on 127.0.0.1:

1. business-hours arithmetic: ``Calendar.add`` and ``Calendar.elapsed`` on the office
   calendar of the example policy (Europe/Berlin, holidays), 1 to 30 working hours;
2. ``ticket.list`` as the API does it: every ticket, its timeline, both SLA clocks, for a
   desk of ``--tickets`` active tickets with five events each;
3. one pass of the SLA monitor over the same desk;
4. knowledge-base search (FTS5) over ``--articles`` articles: one word, two words;
5. webhook delivery: ``--events`` events through the outbox to a receiver that answers 204.

    python bench/tickets.py [--tickets 2000] [--articles 10000] [--events 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from _harness import (
    command_line,
    install_deadline,
    machine_lines,
    percentile,
    table,
    temp_dir,
    update_results,
)

from controller.store import Change, Store, Ticket
from controller.tickets import sla, webhooks
from controller.tickets.desk import TicketDesk, Who

NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)  # a Wednesday, 14:00 in Berlin
WORDS = [
    "printer",
    "spooler",
    "driver",
    "firmware",
    "network",
    "dns",
    "vpn",
    "wifi",
    "laptop",
    "battery",
    "disk",
    "full",
    "slow",
    "update",
    "reboot",
    "service",
    "outlook",
    "mailbox",
    "password",
    "account",
    "locked",
    "certificate",
    "proxy",
    "drucker",
    "netzwerk",
    "kennwort",
    "принтер",
    "сеть",
    "пароль",
]


def timed(calls: int, fn: Any) -> float:
    """Microseconds per call."""
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls * 1e6


def calendar_figures() -> list[list[str]]:
    office = sla.load_policy(None).calendars["office"]
    rng = random.Random(7)
    starts = [NOW - timedelta(minutes=rng.randrange(0, 60 * 24 * 60)) for _ in range(2000)]
    amounts = [timedelta(minutes=rng.randrange(60, 30 * 60)) for _ in range(2000)]
    items = iter(range(10**9))

    def add() -> None:
        n = next(items) % 2000
        office.add(starts[n], amounts[n])

    def elapsed() -> None:
        n = next(items) % 2000
        office.elapsed(starts[n], starts[n] + amounts[n] * 3)

    return [
        ["`Calendar.add` (1-30 working hours)", f"{timed(5000, add):.1f} µs"],
        ["`Calendar.elapsed` (3-90 h of wall time)", f"{timed(5000, elapsed):.1f} µs"],
    ]


async def seed_desk(desk: TicketDesk, count: int) -> None:
    who = Who("bench", "technician")
    rng = random.Random(11)
    for n in range(count):
        desk.clock = lambda n=n: NOW - timedelta(minutes=30 + n % 600)  # type: ignore[misc]
        ticket = await desk.open(
            who, title=f"ticket {n}", customer=f"c{n % 50}", priority=rng.choice(["P2", "P3"])
        )
        await desk.note(who, ticket.id, "looking into it")
        await desk.wait(who, ticket.id, "logs")
        await desk.resume(who, ticket.id, "logs came")
        await desk.store.change_ticket(
            ticket.id, desk.clock(), "bench", lambda t: [Change("ticket.noted", {"text": "x"})]
        )
    desk.clock = lambda: NOW  # type: ignore[method-assign]


async def list_once(desk: TicketDesk) -> int:
    """What ``ticket.list`` does, without the network."""
    tickets = await desk.store.list_tickets()
    timelines = await desk.store.events_for(t.id for t in tickets)
    for ticket in tickets:
        desk.clocks(ticket, timelines.get(ticket.id, []), NOW)
    return len(tickets)


async def desk_figures(store: Store, tickets: int) -> list[list[str]]:
    desk = TicketDesk(store, sla.load_policy(None), clock=lambda: NOW)
    started = time.perf_counter()
    await seed_desk(desk, tickets)
    seeding = time.perf_counter() - started
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        await list_once(desk)
        runs.append(time.perf_counter() - started)
    best = min(runs)
    started = time.perf_counter()
    await desk.check_sla()
    monitor = time.perf_counter() - started
    changes = tickets * 5
    return [
        [f"ticket changes through the desk ({changes:,}, one transaction each)",
         f"{changes / seeding:,.0f} /s"],
        [f"`ticket.list` work for {tickets:,} active tickets (store + SLA clocks)",
         f"{best * 1000:,.0f} ms ({best / tickets * 1e6:,.0f} µs per ticket)"],
        [f"one SLA monitor pass over {tickets:,} tickets (alerts included)",
         f"{monitor * 1000:,.0f} ms"],
    ]  # fmt: skip


async def kb_figures(store: Store, articles: int) -> list[list[str]]:
    rng = random.Random(5)
    for n in range(articles):
        title = " ".join(rng.choices(WORDS, k=4))
        body = " ".join(rng.choices(WORDS, k=60)) + f" case{n}"
        await store.add_article(title, body, "bench", NOW)
    rows = []
    for label, make in (
        ("one word", lambda: rng.choice(WORDS)),
        ("two words", lambda: f"{rng.choice(WORDS)} {rng.choice(WORDS)[:4]}"),
    ):
        times = []
        for _ in range(200):
            query = make()
            started = time.perf_counter()
            await store.search_articles(query, 10)
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        rows.append(
            [
                f"`kb search`, {label}, {articles:,} articles (FTS5)",
                f"p50 {percentile(times, 0.5):.2f} ms, p99 {percentile(times, 0.99):.2f} ms",
            ]
        )
    return rows


async def webhook_figures(store: Store, events: int) -> list[list[str]]:
    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        await store.add_webhook(url, webhooks.new_secret(), [], "bench", NOW)
        [ticket] = [await store.open_ticket("webhook bench", "c", "P3", "bench", NOW)]
        await _events(store, ticket, events - 1)
        worker = webhooks.Deliverer(store, clock=lambda: NOW)
        started = time.perf_counter()
        delivered = 0
        for _ in range(events):  # bounded: each pass delivers at least one or stops
            step = await worker.drain()
            delivered += step
            if not step:
                break
        took = time.perf_counter() - started
    finally:
        server.shutdown()
        server.server_close()
    return [
        [f"webhook delivery, {delivered:,} events, one endpoint (signed POST, in order)",
         f"{delivered / took:,.0f} events/s"],
    ]  # fmt: skip


async def _events(store: Store, ticket: Ticket, count: int) -> None:
    for n in range(count):
        await store.change_ticket(
            ticket.id, NOW, "bench", lambda t, n=n: [Change("ticket.noted", {"text": str(n)})]
        )


async def main(args: argparse.Namespace, base: Path) -> list[list[str]]:
    rows = calendar_figures()
    for name, figures in (
        ("desk", lambda s: desk_figures(s, args.tickets)),
        ("kb", lambda s: kb_figures(s, args.articles)),
        ("webhooks", lambda s: webhook_figures(s, args.events)),
    ):
        store = await Store.open(f"sqlite+aiosqlite:///{base / f'{name}.db'}")
        try:
            await store.migrate()
            rows += await figures(store)
        finally:
            await store.close()
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=2000)
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=1000)
    args = parser.parse_args()
    install_deadline(600)
    with temp_dir("helpline-bench-tickets-") as base:
        rows = asyncio.run(main(args, base))
    lines = [
        "## Tickets under SLA (`bench/tickets.py`)",
        "",
        *machine_lines(),
        f"- command: `{command_line()}`",
        "- what: in-process against a SQLite file (WAL, `synchronous=FULL`: every change is "
        "one durable transaction with its timeline event and outbox rows); webhook events go "
        "to an `http.server` receiver on 127.0.0.1. No target in the brief: these figures say "
        "how far the desk scales on this 2-core machine.",
        "",
        *table(["figure", "result"], rows),
    ]
    body = "\n".join(lines)
    print(body)
    update_results("tickets", body)
