"""``sla.policy`` and ``report.kpi``: the SLA policy in force and the KPIs over a window."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from controller.api.params import parse_since
from controller.api.registry import ANYONE, ROUTES, ApiError, Context, utcnow
from controller.tickets import kpi
from protocol.calls.reports import KpiReport, Policy, ReportKpi, SlaPolicy
from protocol.errors import ErrorCode


@ROUTES.handler(SlaPolicy, roles=ANYONE)
async def sla_policy(ctx: Context, call: SlaPolicy) -> Policy:
    return Policy.model_validate(ctx.services.desk.policy.as_json())


@ROUTES.handler(ReportKpi, roles=ANYONE, heavy=True)
async def report_kpi(ctx: Context, call: ReportKpi) -> KpiReport:
    """Walks every ticket active in the window, with its timeline and ratings."""
    now = utcnow()
    since = parse_since(call.since)
    until = parse_since(call.until, "until") if call.until else now
    if since >= until or until - since > timedelta(days=3660):
        raise ApiError(
            ErrorCode.BAD_REQUEST, "the window must run forwards and span at most 10 years"
        )
    await ctx.progress("reading tickets")
    store = ctx.store
    tickets = await store.tickets_active_since(since)
    timelines = await store.events_for(t.id for t in tickets)
    ratings: dict[int, list[Any]] = {}
    for rating in await store.ratings(since=since):
        ratings.setdefault(rating.ticket_id, []).append(rating)
    facts = [
        kpi.Facts(t, timelines.get(t.id, []), ratings.get(t.id, []))
        for t in tickets
        if t.created_at < until
    ]
    await ctx.progress(f"computing KPIs over {len(facts)} tickets")
    return KpiReport.model_validate(
        kpi.report(facts, ctx.services.desk.policy, since, until, call.by)
    )
