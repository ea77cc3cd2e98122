"""The SLA policy in force and the KPI report over a window of time."""

from __future__ import annotations

from typing import Annotated, Literal

from protocol.calls.base import Call, Model, Text, Time
from protocol.vocabulary import Priority, StaffLevel

#: how the KPI report groups tickets: by their assignee or by their level
Grouping = Literal["technician", "level"]


class PriorityTargets(Model):
    #: a calendar of the policy, or the built-in ``24/7``
    calendar: str
    first_response_s: int
    resolution_s: int
    escalate_at_risk: StaffLevel | None


class Policy(Model):
    """An SLA policy (the one in force, or a file ``sla check`` read)."""

    #: the file it came from, or the built-in example
    source: str
    #: a clock is at risk when less than this share of its target is left
    at_risk: float
    #: valid but probably not meant (a priority without targets)
    warnings: tuple[str, ...]
    #: name → hours and holidays, in words
    calendars: dict[str, str]
    priorities: dict[Priority, PriorityTargets]


class SlaPolicy(Call[Policy]):
    method = "sla.policy"


class Times(Model):
    """Durations in SLA-clock time (working time, waiting excluded), whole seconds."""

    count: int
    median_s: int | None
    p90_s: int | None
    mean_s: int | None


class Compliance(Model):
    met: int
    breached: int
    #: met / (met + breached); None when nothing was counted
    compliance: float | None


class ClockCompliance(Model):
    first_response: Compliance
    resolution: Compliance


class Satisfaction(Model):
    ratings: int
    mean: float | None
    #: the share of ratings of 4 and 5
    satisfied: float | None


class KpiGroup(Model):
    #: a technician, a level, ``(unassigned)``, ``all`` or ``total``
    group: str
    opened: int
    resolved: int
    first_response: Times
    resolution: Times
    sla: ClockCompliance
    #: resolved without escalation, of those resolved
    first_contact_resolution: float | None
    reopen_rate: float | None
    satisfaction: Satisfaction


class KpiReport(Model):
    since: Time
    until: Time
    by: Grouping | None
    #: the source of the SLA policy the clocks ran on
    policy: str
    #: one per group (with ``by``), unassigned last
    rows: tuple[KpiGroup, ...]
    total: KpiGroup


class ReportKpi(Call[KpiReport]):
    """The KPIs of ``[since, until)``: an age (``30d``) or an ISO time each."""

    method = "report.kpi"
    since: Annotated[str, Text(100)] = "30d"
    #: default: now
    until: Annotated[str, Text(100)] | None = None
    by: Grouping | None = None
