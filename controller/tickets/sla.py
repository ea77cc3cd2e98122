"""SLA policies (a TOML file) and the two clocks every ticket runs against them.

The policy names calendars and, per priority, a first-response and a resolution target
measured in that calendar's working time (see ``sla.example.toml`` beside this module,
which is also the policy a controller uses until ``HOME/sla.toml`` exists)::

    at_risk = 0.25                      # at risk when less than this share is left
    [calendars.office]
    timezone = "Europe/Berlin"
    hours = ["mon-fri 08:00-18:00"]
    holidays = [2026-04-03, "12-25"]    # dates, or MM-DD for every year
    [priorities.P2]
    calendar = "office"                 # or "24/7"
    first_response = "1h"
    resolution = "8h"
    escalate_at_risk = "L2"             # optional: escalate automatically when at risk

A malformed file is refused with a :class:`PolicyError` that names the file and line.

The clocks: **first response** runs from opening until the first response (a note, a
session with the customer, waiting on them, or resolving) and never pauses.
**Resolution** runs while the ticket is new or open, pauses while it waits on the
customer, stops when it is resolved and runs on from where it stood after a reopen.
Each clock is ``on_track``, ``at_risk``, ``breached``, ``met`` or ``paused`` (``none``
when the policy sets no target for the priority).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Final

from controller.store import Ticket, TicketEvent
from controller.tickets import calendar as cal
from controller.tickets.lifecycle import CLOCK_RUNS, State
from protocol import durations
from protocol.vocabulary import PRIORITIES, TICKET_LEVELS, SlaStatus

EXAMPLE: Final = "sla.example.toml"

Status = SlaStatus
#: worst first: a ticket's SLA state is the worse of its two clocks
SEVERITY: Final[dict[str, int]] = {
    "breached": 5,
    "at_risk": 4,
    "on_track": 3,
    "paused": 2,
    "met": 1,
    "none": 0,
}


class PolicyError(ValueError):
    """The SLA file is malformed; the message names the file, the line and the problem."""


@dataclass(frozen=True)
class Target:
    """What one priority promises."""

    priority: str
    calendar: cal.Calendar
    first_response: timedelta
    resolution: timedelta
    escalate_at_risk: str | None = None


@dataclass(frozen=True)
class Policy:
    at_risk: float
    calendars: Mapping[str, cal.Calendar]
    targets: Mapping[str, Target]
    source: str
    #: what is valid but probably not meant (priorities without targets, days of office
    #: hours); ``sla check`` prints them, ``serve`` logs them at start
    warnings: tuple[str, ...] = ()

    def target(self, priority: str) -> Target | None:
        """The target for a priority, if the policy sets one."""
        return self.targets.get(priority)

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "at_risk": self.at_risk,
            "warnings": list(self.warnings),
            "calendars": {name: c.describe() for name, c in self.calendars.items()},
            "priorities": {
                p: {
                    "calendar": t.calendar.name,
                    "first_response_s": int(t.first_response.total_seconds()),
                    "resolution_s": int(t.resolution.total_seconds()),
                    "escalate_at_risk": t.escalate_at_risk,
                }
                for p, t in sorted(self.targets.items())
            },
        }


@dataclass(frozen=True)
class Clock:
    """One SLA clock of one ticket at one moment."""

    kind: str  # "first_response" or "resolution"
    status: Status
    target: timedelta | None
    elapsed: timedelta
    #: when the target is (or was) reached; None while paused or without a target
    deadline: datetime | None
    breached_at: datetime | None
    stopped_at: datetime | None

    @property
    def remaining(self) -> timedelta | None:
        """Working time left (negative once breached), None without a target."""
        return None if self.target is None else self.target - self.elapsed

    def as_json(self) -> dict[str, Any]:
        remaining = self.remaining
        return {
            "status": self.status,
            "target_s": None if self.target is None else int(self.target.total_seconds()),
            "elapsed_s": int(self.elapsed.total_seconds()),
            "remaining_s": None if remaining is None else int(remaining.total_seconds()),
            "deadline": _iso(self.deadline),
            "breached_at": _iso(self.breached_at),
            "stopped_at": _iso(self.stopped_at),
        }


def worst(*statuses: str) -> str:
    """The most urgent of several clock states."""
    return max(statuses, key=lambda s: SEVERITY.get(s, 0))


# -- evaluation ---------------------------------------------------------------------------


def history(ticket: Ticket, events: Iterable[TicketEvent]) -> list[tuple[datetime, str]]:
    """A ticket's states over time, ``[(since, state), …]``, from the ``transition`` of
    its events (a ticket from before revision 0003 has none: its state since opening)."""
    moves = [(e.at, e.data["transition"]) for e in events if "transition" in e.data]
    first = str(moves[0][1][0]) if moves else ticket.state
    return [(ticket.created_at, first)] + [(at, str(move[1])) for at, move in moves]


def evaluate(
    policy: Policy, ticket: Ticket, events: Iterable[TicketEvent], now: datetime
) -> tuple[Clock, Clock]:
    """Both clocks of a ticket at ``now``: first response, resolution."""
    return (
        first_response_clock(policy, ticket.priority, ticket.created_at, ticket.responded_at, now),
        resolution_clock(policy, ticket.priority, history(ticket, events), now),
    )


def first_response_clock(
    policy: Policy,
    priority: str,
    created_at: datetime,
    responded_at: datetime | None,
    now: datetime,
) -> Clock:
    """The first-response clock: from opening to the first response; never paused."""
    target = policy.target(priority)
    end = responded_at or now
    if target is None:
        return Clock("first_response", "none", None, end - created_at, None, None, responded_at)
    calendar, goal = target.calendar, target.first_response
    elapsed = calendar.elapsed(created_at, end)
    deadline = calendar.add(created_at, goal)
    breached_at = deadline if elapsed > goal or (responded_at is None and elapsed >= goal) else None
    if responded_at is not None:
        status: Status = "met" if elapsed <= goal else "breached"
    else:
        status = _running_status(policy, goal, elapsed)
    return Clock("first_response", status, goal, elapsed, deadline, breached_at, responded_at)


def resolution_clock(
    policy: Policy,
    priority: str,
    history: Sequence[tuple[datetime, str]],
    now: datetime,
) -> Clock:
    """The resolution clock over a ticket's state history ``[(since, state), …]``."""
    if not history:
        raise ValueError("a ticket's state history starts with its opening")
    target = policy.target(priority)
    calendar = target.calendar if target is not None else cal.always()
    goal = target.resolution if target is not None else None
    elapsed = timedelta(0)
    breached_at: datetime | None = None
    running_since: datetime | None = None
    before_running = timedelta(0)
    spans = list(zip(history, [*(at for at, _ in history[1:]), now], strict=True))
    for (start, state), end in spans:
        if State(state) not in CLOCK_RUNS:
            continue
        part = calendar.elapsed(start, max(start, end))
        if goal is not None and breached_at is None and elapsed + part >= goal and part:
            breached_at = calendar.add(start, goal - elapsed)
        before_running, running_since = elapsed, start
        elapsed += part
    last_state = State(history[-1][1])
    stopped_at = history[-1][0] if last_state in (State.RESOLVED, State.CLOSED) else None
    if stopped_at is not None:
        # closing keeps the clock where resolving stopped it
        stopped_at = _resolved_at(history) or stopped_at
    if goal is None:
        return Clock("resolution", "none", None, elapsed, None, None, stopped_at)
    deadline: datetime | None = None
    if stopped_at is not None:
        status: Status = "met" if elapsed <= goal else "breached"
        deadline = breached_at
    elif last_state in CLOCK_RUNS:
        assert running_since is not None
        deadline = breached_at or calendar.add(running_since, goal - before_running)
        status = _running_status(policy, goal, elapsed)
    else:
        status = "breached" if elapsed >= goal else "paused"
        deadline = breached_at
    if status == "met":
        breached_at = None
    return Clock("resolution", status, goal, elapsed, deadline, breached_at, stopped_at)


def _running_status(policy: Policy, goal: timedelta, elapsed: timedelta) -> Status:
    if elapsed >= goal:
        return "breached"
    if goal - elapsed < goal * policy.at_risk:
        return "at_risk"
    return "on_track"


def _resolved_at(history: Sequence[tuple[datetime, str]]) -> datetime | None:
    for at, state in reversed(history):
        if State(state) is State.RESOLVED:
            return at
        if State(state) is not State.CLOSED:
            return None
    return None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


# -- the policy file ----------------------------------------------------------------------


def load_policy(path: Path | None) -> Policy:
    """The policy in ``path`` if it exists, else the packaged example."""
    if path is not None and path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"{path}: cannot read: {exc}") from None
        return parse_policy(text, str(path))
    return parse_policy(example_text(), f"built-in ({EXAMPLE})")


def example_text() -> str:
    """The packaged example policy."""
    return resources.files("controller.tickets").joinpath(EXAMPLE).read_text(encoding="utf-8")


def parse_duration(value: object) -> timedelta:
    """``"30m"``, ``"4h"``, ``"1h30m"``, ``"3d"`` to a positive timedelta (the one syntax
    of :mod:`protocol.durations`)."""
    return durations.parse(value)


def parse_policy(text: str, source: str) -> Policy:
    """Parse and check a policy; :class:`PolicyError` names the line of the first problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from None
    where = _Locator(text, source)
    _only(data, {"at_risk", "calendars", "priorities"}, (), where)
    at_risk = data.get("at_risk", 0.25)
    if isinstance(at_risk, bool) or not isinstance(at_risk, int | float) or not 0 < at_risk < 1:
        raise where.error(
            (), "at_risk", f"at_risk must be a fraction between 0 and 1, not {at_risk!r}"
        )
    calendars: dict[str, cal.Calendar] = {cal.ALWAYS: cal.always()}
    for name, raw in _table(data, "calendars", (), where).items():
        section = ("calendars", name)
        if name == cal.ALWAYS:
            raise where.error(section, None, f"{cal.ALWAYS!r} is built in; name yours otherwise")
        if not isinstance(raw, dict):
            raise where.error(("calendars",), name, f"calendars.{name} must be a table")
        _only(raw, {"timezone", "hours", "holidays"}, section, where)
        for key in ("timezone", "hours"):
            if key not in raw:
                raise where.error(section, None, f"calendars.{name} needs {key}")
        holidays = raw.get("holidays", [])
        if not isinstance(holidays, list):
            raise where.error(section, "holidays", "holidays must be a list of dates")
        if not isinstance(raw["hours"], list):
            raise where.error(section, "hours", 'hours must be a list like ["mon-fri 08:00-18:00"]')
        try:
            zone = cal.parse_zone(raw["timezone"])
        except ValueError as exc:
            raise where.error(section, "timezone", str(exc)) from None
        try:
            week = cal.parse_hours(raw["hours"])
        except ValueError as exc:
            raise where.error(section, "hours", str(exc)) from None
        try:
            dated, yearly = cal.parse_holidays(holidays)
        except ValueError as exc:
            raise where.error(section, "holidays", str(exc)) from None
        calendars[name] = cal.Calendar(name, zone, week, dated, yearly)
    targets: dict[str, Target] = {}
    warnings: list[str] = []
    for priority, raw in _table(data, "priorities", (), where).items():
        section = ("priorities", priority)
        if priority not in PRIORITIES:
            raise where.error(
                section, None, f"priorities are {', '.join(PRIORITIES)}, not {priority!r}"
            )
        if not isinstance(raw, dict):
            raise where.error(("priorities",), priority, f"priorities.{priority} must be a table")
        _only(raw, {"calendar", "first_response", "resolution", "escalate_at_risk"}, section, where)
        name = raw.get("calendar", cal.ALWAYS)
        if name not in calendars:
            known = ", ".join(repr(c) for c in calendars)
            raise where.error(section, "calendar", f"no calendar {name!r} (there is {known})")
        amounts = {}
        for key in ("first_response", "resolution"):
            if key not in raw:
                raise where.error(section, None, f"priorities.{priority} needs {key}")
            try:
                amounts[key] = parse_duration(raw[key])
            except ValueError as exc:
                raise where.error(section, key, str(exc)) from None
            if name != cal.ALWAYS and durations.uses_days(raw[key]):
                hours = amounts[key] // timedelta(hours=1)
                warnings.append(
                    f"{where.line_of(section, key)}: {priority} {key} = {raw[key]!r} is "
                    f"{hours} h of {name!r} working time, not {raw[key]} of working days"
                )
        escalate = raw.get("escalate_at_risk")
        if escalate is not None and escalate not in TICKET_LEVELS[1:3]:
            raise where.error(
                section,
                "escalate_at_risk",
                f"escalate_at_risk is L2 or L3 (L4 needs a vendor and a person), not {escalate!r}",
            )
        targets[priority] = Target(
            priority,
            calendars[name],
            amounts["first_response"],
            amounts["resolution"],
            escalate,
        )
    missing = [p for p in PRIORITIES if p not in targets]
    if missing:
        warnings.insert(
            0,
            f"{source}: no targets for {', '.join(missing)}: tickets of "
            f"{'that priority' if len(missing) == 1 else 'those priorities'} run without SLA "
            "clocks (SLA: none)",
        )
    return Policy(float(at_risk), calendars, targets, source, tuple(warnings))


def _table(
    data: Mapping[str, Any], key: str, section: tuple[str, ...], where: _Locator
) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise where.error(section, key, f"{key} must be a table of tables")
    return value


def _only(
    raw: Mapping[str, Any], keys: set[str], section: tuple[str, ...], where: _Locator
) -> None:
    for key in raw:
        if key not in keys:
            allowed = ", ".join(sorted(keys))
            raise where.error(section, key, f"unknown key {key!r} (allowed here: {allowed})")


class _Locator:
    """Finds the line of a key in the TOML text (tomllib reports lines for syntax only)."""

    _HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")

    def __init__(self, text: str, source: str) -> None:
        self.lines = text.splitlines()
        self.source = source

    def line(self, section: tuple[str, ...], key: str | None) -> int | None:
        current: tuple[str, ...] = ()
        header_line = None
        for number, line in enumerate(self.lines, start=1):
            header = self._HEADER.match(line)
            if header:
                current = tuple(part.strip().strip('"').strip("'") for part in _split(header[1]))
                if current == section:
                    header_line = number
                continue
            if current == section and key is not None:
                name = re.escape(key)
                if re.match(rf"""^\s*(?:{name}|"{name}"|'{name}')\s*=""", line):
                    return number
        return header_line

    def line_of(self, section: tuple[str, ...], key: str | None) -> str:
        """``sla.toml line 7``, or the file alone when the line is not found."""
        number = self.line(section, key)
        return f"{self.source} line {number}" if number else self.source

    def error(self, section: tuple[str, ...], key: str | None, message: str) -> PolicyError:
        return PolicyError(f"{self.line_of(section, key)}: {message}")


def _split(dotted: str) -> list[str]:
    """``a."b.c".d`` → ``["a", '"b.c"', "d"]``: dots outside quotes only."""
    parts, current, quote = [], "", ""
    for char in dotted:
        if char in "\"'" and (not quote or quote == char):
            quote = "" if quote else char
        if char == "." and not quote:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts
