"""The ticket API methods not yet on call models: tickets, SLA, KPI report.

``TICKET_METHODS`` here is merged into :data:`controller.api.METHODS` (same shape: the
handler and the roles allowed to call it); the auditor role reads and changes nothing.
The work is done by the controller's :class:`~controller.tickets.desk.TicketDesk`; this
module checks parameters, maps the desk's refusals to API errors and shapes the JSON.

``ticket.show`` stays registered by ``controller.api`` (the diagnostics module wraps it to
add findings); :meth:`controller.api.Api.ticket_show` calls :func:`show_ticket` here.

This module imports :mod:`controller.api` only inside its functions: ``api`` imports this
module at its end, and either may be imported first.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from controller.store import Article, Delivery, Ticket, TicketEvent
from controller.tickets import kpi, lifecycle, sla
from controller.tickets.desk import CHANNELS, DeskError, TicketDesk, Who

if TYPE_CHECKING:
    from controller.api import Api, Caller, Handler

Progress = Callable[[str], Awaitable[None]]
Method = Callable[["Api", "Caller", dict[str, Any], Progress], Awaitable[Any]]

SLA_FILTERS = ("on-track", "at-risk", "breached", "paused", "met", "none")
LINK_KINDS = ("relates", "duplicates", "follows", "blocks")


def _error(code: str, message: str) -> Exception:
    from controller.api import ApiError

    return ApiError(code, message)


def _refusals(method: Method) -> Method:
    """Turn the desk's refusals into API errors."""

    @functools.wraps(method)
    async def call(api: Api, caller: Caller, params: dict[str, Any], progress: Progress) -> Any:
        try:
            return await method(api, caller, params, progress)
        except DeskError as exc:
            raise _error(exc.code, exc.message) from None

    return call


def utcnow() -> datetime:
    return datetime.now(UTC)


def _desk(api: Api) -> TicketDesk:
    return api.controller.desk


def _who(caller: Caller) -> Who:
    return Who(caller.user.name, caller.user.role, caller.source)


def _text(params: dict[str, Any], key: str, *, limit: int = 500) -> str:
    from controller.api import required_text

    return required_text(params, key, limit=limit)


def _optional(params: dict[str, Any], key: str, *, limit: int = 500) -> str | None:
    from controller.api import optional_text

    return optional_text(params, key, limit=limit)


def _ticket_id(params: dict[str, Any], key: str = "ticket") -> int:
    from controller.api import parse_ticket_id

    return parse_ticket_id(params.get(key), key)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


# -- JSON shapes -----------------------------------------------------------------------------


def ticket_json(
    ticket: Ticket, clocks: tuple[sla.Clock, sla.Clock] | None = None
) -> dict[str, Any]:
    """A ticket as the API gives it (the first seven keys are the original shape)."""
    data: dict[str, Any] = {
        "id": ticket.ref,
        "title": ticket.title,
        "customer": ticket.customer,
        "priority": ticket.priority,
        "state": ticket.state,
        "opened_by": ticket.opened_by,
        "created_at": ticket.created_at.isoformat(),
        "contact": ticket.contact,
        "channel": ticket.channel,
        "category": ticket.category,
        "assignee": ticket.assignee,
        "level": ticket.level,
        "vendor": ticket.vendor,
        "vendor_ref": ticket.vendor_ref,
        "resolution": ticket.resolution,
        "updated_at": _iso(ticket.updated_at),
        "responded_at": _iso(ticket.responded_at),
        "resolved_at": _iso(ticket.resolved_at),
        "closed_at": _iso(ticket.closed_at),
    }
    if clocks is not None:
        first, resolution = clocks
        data["sla"] = {
            "status": sla.worst(first.status, resolution.status),
            "first_response": first.as_json(),
            "resolution": resolution.as_json(),
        }
    return data


def event_json(event: TicketEvent) -> dict[str, Any]:
    return {
        "id": event.uid,
        "at": event.at.isoformat(),
        "type": event.type,
        "actor": event.actor,
        "data": {k: v for k, v in event.data.items() if k != "ticket"},
    }


def article_json(article: Article, *, body: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": article.ref,
        "title": article.title,
        "ticket": f"T-{article.ticket_id}" if article.ticket_id else None,
        "author": article.author,
        "created_at": article.created_at.isoformat(),
        "findings": list(article.findings),
        "fixes": list(article.fixes),
    }
    if body:
        data["body"] = article.body
    return data


def delivery_json(item: Delivery) -> dict[str, Any]:
    # everyone who can read a ticket sees its deliveries, but a webhook URL's path and
    # query often carry a secret token: only the scheme and host leave this module here
    # (admins and auditors see whole URLs in `webhook list`)
    parts = urlsplit(item.url)
    return {
        "webhook": item.webhook_id,
        "endpoint": f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}",
        "event": item.event.uid,
        "type": item.event.type,
        "ticket": f"T-{item.event.ticket_id}",
        "created_at": item.created_at.isoformat(),
        "attempts": item.attempts,
        "last_attempt_at": _iso(item.last_attempt_at),
        "last_status": item.last_status,
        "last_error": item.last_error,
        "delivered_at": _iso(item.delivered_at),
    }


# -- tickets ---------------------------------------------------------------------------------


@_refusals
async def ticket_open(api: Api, caller: Caller, params: dict[str, Any], _p: Progress) -> Any:
    """Open a ticket (``new``); optionally assigned and linked at once."""
    priority = str(params.get("priority", "P3")).upper()
    if priority not in sla.PRIORITIES:
        raise _error("bad_request", f"priority must be one of {', '.join(sla.PRIORITIES)}")
    channel = str(params.get("channel") or "remote")
    if channel not in CHANNELS:
        raise _error("bad_request", f"channel must be one of {', '.join(CHANNELS)}")
    link = params.get("link")
    target: tuple[str, int] | None = None
    if link:
        target = _parse_link(str(link))
        if await api.store.get_ticket(target[1]) is None:
            raise _error("not_found", f"there is no ticket T-{target[1]} to link to")
    desk = _desk(api)
    who = _who(caller)
    ticket = await desk.open(
        who,
        title=_text(params, "title"),
        customer=_text(params, "customer", limit=200),
        priority=priority,
        contact=_optional(params, "contact", limit=200),
        channel=channel,
        category=_optional(params, "category", limit=100),
        assignee=_optional(params, "assignee", limit=100),
    )
    if target is not None:
        await desk.link(who, ticket.id, target[1], target[0])
    return ticket_json(ticket, desk.clocks(ticket, []))


@_refusals
async def ticket_list(api: Api, caller: Caller, params: dict[str, Any], _p: Progress) -> Any:
    """Tickets, newest first: ``mine``, ``state``, ``level``, ``sla`` (either clock in that
    state), ``customer`` filters."""
    states = params.get("state")
    wanted: list[str] | None = None
    if states:
        wanted = [s.strip() for s in str(states).split(",") if s.strip()]
        if "active" in wanted:
            wanted = [s for s in wanted if s != "active"] + [s.value for s in lifecycle.ACTIVE]
        bad = [s for s in wanted if s not in {x.value for x in lifecycle.State}]
        if bad:
            names = ", ".join([s.value for s in lifecycle.State] + ["active"])
            raise _error("bad_request", f"no state {bad[0]!r}: states are {names}")
    level = params.get("level")
    if level is not None and level not in lifecycle.LEVELS:
        raise _error("bad_request", f"levels are {', '.join(lifecycle.LEVELS)}, not {level!r}")
    status = params.get("sla")
    if status is not None and status not in SLA_FILTERS:
        raise _error("bad_request", f"--sla is one of {', '.join(SLA_FILTERS)}")
    limit = params.get("limit")
    if limit is not None and (not isinstance(limit, int) or not 1 <= limit <= 10_000):
        raise _error("bad_request", "limit must be 1 to 10000")
    assignee = caller.user.name if params.get("mine") else _optional(params, "assignee")
    tickets = await api.store.list_tickets(
        states=wanted,
        level=level,
        assignee=assignee,
        customer=_optional(params, "customer", limit=200),
        limit=None if status else limit,
    )
    desk = _desk(api)
    timelines = await api.store.events_for(t.id for t in tickets)
    now = utcnow()
    out = []
    for ticket in tickets:
        data = ticket_json(ticket, desk.clocks(ticket, timelines.get(ticket.id, []), now))
        # either clock: a ticket whose first response is already breached still needs
        # attention where its resolution is at risk
        clocks = (data["sla"]["first_response"]["status"], data["sla"]["resolution"]["status"])
        if status is None or status.replace("-", "_") in clocks:
            out.append(data)
    return out[:limit] if limit else out


async def show_ticket(api: Api, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    """``ticket.show``: the ticket, its SLA clocks, timeline, links, ratings, sessions,
    attachments, webhook deliveries and the knowledge-base articles that may help."""
    from controller.api import attachment_json, session_json

    desk = _desk(api)
    ticket = await api._ticket(params)
    events = await api.store.ticket_events(ticket.id)
    data = ticket_json(ticket, desk.clocks(ticket, events))
    data["allowed"] = lifecycle.allowed(ticket.state)
    data["timeline"] = [event_json(e) for e in events]
    links = await api.store.ticket_links(ticket.id)
    others = {t.id: t for t in [await api.store.get_ticket(x.other_id) for x in links] if t}
    data["links"] = [
        {
            "kind": link.kind,
            "ticket": f"T-{link.other_id}",
            "title": others[link.other_id].title if link.other_id in others else None,
            "state": others[link.other_id].state if link.other_id in others else None,
        }
        for link in links
    ]
    data["ratings"] = [
        {
            "score": r.score,
            "comment": r.comment,
            "session": r.session_id,
            "technician": r.technician,
            "at": r.at.isoformat(),
        }
        for r in await api.store.ratings(ticket_id=ticket.id)
    ]
    data["sessions"] = [
        session_json(s, s.id in api.controller.links)
        for s in await api.store.sessions_for_ticket(ticket.id)
    ]
    data["attachments"] = [attachment_json(a) for a in await api.store.attachments(ticket.id)]
    data["deliveries"] = [delivery_json(d) for d in await api.store.deliveries(ticket_id=ticket.id)]
    findings = await desk.findings(ticket.id)
    data["kb"] = [article_json(a, body=False) for a in await desk.suggestions(ticket, findings)]
    return data


@_refusals
async def ticket_assign(api: Api, caller: Caller, params: dict[str, Any], _p: Progress) -> Any:
    """Assign a ticket (to yourself unless ``to`` names someone; ``nobody`` unassigns)."""
    to = None if params.get("nobody") else _optional(params, "to", limit=100) or caller.user.name
    ticket = await _desk(api).assign(_who(caller), _ticket_id(params), to)
    return ticket_json(ticket)


@_refusals
async def ticket_note(api: Api, caller: Caller, params: dict[str, Any], _p: Progress) -> Any:
    """A note on the timeline; ``internal`` ones are not a response to the customer."""
    text = _text(params, "text", limit=20_000)
    internal = bool(params.get("internal"))
    ticket = await _desk(api).note(_who(caller), _ticket_id(params), text, internal=internal)
    return ticket_json(ticket)


@_refusals
async def ticket_wait(api: Api, caller: Caller, params: dict[str, Any], _p: Progress) -> Any:
    """Wait on the customer (the resolution clock pauses)."""
    ticket = await _desk(api).wait(_who(caller), _ticket_id(params), _text(params, "reason"))
    return ticket_json(ticket)


@_refusals
async def ticket_resume(api: Api, caller: Caller, params: dict[str, Any], _p: Progress) -> Any:
    """The customer answered: back to open."""
    reason = _optional(params, "reason") or "the customer answered"
    ticket = await _desk(api).resume(_who(caller), _ticket_id(params), reason)
    return ticket_json(ticket)


@_refusals
async def ticket_resolve(api: Api, caller: Caller, params: dict[str, Any], _p: Progress) -> Any:
    """Resolve with a resolution text; ``article`` turns it into a KB article."""
    resolution = _text(params, "resolution", limit=20_000)
    title = _optional(params, "article_title", limit=300)
    wanted = bool(params.get("article")) or title is not None
    ticket, article = await _desk(api).resolve(
        _who(caller), _ticket_id(params), resolution, article=(title or "") if wanted else None
    )
    data = ticket_json(ticket)
    data["article"] = article_json(article) if article is not None else None
    return data


@_refusals
async def ticket_close(api: Api, caller: Caller, params: dict[str, Any], _p: Progress) -> Any:
    """Close a resolved ticket (final)."""
    return ticket_json(await _desk(api).close(_who(caller), _ticket_id(params)))


@_refusals
async def ticket_reopen(api: Api, caller: Caller, params: dict[str, Any], _p: Progress) -> Any:
    """Reopen a resolved ticket, saying why."""
    ticket = await _desk(api).reopen(_who(caller), _ticket_id(params), _text(params, "reason"))
    return ticket_json(ticket)


@_refusals
async def ticket_escalate(api: Api, caller: Caller, params: dict[str, Any], _p: Progress) -> Any:
    """Raise the support level, saying why; L4 names the vendor (and their reference)."""
    ticket = await _desk(api).escalate(
        _who(caller),
        _ticket_id(params),
        str(params.get("to", "")).upper(),
        _text(params, "reason", limit=2000),
        vendor=_optional(params, "vendor", limit=200),
        vendor_ref=_optional(params, "vendor_ref", limit=200),
    )
    return ticket_json(ticket)


@_refusals
async def ticket_link(api: Api, caller: Caller, params: dict[str, Any], _p: Progress) -> Any:
    """Link this ticket to another: ``other`` is ``KIND:T-N`` as in ``ticket.open``'s
    ``link`` (or ``T-N`` with ``kind``, the older form; default relates)."""
    ticket_id = _ticket_id(params)
    given = params.get("kind")
    if ":" in str(params.get("other", "")):
        kind, other = _parse_link(str(params["other"]))
        if given is not None and given != kind:
            raise _error("bad_request", f"the link says {kind!r} but --kind says {given!r}")
    else:
        kind, other = str(given or "relates"), _ticket_id(params, "other")
        if kind not in LINK_KINDS:
            raise _error("bad_request", f"links are {', '.join(LINK_KINDS)}, not {kind!r}")
    await _desk(api).link(_who(caller), ticket_id, other, kind)
    return {"ticket": f"T-{ticket_id}", "kind": kind, "other": f"T-{other}"}


def _parse_link(text: str) -> tuple[str, int]:
    from controller.api import parse_ticket_id

    kind, sep, other = text.partition(":")
    if not sep or kind not in LINK_KINDS:
        raise _error(
            "bad_request", f"a link is KIND:T-N with KIND one of {', '.join(LINK_KINDS)}: {text!r}"
        )
    return kind, parse_ticket_id(other)


# -- SLA and KPIs ----------------------------------------------------------------------------


async def sla_policy(api: Api, caller: Caller, params: dict[str, Any], _p: Progress) -> Any:
    """The SLA policy in force."""
    return _desk(api).policy.as_json()


async def report_kpi(api: Api, caller: Caller, params: dict[str, Any], progress: Progress) -> Any:
    """The KPI report since ``since`` (default 30 days), optionally ``by`` a grouping."""
    from controller.api import parse_since

    by = params.get("by")
    if by is not None and by not in kpi.GROUPINGS:
        raise _error("bad_request", f"--by is {' or '.join(kpi.GROUPINGS)}, not {by!r}")
    now = utcnow()
    since = parse_since(str(params.get("since") or "30d"))
    until = parse_since(str(params["until"]), "until") if params.get("until") else now
    if since >= until or until - since > timedelta(days=3660):
        raise _error("bad_request", "the window must run forwards and span at most 10 years")
    await progress("reading tickets")
    tickets = await api.store.tickets_active_since(since)
    timelines = await api.store.events_for(t.id for t in tickets)
    ratings: dict[int, list[Any]] = {}
    for rating in await api.store.ratings(since=since):
        ratings.setdefault(rating.ticket_id, []).append(rating)
    facts = [
        kpi.Facts(t, timelines.get(t.id, []), ratings.get(t.id, []))
        for t in tickets
        if t.created_at < until
    ]
    await progress(f"computing KPIs over {len(facts)} tickets")
    return kpi.report(facts, _desk(api).policy, since, until, by)


_ALL = ("admin", "technician", "auditor")
_WORK = ("admin", "technician")

TICKET_METHODS: dict[str, tuple[Handler, tuple[str, ...]]] = {
    "ticket.open": (ticket_open, _WORK),
    "ticket.list": (ticket_list, _ALL),
    "ticket.assign": (ticket_assign, _WORK),
    "ticket.note": (ticket_note, _WORK),
    "ticket.wait": (ticket_wait, _WORK),
    "ticket.resume": (ticket_resume, _WORK),
    "ticket.resolve": (ticket_resolve, _WORK),
    "ticket.close": (ticket_close, _WORK),
    "ticket.reopen": (ticket_reopen, _WORK),
    "ticket.escalate": (ticket_escalate, _WORK),
    "ticket.link": (ticket_link, _WORK),
    "sla.policy": (sla_policy, _ALL),
    "report.kpi": (report_kpi, _ALL),
}
