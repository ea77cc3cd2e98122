"""``ticket.*``: open, list, show and work tickets through the desk.

The work is done by :class:`~controller.tickets.desk.TicketDesk` (``ctx.services.desk``);
these handlers turn its refusals into API errors and its tickets into result models.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from controller.api.kb import article_info, article_summary
from controller.api.registry import ANYONE, ROUTES, WORKERS, ApiError, Context, utcnow
from controller.api.sessions import session_info
from controller.api.webhooks import delivery_info
from controller.findings import count_by_severity, evaluate
from controller.store import Attachment as StoredAttachment
from controller.store import Ticket, TicketEvent
from controller.tickets import lifecycle, sla
from controller.tickets.desk import DeskError, Who
from protocol.calls.tickets import (
    Attachment,
    Clock,
    DiagnosticsAttachment,
    LinkedTicket,
    Rating,
    ResolvedTicket,
    Sla,
    TicketAssign,
    TicketClose,
    TicketDetail,
    TicketEscalate,
    TicketInfo,
    TicketLink,
    TicketLinked,
    TicketList,
    TicketNote,
    TicketOpen,
    TicketReopen,
    TicketResolve,
    TicketResume,
    TicketShow,
    TicketWait,
    TicketWithSla,
    TimelineEvent,
    split_link,
)
from protocol.errors import ErrorCode

C = TypeVar("C")
R = TypeVar("R")


def _refusals(
    handler: Callable[[Context, C], Awaitable[R]],
) -> Callable[[Context, C], Awaitable[R]]:
    """The desk's refusals (a state that forbids the change, an unknown user…) as API errors."""

    @functools.wraps(handler)
    async def call(ctx: Context, call: C) -> R:
        try:
            return await handler(ctx, call)
        except DeskError as exc:
            raise ApiError(exc.code, exc.message) from None

    return call


def _who(ctx: Context) -> Who:
    return Who(ctx.caller.user.name, ctx.caller.user.role, ctx.caller.source)


# -- results from the store's records --------------------------------------------------------


def _fields(ticket: Ticket) -> dict[str, Any]:
    return {
        "id": ticket.id,
        "title": ticket.title,
        "customer": ticket.customer,
        "priority": ticket.priority,
        "state": ticket.state,
        "opened_by": ticket.opened_by,
        "created_at": ticket.created_at,
        "contact": ticket.contact,
        "channel": ticket.channel,
        "category": ticket.category,
        "assignee": ticket.assignee,
        "level": ticket.level,
        "vendor": ticket.vendor,
        "vendor_ref": ticket.vendor_ref,
        "resolution": ticket.resolution,
        "updated_at": ticket.updated_at,
        "responded_at": ticket.responded_at,
        "resolved_at": ticket.resolved_at,
        "closed_at": ticket.closed_at,
    }


def ticket_info(ticket: Ticket) -> TicketInfo:
    return TicketInfo(**_fields(ticket))


def _clock(clock: sla.Clock) -> Clock:
    remaining = clock.remaining
    return Clock(
        status=clock.status,
        target_s=None if clock.target is None else int(clock.target.total_seconds()),
        elapsed_s=int(clock.elapsed.total_seconds()),
        remaining_s=None if remaining is None else int(remaining.total_seconds()),
        deadline=clock.deadline,
        breached_at=clock.breached_at,
        stopped_at=clock.stopped_at,
    )


def _sla(clocks: tuple[sla.Clock, sla.Clock]) -> Sla:
    first, resolution = clocks
    return Sla(
        status=sla.worst(first.status, resolution.status),
        first_response=_clock(first),
        resolution=_clock(resolution),
    )


def with_sla(ticket: Ticket, clocks: tuple[sla.Clock, sla.Clock]) -> TicketWithSla:
    return TicketWithSla(**_fields(ticket), sla=_sla(clocks))


def _event(event: TicketEvent) -> TimelineEvent:
    return TimelineEvent(
        id=event.uid,
        at=event.at,
        type=event.type,
        actor=event.actor,
        data={k: v for k, v in event.data.items() if k != "ticket"},
    )


def _attachment(attachment: StoredAttachment) -> Attachment:
    fields = {
        "id": attachment.id,
        "kind": attachment.kind,
        "ok": attachment.ok,
        "session": attachment.session_id,
        "request": attachment.request_id,
        "created_at": attachment.created_at,
        "produced_at": attachment.produced_at,
        "data": attachment.data,
    }
    if attachment.kind != "diagnostics" or not attachment.ok:
        return Attachment(**fields)
    # computed, not stored: an improved rule catalogue applies to old snapshots too
    findings = evaluate(attachment.data)
    return DiagnosticsAttachment(
        **fields, findings=tuple(findings), summary=count_by_severity(findings)
    )


# -- reading -------------------------------------------------------------------------------


@ROUTES.handler(TicketList, roles=ANYONE)
async def ticket_list(ctx: Context, call: TicketList) -> list[TicketWithSla]:
    """Newest first; ``sla`` matches either clock, so a ticket whose first response is
    already breached is still listed where its resolution is at risk."""
    states: list[str] | None = None
    if call.state:
        states = [s for s in call.state if s != "active"]
        if "active" in call.state:
            states += [s.value for s in lifecycle.ACTIVE]
    tickets = await ctx.store.list_tickets(
        states=states,
        level=call.level,
        assignee=ctx.caller.user.name if call.mine else call.assignee,
        customer=call.customer,
        limit=None if call.sla else call.limit,
    )
    desk = ctx.services.desk
    timelines = await ctx.store.events_for(t.id for t in tickets)
    now = utcnow()
    out = []
    for ticket in tickets:
        clocks = desk.clocks(ticket, timelines.get(ticket.id, []), now)
        if call.sla is None or call.sla in (clocks[0].status, clocks[1].status):
            out.append(with_sla(ticket, clocks))
    return out[: call.limit] if call.limit else out


@ROUTES.handler(TicketShow, roles=ANYONE)
async def ticket_show(ctx: Context, call: TicketShow) -> TicketDetail:
    """The ticket, its clocks, timeline, links, ratings, sessions, attachments (good
    snapshots with their findings), webhook deliveries and the articles that may help."""
    store, desk = ctx.store, ctx.services.desk
    ticket = await ctx.ticket(call.ticket)
    events = await store.ticket_events(ticket.id)
    links = await store.ticket_links(ticket.id)
    others = {t.id: t for t in [await store.get_ticket(x.other_id) for x in links] if t}
    live = ctx.services.links.links
    attachments = [_attachment(a) for a in await store.attachments(ticket.id)]
    # the latest good snapshot's findings pick the articles: evaluated once, above
    snapshots = [a for a in attachments if isinstance(a, DiagnosticsAttachment)]
    findings = [str(f.get("rule")) for f in snapshots[-1].findings] if snapshots else []
    return TicketDetail(
        **_fields(ticket),
        sla=_sla(desk.clocks(ticket, events)),
        allowed=tuple(lifecycle.allowed(ticket.state)),
        timeline=tuple(_event(e) for e in events),
        links=tuple(
            LinkedTicket(
                kind=link.kind,
                ticket=link.other_id,
                title=other.title if (other := others.get(link.other_id)) else None,
                state=other.state if other else None,
            )
            for link in links
        ),
        ratings=tuple(
            Rating(
                score=r.score,
                comment=r.comment,
                session=r.session_id,
                technician=r.technician,
                at=r.at,
            )
            for r in await store.ratings(ticket_id=ticket.id)
        ),
        sessions=tuple(
            session_info(s, s.id in live) for s in await store.sessions_for_ticket(ticket.id)
        ),
        attachments=tuple(attachments),
        deliveries=tuple(delivery_info(d) for d in await store.deliveries(ticket_id=ticket.id)),
        kb=tuple(article_summary(a) for a in await desk.suggestions(ticket, findings)),
    )


# -- changes -------------------------------------------------------------------------------


@ROUTES.handler(TicketOpen, roles=WORKERS)
@_refusals
async def ticket_open(ctx: Context, call: TicketOpen) -> TicketWithSla:
    """Open a ticket (``new``); assigned and linked at once if asked."""
    target = split_link(call.link) if call.link else None
    if target is not None and await ctx.store.get_ticket(target[1]) is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"there is no ticket T-{target[1]} to link to")
    desk, who = ctx.services.desk, _who(ctx)
    ticket = await desk.open(
        who,
        title=call.title,
        customer=call.customer,
        priority=call.priority,
        contact=call.contact,
        channel=call.channel,
        category=call.category,
        assignee=call.assignee,
    )
    if target is not None:
        kind, other = target
        assert kind is not None  # a link to open with always names its kind
        await desk.link(who, ticket.id, other, kind)
    return with_sla(ticket, desk.clocks(ticket, []))


@ROUTES.handler(TicketAssign, roles=WORKERS)
@_refusals
async def ticket_assign(ctx: Context, call: TicketAssign) -> TicketInfo:
    to = None if call.nobody else call.to or ctx.caller.user.name
    return ticket_info(await ctx.services.desk.assign(_who(ctx), call.ticket, to))


@ROUTES.handler(TicketNote, roles=WORKERS)
@_refusals
async def ticket_note(ctx: Context, call: TicketNote) -> TicketInfo:
    ticket = await ctx.services.desk.note(_who(ctx), call.ticket, call.text, internal=call.internal)
    return ticket_info(ticket)


@ROUTES.handler(TicketWait, roles=WORKERS)
@_refusals
async def ticket_wait(ctx: Context, call: TicketWait) -> TicketInfo:
    return ticket_info(await ctx.services.desk.wait(_who(ctx), call.ticket, call.reason))


@ROUTES.handler(TicketResume, roles=WORKERS)
@_refusals
async def ticket_resume(ctx: Context, call: TicketResume) -> TicketInfo:
    reason = call.reason or "the customer answered"
    return ticket_info(await ctx.services.desk.resume(_who(ctx), call.ticket, reason))


@ROUTES.handler(TicketResolve, roles=WORKERS)
@_refusals
async def ticket_resolve(ctx: Context, call: TicketResolve) -> ResolvedTicket:
    # an article title alone asks for the article too
    wanted = call.article or call.article_title is not None
    ticket, article = await ctx.services.desk.resolve(
        _who(ctx),
        call.ticket,
        call.resolution,
        article=(call.article_title or "") if wanted else None,
    )
    return ResolvedTicket(
        **_fields(ticket), article=article_info(article) if article is not None else None
    )


@ROUTES.handler(TicketClose, roles=WORKERS)
@_refusals
async def ticket_close(ctx: Context, call: TicketClose) -> TicketInfo:
    return ticket_info(await ctx.services.desk.close(_who(ctx), call.ticket))


@ROUTES.handler(TicketReopen, roles=WORKERS)
@_refusals
async def ticket_reopen(ctx: Context, call: TicketReopen) -> TicketInfo:
    return ticket_info(await ctx.services.desk.reopen(_who(ctx), call.ticket, call.reason))


@ROUTES.handler(TicketEscalate, roles=WORKERS)
@_refusals
async def ticket_escalate(ctx: Context, call: TicketEscalate) -> TicketInfo:
    ticket = await ctx.services.desk.escalate(
        _who(ctx),
        call.ticket,
        call.to,
        call.reason,
        vendor=call.vendor,
        vendor_ref=call.vendor_ref,
    )
    return ticket_info(ticket)


@ROUTES.handler(TicketLink, roles=WORKERS)
@_refusals
async def ticket_link(ctx: Context, call: TicketLink) -> TicketLinked:
    kind, other = call.link
    await ctx.services.desk.link(_who(ctx), call.ticket, other, kind)
    return TicketLinked(ticket=call.ticket, kind=kind, other=other)
