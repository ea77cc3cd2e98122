"""Tickets under SLA: open, list, show and work a ticket through its lifecycle.

A ticket comes back in three sizes: :class:`TicketInfo` (what a change returns),
:class:`TicketWithSla` (with its two SLA clocks: ``open`` and ``list``) and
:class:`TicketDetail` (everything: ``show``). Timeline data, snapshots and findings are the
agent's and the rules' data, carried as JSON objects.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from protocol.calls.base import Call, Model, Text, TicketId, Time, parse_id
from protocol.calls.kb import Article, ArticleSummary
from protocol.calls.sessions import SessionInfo
from protocol.calls.webhooks import DeliveryInfo
from protocol.vocabulary import (
    LINK_KINDS,
    TICKET_LEVELS,
    Channel,
    LinkKind,
    Priority,
    SlaStatus,
    TicketLevel,
    TicketState,
)

#: a JSON object whose keys and values are someone else's (the agent's, the rules')
JsonObject = dict[str, Any]


def _upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


def _known_level(value: object) -> object:
    value = _upper(value)
    if isinstance(value, str) and value not in TICKET_LEVELS:
        raise ValueError(
            f"there is no support level {value!r}: levels are {', '.join(TICKET_LEVELS)}"
        )
    return value


#: a ticket's level, ``l2`` read as ``L2``; an unknown one is named in the refusal
Level = Annotated[TicketLevel, BeforeValidator(_known_level)]


def split_link(text: str, *, bare: bool = False) -> tuple[LinkKind | None, int]:
    """``KIND:T-N`` as its kind and ticket number; with ``bare``, also a plain ``T-N``."""
    kind, sep, other = text.partition(":")
    if not sep and bare:
        return None, _ticket_number(text)
    if not sep or kind not in LINK_KINDS:
        raise ValueError(
            f"a link is KIND:T-N with KIND one of {', '.join(LINK_KINDS)}: {text[:60]!r}"
        )
    return kind, _ticket_number(other)


def _ticket_number(text: str) -> int:
    return parse_id(text, "T", "a ticket")


def _link(text: str) -> str:
    kind, number = split_link(text)
    return f"{kind}:T-{number}"


def _link_or_ticket(text: str) -> str:
    kind, number = split_link(text, bare=True)
    return f"{kind}:T-{number}" if kind else f"T-{number}"


#: ``follows:T-3``: what a ticket is to another
LinkText = Annotated[str, Text(100), AfterValidator(_link)]
#: ``follows:T-3``, or a bare ``T-3`` whose kind is given apart
LinkOrTicket = Annotated[str, Text(100), AfterValidator(_link_or_ticket)]


# -- results ----------------------------------------------------------------------------------


class TicketInfo(Model):
    """A ticket, as every change returns it."""

    id: TicketId
    title: str
    customer: str
    priority: Priority
    state: TicketState
    opened_by: str
    created_at: Time
    contact: str | None
    channel: Channel
    category: str | None
    assignee: str | None
    level: TicketLevel
    #: L4: the vendor or manufacturer, and their case number
    vendor: str | None
    vendor_ref: str | None
    resolution: str | None
    updated_at: Time | None
    responded_at: Time | None
    resolved_at: Time | None
    closed_at: Time | None


class Clock(Model):
    """One SLA clock; times are working time of the priority's calendar."""

    status: SlaStatus
    target_s: int | None
    elapsed_s: int
    #: negative once breached; None without a target
    remaining_s: int | None
    deadline: Time | None
    breached_at: Time | None
    stopped_at: Time | None


class Sla(Model):
    #: the worse of the two clocks
    status: SlaStatus
    first_response: Clock
    resolution: Clock


class TicketWithSla(TicketInfo):
    sla: Sla


class TimelineEvent(Model):
    #: the event id webhook receivers de-duplicate on
    id: str
    at: Time
    type: str
    #: None for the customer
    actor: str | None
    data: JsonObject


class LinkedTicket(Model):
    #: seen from this ticket: ``follows`` at one end is ``followed_by`` at the other
    kind: str
    ticket: TicketId
    title: str | None
    state: TicketState | None


class Rating(Model):
    score: int
    comment: str | None
    session: str | None
    technician: str | None
    at: Time


class Attachment(Model):
    """A result on the ticket: ``data`` is what the agent sent."""

    id: int
    kind: str
    ok: bool
    session: str | None
    request: str | None
    created_at: Time
    produced_at: Time | None
    data: JsonObject


class DiagnosticsAttachment(Attachment):
    """A good diagnostics snapshot, with the findings the rules see in it now."""

    findings: tuple[JsonObject, ...]
    #: findings by severity, zeros included
    summary: dict[str, int]


class TicketDetail(TicketWithSla):
    """Everything about a ticket."""

    #: the actions its state allows, in the lifecycle table's order
    allowed: tuple[str, ...]
    timeline: tuple[TimelineEvent, ...]
    links: tuple[LinkedTicket, ...]
    ratings: tuple[Rating, ...]
    sessions: tuple[SessionInfo, ...]
    # a good snapshot first, so that one is read back with its findings
    attachments: tuple[DiagnosticsAttachment | Attachment, ...]
    deliveries: tuple[DeliveryInfo, ...]
    #: articles linked to its latest findings, then matches on its title
    kb: tuple[ArticleSummary, ...]


class ResolvedTicket(TicketInfo):
    #: the knowledge-base article written from the resolution, if one was asked for
    article: Article | None


class TicketLinked(Model):
    ticket: TicketId
    kind: LinkKind
    other: TicketId


# -- calls ------------------------------------------------------------------------------------


class TicketOpen(Call[TicketWithSla]):
    """Open a ticket (``new``); assigned and linked at once if asked."""

    method = "ticket.open"
    title: Annotated[str, Text(500)]
    customer: Annotated[str, Text(200)]
    priority: Annotated[Priority, BeforeValidator(_upper)] = "P3"
    contact: Annotated[str, Text(200)] | None = None
    channel: Channel = "remote"
    category: Annotated[str, Text(100)] | None = None
    assignee: Annotated[str, Text(100)] | None = None
    link: LinkText | None = None


def _states(value: object) -> object:
    if isinstance(value, str):  # as typed: ``new,open``
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class TicketList(Call[list[TicketWithSla]]):
    """Tickets, newest first; each filter narrows."""

    method = "ticket.list"
    mine: bool = False
    #: ``active`` is new, open and waiting
    state: Annotated[
        tuple[Literal[TicketState, "active"], ...], BeforeValidator(_states), Field(max_length=10)
    ] = ()
    level: Level | None = None
    #: either clock in this state
    sla: SlaStatus | None = None
    assignee: Annotated[str, Text(100)] | None = None
    customer: Annotated[str, Text(200)] | None = None
    limit: Annotated[int, Field(ge=1, le=10_000, strict=True)] | None = None


class TicketShow(Call[TicketDetail]):
    method = "ticket.show"
    ticket: TicketId


class TicketAssign(Call[TicketInfo]):
    """To the caller unless ``to`` names someone; ``nobody`` unassigns."""

    method = "ticket.assign"
    ticket: TicketId
    to: Annotated[str, Text(100)] | None = None
    nobody: bool = False


class TicketNote(Call[TicketInfo]):
    """A note on the timeline; ``internal`` ones are not a response to the customer."""

    method = "ticket.note"
    ticket: TicketId
    text: Annotated[str, Text(20_000)]
    internal: bool = False


class TicketWait(Call[TicketInfo]):
    """Wait on the customer: the resolution clock pauses."""

    method = "ticket.wait"
    ticket: TicketId
    reason: Annotated[str, Text(500)]


class TicketResume(Call[TicketInfo]):
    method = "ticket.resume"
    ticket: TicketId
    reason: Annotated[str, Text(500)] | None = None


class TicketResolve(Call[ResolvedTicket]):
    """Resolve; ``article`` (or a title for it) writes the resolution up for the KB."""

    method = "ticket.resolve"
    ticket: TicketId
    resolution: Annotated[str, Text(20_000)]
    article: bool = False
    article_title: Annotated[str, Text(300)] | None = None


class TicketClose(Call[TicketInfo]):
    method = "ticket.close"
    ticket: TicketId


class TicketReopen(Call[TicketInfo]):
    method = "ticket.reopen"
    ticket: TicketId
    reason: Annotated[str, Text(500)]


class TicketEscalate(Call[TicketInfo]):
    """Up one or more levels, saying why; L4 names the vendor."""

    method = "ticket.escalate"
    ticket: TicketId
    to: Level
    reason: Annotated[str, Text(2000)]
    vendor: Annotated[str, Text(200)] | None = None
    vendor_ref: Annotated[str, Text(200)] | None = None


class TicketLink(Call[TicketLinked]):
    """Link ``ticket`` to ``other``: ``KIND:T-N``, or ``T-N`` with ``kind`` (default relates)."""

    method = "ticket.link"
    ticket: TicketId
    other: LinkOrTicket
    kind: LinkKind | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        written, _ = split_link(self.other, bare=True)
        if written is not None and self.kind is not None and written != self.kind:
            raise ValueError(f"the link says {written!r} but --kind says {self.kind!r}")
        return self

    @property
    def link(self) -> tuple[LinkKind, int]:
        """The kind of link and the other ticket's number."""
        written, number = split_link(self.other, bare=True)
        return written or self.kind or "relates", number
