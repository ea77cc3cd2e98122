"""Diagnostics: take a snapshot on a ticket's agent, compare two, list the collectors.

A snapshot is the agent's data: free-form JSON (``dict[str, Any]``) that only the renderer
and the findings engine look into, each defensively. Findings are the controller's view of
a snapshot (``controller/rules.toml``), computed whenever one is shown, never stored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from protocol.calls.base import ID_MAX, Call, Model, Text, TicketId
from protocol.calls.kb import ArticleSummary

Severity = Literal["critical", "warning", "info"]


class Finding(Model):
    """One rule that matched a snapshot; its text is filled from the snapshot."""

    rule: str
    severity: Severity
    #: the snapshot section it is about (``errors`` for a collector that failed)
    section: str
    subject: str | None
    title: str
    explanation: str
    advice: str | None
    evidence: tuple[str, ...]
    #: the suggested fix, and its parameters where the snapshot names them
    fix: str | None
    fix_params: dict[str, str]


class SeverityCount(Model):
    critical: int
    warning: int
    info: int


class Diagnostics(Model):
    """One snapshot, attached to the ticket, with its findings."""

    ticket: TicketId
    request: str
    ok: bool
    #: what the agent reported when it could not take the snapshot
    error: str | None
    data: dict[str, Any]
    findings: tuple[Finding, ...]
    summary: SeverityCount
    #: articles written for these findings (or their suggested fixes)
    articles: tuple[ArticleSummary, ...]


class DiagRun(Call[Diagnostics]):
    method = "diag.run"
    ticket: TicketId
    #: names or aliases (``diag.collectors``); none means every collector
    collectors: Annotated[tuple[Annotated[str, Text(40)], ...], Field(max_length=64)] | None = None
    #: seconds to wait for the agent
    timeout: Annotated[float, Field(ge=1, le=600)] = 60


class SnapshotRef(Model):
    """Which snapshot a side of a comparison is."""

    attachment: int
    request: str | None
    taken_at: str
    #: the collectors it ran, as the agent said (None when it did not say)
    collectors: tuple[str, ...] | None


class RemainingFinding(Finding):
    severity_before: Severity


class UncomparedFinding(Finding):
    """Found in one snapshot about something the other did not look at."""

    seen_in: Literal["before", "after"]


class FindingsCompared(Model):
    resolved: tuple[Finding, ...]
    new: tuple[Finding, ...]
    remaining: tuple[RemainingFinding, ...]
    not_compared: tuple[UncomparedFinding, ...]


class ValueChange(Model):
    """A watched value (``rules.toml`` metrics) that moved; the values are the agent's."""

    kind: Literal["value"]
    label: str
    before: Any
    after: Any
    before_text: str
    after_text: str


class SetChange(Model):
    """A watched set (``rules.toml`` sets: mounts, failed units…) that gained or lost items."""

    kind: Literal["set"]
    label: str
    added: tuple[str, ...]
    removed: tuple[str, ...]


class Comparison(Model):
    ticket: TicketId
    before: SnapshotRef
    after: SnapshotRef
    findings: FindingsCompared
    changes: tuple[Annotated[ValueChange | SetChange, Field(discriminator="kind")], ...]


AttachmentNumber = Annotated[int, Field(ge=1, le=ID_MAX, strict=True)]


class DiagDiff(Call[Comparison]):
    method = "diag.diff"
    ticket: TicketId
    #: the earlier snapshot (attachment number); give both or neither (the last two)
    from_: AttachmentNumber | None = Field(default=None, alias="from")
    to: AttachmentNumber | None = None


class CollectorInfo(Model):
    name: str
    aliases: tuple[str, ...]
    #: what it reads
    summary: str
    timeout_s: float


class DiagCollectors(Call[list[CollectorInfo]]):
    method = "diag.collectors"
