"""``helpline ticket …``, ``helpline report`` and ``helpline sla …``: tickets under SLA from
the technician's terminal (``kb`` and ``webhook`` are in ``kb.py`` and ``webhooks.py``).

Every command talks to the controller's API; every read command takes ``--json``;
``report`` also ``--csv``. Refusals exit with the README's codes: 2 bad input, 3 unknown
ticket, 4 not allowed for your role, 8 not allowed in the ticket's state (or already
there).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from controller.cli.common import HomeOpt, JsonOpt, TicketArg, make, run_client
from controller.cli.output import Column, emit, fail, print_table, shown, stderr, stdout
from protocol.calls import Call
from protocol.calls.reports import (
    Compliance,
    KpiGroup,
    KpiReport,
    Policy,
    ReportKpi,
    Satisfaction,
    SlaPolicy,
)
from protocol.calls.sessions import SessionInfo
from protocol.calls.tickets import (
    Clock,
    DiagnosticsAttachment,
    ResolvedTicket,
    TicketAssign,
    TicketClose,
    TicketDetail,
    TicketEscalate,
    TicketInfo,
    TicketLink,
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
)
from protocol.vocabulary import SLA_STATUSES

R = TypeVar("R")

ticket_app = typer.Typer(
    help="Tickets: open, list, show, assign, note, wait, resume, escalate, resolve, close, reopen.",
    no_args_is_help=True,
)
sla_app = typer.Typer(help="The SLA policy: show it, check a file.", no_args_is_help=True)

ReasonOpt = Annotated[str, typer.Option("--reason", help="Why, in a sentence.")]

_STATUS = {
    "on_track": "[green]on track[/]",
    "at_risk": "[yellow]at risk[/]",
    "breached": "[bold red]breached[/]",
    "paused": "[cyan]paused[/]",
    "met": "[green]met[/]",
    "none": "[dim]none[/]",
}
_STATE = {
    "new": "[bold]new[/]",
    "open": "open",
    "waiting": "[cyan]waiting[/]",
    "resolved": "[green]resolved[/]",
    "closed": "[dim]closed[/]",
}


def _call(home: Path | None, method: str, params: dict[str, Any] | None = None) -> Any:
    return run_client(home, lambda c: c.call(method, params or {}))


def human(seconds: float | None) -> str:
    """``30h05m``, ``12m``, ``45s``; no days, since SLA time is working time (30 h of
    office hours is three days, not one and a quarter); negative durations get a minus."""
    if seconds is None:
        return "-"
    sign, left = ("-", -int(seconds)) if seconds < 0 else ("", int(seconds))
    hours, left = divmod(left, 3600)
    minutes, secs = divmod(left, 60)
    if hours:
        return f"{sign}{hours}h{minutes:02d}m"
    return f"{sign}{minutes}m" if minutes else f"{sign}{secs}s"


def _when(iso: str | None) -> str:
    return iso[:16].replace("T", " ") if iso else "-"


def _at(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment else "-"


def _request(home: Path | None, call: Call[R]) -> R:
    return run_client(home, lambda c: c.request(call))


def _sla_cell(ticket: TicketWithSla) -> str:
    sla = ticket.sla
    clocks = [sla.first_response, sla.resolution]
    worst = next((c for c in clocks if c.status == sla.status), clocks[1])
    text = str(_STATUS.get(sla.status, sla.status))
    if sla.status in ("on_track", "at_risk") and worst.remaining_s is not None:
        text += f" {human(worst.remaining_s)}"
    return text


def ticket_table(tickets: list[TicketWithSla]) -> None:
    """Tickets as one table."""
    table = Table("id", "pri", "state", "lvl", "assignee", "SLA", "customer", "title")
    for t in tickets:
        table.add_row(
            f"T-{t.id}",
            t.priority,
            _STATE.get(t.state, t.state),
            t.level,
            shown(t.assignee or "-"),
            _sla_cell(t),
            shown(t.customer),
            shown(t.title),
        )
    stdout.print(table)


def sessions_table(sessions: list[SessionInfo]) -> None:
    """Sessions as one table (``helpline sessions`` and ``helpline ticket show``)."""
    columns = (
        Column("session"),
        Column("ticket"),
        Column("agent", drop=1),
        Column("technician"),
        Column("state"),
        Column("connected"),
        Column("expires", "text", min_width=10),
    )
    rows = [
        (
            shown(s.id),
            f"T-{s.ticket}",
            shown(s.agent or ""),
            shown(s.technician or ""),
            shown(s.state),
            "[green]yes[/]" if s.connected else "no",
            f"{s.expires_at:%Y-%m-%d %H:%M:%S}",
        )
        for s in sessions
    ]
    print_table(columns, rows)


# -- tickets ---------------------------------------------------------------------------------


@ticket_app.command("open")
def ticket_open(
    title: Annotated[str, typer.Option(help="What is wrong, in a line.")],
    customer: Annotated[str, typer.Option(help="Customer name.")],
    priority: Annotated[str, typer.Option(help="P1 (business down) to P4.")] = "P3",
    contact: Annotated[str | None, typer.Option(help="Who to call back, and how.")] = None,
    channel: Annotated[
        str, typer.Option(help="phone, e-mail, chat, remote or on-site.")
    ] = "remote",
    category: Annotated[str | None, typer.Option(help="e.g. printing, network.")] = None,
    assignee: Annotated[str | None, typer.Option(help="Assign at once (a user name).")] = None,
    link: Annotated[
        str | None, typer.Option(help="KIND:T-N, e.g. follows:T-3 for a returning customer.")
    ] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Open a ticket (state new; SLA clocks start now)."""
    call = make(
        TicketOpen,
        title=title,
        customer=customer,
        priority=priority,
        contact=contact,
        channel=channel,
        category=category,
        assignee=assignee,
        link=link,
    )
    emit(
        _request(home, call),
        as_json,
        lambda t: stdout.print(f"opened [bold]T-{t.id}[/]: {shown(t.title)}"),
    )


#: ``--sla`` as people type it, and as the API writes it
_SLA_FILTERS = {status.replace("_", "-"): status for status in SLA_STATUSES}


@ticket_app.command("list")
def ticket_list(
    mine: Annotated[bool, typer.Option("--mine", help="Only tickets assigned to me.")] = False,
    state: Annotated[
        str | None,
        typer.Option(help="new, open, waiting, resolved, closed, or active; comma-separated."),
    ] = None,
    level: Annotated[str | None, typer.Option(help="L1-L4.")] = None,
    sla: Annotated[
        str | None, typer.Option(help="on-track, at-risk, breached, paused, met, none.")
    ] = None,
    assignee: Annotated[str | None, typer.Option(help="Assigned to this user.")] = None,
    customer: Annotated[str | None, typer.Option(help="This customer's tickets.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many.")] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List tickets, newest first, with their SLA state."""
    status = None
    if sla is not None:
        # at-risk or at_risk: the README writes the first, --json shows the second
        status = _SLA_FILTERS.get(sla.replace("_", "-"))
        if status is None:
            fail("bad_request", f"--sla is one of {', '.join(_SLA_FILTERS)}, not {sla!r}")
    call = make(
        TicketList,
        mine=mine,
        state=state,
        level=level,
        sla=status,
        assignee=assignee,
        customer=customer,
        limit=limit,
    )
    emit(_request(home, call), as_json, ticket_table)


@ticket_app.command("show")
def ticket_show(ticket: TicketArg, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Show a ticket: SLA, timeline, links, sessions, attachments (--json: all of it whole)."""
    emit(_request(home, make(TicketShow, ticket=ticket)), as_json, _render_ticket)


def _render_ticket(d: TicketDetail) -> None:
    from controller.cli.render import render_diagnostics

    stdout.print(f"[bold]T-{d.id}[/]  {shown(d.title)}")
    contact = f" ({shown(d.contact)})" if d.contact else ""
    stdout.print(
        f"  customer  {shown(d.customer)}{contact}   channel {d.channel}"
        f"   category {shown(d.category or '-')}"
    )
    vendor = f"   vendor {shown(d.vendor)} {shown(d.vendor_ref or '')}" if d.vendor else ""
    stdout.print(
        f"  {d.priority} · {_STATE.get(d.state, d.state)} · {d.level}"
        f" · assignee {shown(d.assignee or '-')}{vendor}"
    )
    if d.allowed:
        stdout.print(f"  [dim]next: {', '.join(d.allowed)}[/]")
    for name, clock in (("first response", d.sla.first_response), ("resolution", d.sla.resolution)):
        stdout.print(f"  SLA {name}: {_clock_text(clock)}")
    if d.resolution:
        stdout.print(f"  resolution: {shown(d.resolution)}")
    for link in d.links:
        stdout.print(
            f"  {link.kind.replace('_', ' ')} T-{link.ticket}: "
            f"{shown(link.title or '')} ({link.state})"
        )
    stdout.print("[bold]timeline[/]")
    for event in d.timeline:
        actor = shown(event.actor or "customer")
        stdout.print(f"  {_at(event.at)}  {actor:<12} {shown(timeline_text(event))}")
    for r in d.ratings:
        stars = "★" * r.score + "☆" * (5 - r.score)
        comment = f": {shown(r.comment)}" if r.comment else ""
        stdout.print(f"  rating {stars} {r.score}/5{comment}")
    if d.sessions:
        sessions_table(list(d.sessions))
    stdout.print(f"[bold]attachments[/] ({len(d.attachments)})")
    for a in d.attachments:
        status = "[green]ok[/]" if a.ok else "[red]failed[/]"
        stdout.print(
            f"  #{a.id} {a.kind} {status} from {a.session} at {a.created_at:%Y-%m-%d %H:%M:%S}"
        )
    if d.kb:
        stdout.print("[bold]knowledge base[/] (may help)")
        for article in d.kb:
            stdout.print(f"  KB-{article.id}  {shown(article.title)}")
    if d.deliveries:
        pending = [x for x in d.deliveries if not x.delivered_at]
        line = (
            f"[bold]webhooks[/] {len(d.deliveries) - len(pending)} delivered, "
            f"{len(pending)} pending"
        )
        if pending and pending[0].last_error:
            line += f" (last error: {shown(pending[0].last_error)})"
        stdout.print(line)
    snapshots = [a for a in d.attachments if a.kind == "diagnostics"]
    if snapshots:
        last = snapshots[-1]
        stdout.rule(f"latest diagnostics (#{last.id})")
        findings = list(last.findings) if isinstance(last, DiagnosticsAttachment) else None
        render_diagnostics(stdout, last.data, findings)


def _clock_text(clock: Clock) -> str:
    status = str(_STATUS.get(clock.status, clock.status))
    if clock.target_s is None:
        return status
    used = f"{human(clock.elapsed_s)} of {human(clock.target_s)}"
    if clock.status in ("on_track", "at_risk"):
        return f"{status}, {human(clock.remaining_s)} left (due {_at(clock.deadline)} UTC)"
    return f"{status} ({used})"


def timeline_text(event: TimelineEvent) -> str:
    """One line of a ticket's timeline, for people."""
    data, kind = event.data, event.type.removeprefix("ticket.")
    move = f" [{' → '.join(data['transition'])}]" if data.get("transition") else ""
    texts: dict[str, Callable[[], str]] = {
        "opened": lambda: f"opened ({data.get('priority')}, via {data.get('channel')})",
        "assigned": lambda: f"assigned to {data['to']}" if data.get("to") else "unassigned",
        "noted": lambda: f"{'internal note' if data.get('internal') else 'note'}: {data['text']}",
        "waiting": lambda: f"waiting on the customer: {data.get('reason')}",
        "resumed": lambda: f"resumed: {data.get('reason')}",
        "escalated": lambda: (
            f"escalated {data['from']} → {data['to']}: {data.get('reason')}"
            + (
                f" (vendor {data['vendor']} {data.get('vendor_ref') or ''})"
                if data.get("vendor")
                else ""
            )
            + (f"; {data['unassigned']} unassigned" if data.get("unassigned") else "")
        ),
        "resolved": lambda: f"resolved: {data.get('resolution')}",
        "closed": lambda: "closed",
        "reopened": lambda: f"reopened: {data.get('reason')}",
        "session_started": lambda: f"remote session {data.get('session')} with the customer",
        "fix_interrupted": lambda: (
            f"fix {data.get('fix')} ended without a result: {data.get('reason')} "
            f"({len(data.get('output') or [])} pieces of output kept, `--json` shows them)"
        ),
        "rated": lambda: (
            f"customer rated {data.get('score')}/5"
            + (f": {data['comment']}" if data.get("comment") else "")
        ),
        "linked": lambda: f"linked: {str(data.get('kind')).replace('_', ' ')} {data.get('other')}",
        "sla_at_risk": lambda: f"SLA {str(data.get('clock')).replace('_', ' ')} at risk",
        "sla_breached": lambda: f"SLA {str(data.get('clock')).replace('_', ' ')} breached",
        "article_written": lambda: (
            f"knowledge-base article {data.get('article')}: {data.get('title')}"
        ),
    }
    render: Callable[[], str] | None = texts.get(kind)
    return (render() if render is not None else kind) + move


def _show_changed(verb: str) -> Callable[[TicketInfo], None]:
    def render(t: TicketInfo) -> None:
        stdout.print(f"T-{t.id} {verb}: {t.state}, {t.level}, assignee {shown(t.assignee or '-')}")

    return render


@ticket_app.command("assign")
def ticket_assign(
    ticket: TicketArg,
    to: Annotated[str | None, typer.Option(help="A user name; default: yourself.")] = None,
    nobody: Annotated[bool, typer.Option("--nobody", help="Unassign.")] = False,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Assign a ticket (the assignee's level must reach the ticket's)."""
    call = make(TicketAssign, ticket=ticket, to=to, nobody=nobody)
    emit(_request(home, call), as_json, _show_changed("assigned"))


@ticket_app.command("note")
def ticket_note(
    ticket: TicketArg,
    text: Annotated[str, typer.Argument(help="The note.")],
    internal: Annotated[
        bool, typer.Option("--internal", help="For the team only: not a response.")
    ] = False,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a note; the first one that is not --internal is the first response."""
    call = make(TicketNote, ticket=ticket, text=text, internal=internal)
    emit(_request(home, call), as_json, _show_changed("noted"))


@ticket_app.command("wait")
def ticket_wait(
    ticket: TicketArg, reason: ReasonOpt, home: HomeOpt = None, as_json: JsonOpt = False
) -> None:
    """Wait on the customer: the resolution clock pauses."""
    call = make(TicketWait, ticket=ticket, reason=reason)
    emit(_request(home, call), as_json, _show_changed("waiting"))


@ticket_app.command("resume")
def ticket_resume(
    ticket: TicketArg,
    reason: Annotated[str | None, typer.Option(help="What the customer said.")] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The customer answered: back to open (a customer joining a session does this too)."""
    call = make(TicketResume, ticket=ticket, reason=reason)
    emit(_request(home, call), as_json, _show_changed("resumed"))


@ticket_app.command("escalate")
def ticket_escalate(
    ticket: TicketArg,
    to: Annotated[str, typer.Option("--to", help="L2, L3, or L4 (the vendor).")],
    reason: ReasonOpt,
    vendor: Annotated[str | None, typer.Option(help="L4: the vendor or manufacturer.")] = None,
    vendor_ref: Annotated[
        str | None, typer.Option("--vendor-ref", help="L4: their case number.")
    ] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Escalate to a higher support level, recording who and why."""
    call = make(
        TicketEscalate, ticket=ticket, to=to, reason=reason, vendor=vendor, vendor_ref=vendor_ref
    )
    emit(_request(home, call), as_json, _show_changed("escalated"))


@ticket_app.command("resolve")
def ticket_resolve(
    ticket: TicketArg,
    resolution: Annotated[str, typer.Option(help="What fixed it.")],
    kb: Annotated[
        bool, typer.Option("--kb", help="Also write it up as a knowledge-base article.")
    ] = False,
    kb_title: Annotated[
        str | None, typer.Option("--kb-title", help="The article's title (implies --kb).")
    ] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resolve a ticket (the resolution clock stops)."""
    call = make(
        TicketResolve, ticket=ticket, resolution=resolution, article=kb, article_title=kb_title
    )

    def render(t: ResolvedTicket) -> None:
        _show_changed("resolved")(t)
        if t.article is not None:
            a = t.article
            linked = ", ".join(a.findings + a.fixes) or "no findings or fixes"
            stdout.print(f"knowledge base: KB-{a.id} {shown(a.title)} ({shown(linked)})")

    emit(_request(home, call), as_json, render)


@ticket_app.command("close")
def ticket_close(ticket: TicketArg, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Close a resolved ticket for good."""
    emit(_request(home, make(TicketClose, ticket=ticket)), as_json, _show_changed("closed"))


@ticket_app.command("reopen")
def ticket_reopen(
    ticket: TicketArg,
    reason: Annotated[str, typer.Option("--reason", help="Why it is back (required).")],
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reopen a resolved ticket, saying why (--reason is required; counts in the reopen rate)."""
    call = make(TicketReopen, ticket=ticket, reason=reason)
    emit(_request(home, call), as_json, _show_changed("reopened"))


@ticket_app.command("link")
def ticket_link(
    ticket: TicketArg,
    link: Annotated[
        str,
        typer.Argument(
            help="KIND:T-N as in `ticket open --link`: relates, duplicates, follows or "
            "blocks (this ticket → the other), e.g. follows:T-3; a bare T-N relates."
        ),
    ],
    kind: Annotated[
        str | None, typer.Option(help="Older form: the kind of a bare T-N (default relates).")
    ] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Link two tickets: `helpline ticket link T-4 follows:T-3`."""
    call = make(TicketLink, ticket=ticket, other=link, kind=kind)
    emit(
        _request(home, call),
        as_json,
        lambda d: stdout.print(f"T-{d.ticket} {d.kind} T-{d.other}"),
    )


# -- KPIs ------------------------------------------------------------------------------------


def report(
    since: Annotated[str, typer.Option(help="Window start: 30d, 24h, or an ISO time.")] = "30d",
    until: Annotated[str | None, typer.Option(help="Window end (default: now).")] = None,
    by: Annotated[str | None, typer.Option(help="technician or level.")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV on stdout.")] = False,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """KPIs: tickets opened and resolved, response and resolution times, SLA compliance,
    first-contact resolution, reopen rate, customer satisfaction."""
    from controller.tickets.kpi import to_csv

    if as_csv and as_json:
        fail("bad_request", "choose --csv or --json")
    kpis = _request(home, make(ReportKpi, since=since, until=until, by=by))
    if as_csv:
        typer.echo(to_csv(ReportKpi.dump_result(kpis)), nl=False)
        return
    emit(kpis, as_json, _render_report)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _render_report(d: KpiReport) -> None:
    # one column per group: a team has a handful of levels or technicians, while the
    # KPIs are a dozen rows
    groups = [*(d.rows if d.by else []), d.total]
    table = Table(
        "",
        *(shown(g.group) for g in groups),
        title=f"KPIs {_at(d.since)} to {_at(d.until)} UTC" + (f", by {d.by}" if d.by else ""),
    )
    metrics: list[tuple[str, Callable[[KpiGroup], str]]] = [
        ("opened", lambda g: str(g.opened)),
        ("resolved", lambda g: str(g.resolved)),
        ("first response, median", lambda g: human(g.first_response.median_s)),
        ("first response, p90", lambda g: human(g.first_response.p90_s)),
        ("resolution, median", lambda g: human(g.resolution.median_s)),
        ("resolution, p90", lambda g: human(g.resolution.p90_s)),
        ("SLA met: first response", lambda g: _met(g.sla.first_response)),
        ("SLA met: resolution", lambda g: _met(g.sla.resolution)),
        ("first-contact resolution", lambda g: _pct(g.first_contact_resolution)),
        ("reopen rate", lambda g: _pct(g.reopen_rate)),
        ("satisfaction (1-5)", lambda g: _csat(g.satisfaction)),
    ]
    for name, cell in metrics:
        table.add_row(name, *(cell(g) for g in groups))
    stdout.print(table)
    stdout.print(
        "[dim]Times are SLA-clock time: working hours of the priority's calendar, waiting "
        f"on the customer excluded. Policy: {shown(d.policy)}[/]"
    )


def _met(clock: Compliance) -> str:
    counted = clock.met + clock.breached
    return f"{_pct(clock.compliance)} of {counted}" if counted else "-"


def _csat(sat: Satisfaction) -> str:
    if not sat.ratings or sat.mean is None:
        return "-"
    return f"{sat.mean:.1f} ({sat.ratings}, {_pct(sat.satisfied)} 4-5)"


# -- SLA policy ------------------------------------------------------------------------------


def _render_policy(p: Policy) -> None:
    stdout.print(f"SLA policy: {shown(p.source)} (at risk below {p.at_risk * 100:.0f} %)")
    table = Table("priority", "calendar", "first response", "resolution", "escalate at risk")
    for priority, t in p.priorities.items():
        table.add_row(
            priority,
            shown(t.calendar),
            human(t.first_response_s),
            human(t.resolution_s),
            t.escalate_at_risk or "-",
        )
    stdout.print(table)
    for name, text in p.calendars.items():
        stdout.print(f"  {shown(name)}: {shown(text)}")


@sla_app.command("show")
def sla_show(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """The policy the controller runs with."""

    def render(p: Policy) -> None:
        _render_policy(p)
        for warning in p.warnings:
            stdout.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)

    emit(_request(home, make(SlaPolicy)), as_json, render)


@sla_app.command("check")
def sla_check(
    file: Annotated[Path, typer.Option("--file", help="An SLA policy file (TOML).")],
    as_json: JsonOpt = False,
) -> None:
    """Check a policy file without a controller (exit 2 names the line of a problem)."""
    from controller.tickets.sla import PolicyError, parse_policy

    try:
        policy = parse_policy(file.read_text(encoding="utf-8"), str(file))
    except (OSError, UnicodeDecodeError) as exc:
        fail("bad_request", f"cannot read {file}: {exc}")
    except PolicyError as exc:
        fail("bad_request", str(exc))
    # valid, so exit 0; but a priority without targets silently shows "SLA: none"
    for warning in policy.warnings:
        stderr.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    # the same model as `sla show`: one rendering, one JSON shape
    emit(Policy.model_validate(policy.as_json()), as_json, _render_policy)
