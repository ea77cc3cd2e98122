"""The KPI report: how support went over a window of time, overall and per group.

Pure: it gets tickets with their timelines and ratings, the SLA policy and the window, and
returns plain data (JSON, a table or CSV is the CLI's business). Definitions:

opened
    tickets opened in the window.
resolved
    tickets resolved in the window (once each, at their last resolution in it).
first response, resolution
    SLA-clock time (working time of the priority's calendar, pauses excluded) of the
    responses and resolutions that happened in the window: count, median, p90, mean.
SLA compliance
    per clock, met / (met + breached), where the clocks that count are those that
    stopped in the window plus those of unfinished tickets that breached in it.
first-contact resolution
    share of the resolved tickets that were never escalated (resolved at L1).
reopen rate
    share of the resolved tickets that were reopened at some point.
customer satisfaction
    ratings given in the window: count, mean score, share of 4 and 5 ("satisfied").

Groups: ``technician`` is the ticket's assignee (``(unassigned)`` if none), ``level`` its
support level, both as they are at report time.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from controller.store import Rating, Ticket, TicketEvent
from controller.tickets import sla
from controller.tickets.lifecycle import State

GROUPINGS: Final = ("technician", "level")
UNASSIGNED: Final = "(unassigned)"


@dataclass(frozen=True)
class Facts:
    """One ticket with everything the report reads."""

    ticket: Ticket
    events: Sequence[TicketEvent]
    ratings: Sequence[Rating] = ()


@dataclass
class _Group:
    opened: int = 0
    resolved: int = 0
    first_response: list[float] = field(default_factory=list)
    resolution: list[float] = field(default_factory=list)
    met: dict[str, int] = field(default_factory=lambda: {"first_response": 0, "resolution": 0})
    breached: dict[str, int] = field(default_factory=lambda: {"first_response": 0, "resolution": 0})
    first_contact: int = 0
    reopened: int = 0
    scores: list[int] = field(default_factory=list)

    def absorb(self, other: _Group) -> None:
        self.opened += other.opened
        self.resolved += other.resolved
        self.first_response += other.first_response
        self.resolution += other.resolution
        for clock in self.met:
            self.met[clock] += other.met[clock]
            self.breached[clock] += other.breached[clock]
        self.first_contact += other.first_contact
        self.reopened += other.reopened
        self.scores += other.scores

    def as_json(self, name: str) -> dict[str, Any]:
        return {
            "group": name,
            "opened": self.opened,
            "resolved": self.resolved,
            "first_response": _times(self.first_response),
            "resolution": _times(self.resolution),
            "sla": {
                clock: {
                    "met": self.met[clock],
                    "breached": self.breached[clock],
                    "compliance": _share(self.met[clock], self.met[clock] + self.breached[clock]),
                }
                for clock in self.met
            },
            "first_contact_resolution": _share(self.first_contact, self.resolved),
            "reopen_rate": _share(self.reopened, self.resolved),
            "satisfaction": {
                "ratings": len(self.scores),
                "mean": round(statistics.fmean(self.scores), 2) if self.scores else None,
                "satisfied": _share(sum(1 for s in self.scores if s >= 4), len(self.scores)),
            },
        }


def report(
    facts: Iterable[Facts],
    policy: sla.Policy,
    since: datetime,
    until: datetime,
    by: str | None = None,
) -> dict[str, Any]:
    """The KPI report for ``[since, until)``, one row per group and a total."""
    if by is not None and by not in GROUPINGS:
        raise ValueError(f"--by is {' or '.join(GROUPINGS)}, not {by!r}")
    key: Callable[[Ticket], str] = {
        None: lambda t: "all",
        "technician": lambda t: t.assignee or UNASSIGNED,
        "level": lambda t: t.level,
    }[by]
    groups: dict[str, _Group] = {}
    for item in facts:
        group = groups.setdefault(key(item.ticket), _Group())
        _count(group, item, policy, since, until)
    total = _Group()
    for group in groups.values():
        total.absorb(group)
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "by": by,
        "policy": policy.source,
        "rows": [
            groups[name].as_json(name)
            for name in sorted(groups, key=lambda n: (n == UNASSIGNED, n))
        ],
        "total": total.as_json("total"),
    }


def _count(
    group: _Group, item: Facts, policy: sla.Policy, since: datetime, until: datetime
) -> None:
    ticket, events = item.ticket, item.events

    def inside(moment: datetime | None) -> bool:
        return moment is not None and since <= moment < until

    if inside(ticket.created_at):
        group.opened += 1
    states = sla.history(ticket, events)
    # first response: stopped in the window, or breached in it while still unanswered
    responded = ticket.responded_at if ticket.responded_at and ticket.responded_at < until else None
    clock = sla.first_response_clock(policy, ticket.priority, ticket.created_at, responded, until)
    if inside(responded):
        group.first_response.append(clock.elapsed.total_seconds())
        _verdict(group, clock)
    elif responded is None and clock.status == "breached" and inside(clock.breached_at):
        group.breached["first_response"] += 1
    # resolution: the last resolution in the window, or a breach in it while unresolved
    resolutions = [e for e in events if e.type == "ticket.resolved" and inside(e.at)]
    if resolutions:
        last = resolutions[-1]
        until_then = [(at, state) for at, state in states if at <= last.at]
        clock = sla.resolution_clock(policy, ticket.priority, until_then, last.at)
        group.resolved += 1
        group.resolution.append(clock.elapsed.total_seconds())
        _verdict(group, clock)
        earlier = [e for e in events if e.at <= last.at]
        if not any(e.type == "ticket.escalated" for e in earlier):
            group.first_contact += 1
        if any(e.type == "ticket.reopened" for e in events):
            group.reopened += 1
    else:
        until_now = [(at, state) for at, state in states if at < until]
        clock = sla.resolution_clock(policy, ticket.priority, until_now, until)
        finished = State(until_now[-1][1]) in (State.RESOLVED, State.CLOSED)
        if not finished and clock.status == "breached" and inside(clock.breached_at):
            group.breached["resolution"] += 1
    group.scores += [r.score for r in item.ratings if inside(r.at)]


def _verdict(group: _Group, clock: sla.Clock) -> None:
    if clock.status == "met":
        group.met[clock.kind] += 1
    elif clock.status == "breached":
        group.breached[clock.kind] += 1


def _times(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "median_s": None, "p90_s": None, "mean_s": None}
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "median_s": round(statistics.median(ordered)),
        "p90_s": round(percentile(ordered, 90)),
        "mean_s": round(statistics.fmean(ordered)),
    }


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of sorted values."""
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


CSV_COLUMNS: Final = (
    "group",
    "opened",
    "resolved",
    "first_response_median_s",
    "first_response_p90_s",
    "resolution_median_s",
    "resolution_p90_s",
    "resolution_mean_s",
    "sla_first_response_compliance",
    "sla_resolution_compliance",
    "sla_breached",
    "first_contact_resolution",
    "reopen_rate",
    "ratings",
    "satisfaction_mean",
    "satisfied",
)


def to_csv(data: dict[str, Any]) -> str:
    """The report as CSV: one line per group, the total last."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in [*data["rows"], data["total"]]:
        fr, res, s, sat = row["first_response"], row["resolution"], row["sla"], row["satisfaction"]
        writer.writerow(
            [
                row["group"],
                row["opened"],
                row["resolved"],
                fr["median_s"],
                fr["p90_s"],
                res["median_s"],
                res["p90_s"],
                res["mean_s"],
                s["first_response"]["compliance"],
                s["resolution"]["compliance"],
                s["first_response"]["breached"] + s["resolution"]["breached"],
                row["first_contact_resolution"],
                row["reopen_rate"],
                sat["ratings"],
                sat["mean"],
                sat["satisfied"],
            ]
        )
    return out.getvalue()
