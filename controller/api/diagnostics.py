"""Diagnostics: take a snapshot on the ticket's agent, compare two, list the collectors.

Findings are computed from the snapshot whenever it is shown (``controller/findings.py``),
never stored, so an improved rule catalogue applies to every snapshot already on a ticket.
A snapshot is the agent's data: the findings engine reads it defensively, and the result
carries it as it came.
"""

from __future__ import annotations

from collections.abc import Sequence

from websockets.exceptions import ConnectionClosed

from controller.api.kb import article_summary
from controller.api.registry import ANYONE, ROUTES, WORKERS, ApiError, Context, utcnow
from controller.collectors import collector_list, collector_names
from controller.findings import compare, count_by_severity, evaluate
from controller.store import Attachment
from protocol.calls.diagnostics import (
    CollectorInfo,
    Comparison,
    DiagCollectors,
    DiagDiff,
    Diagnostics,
    DiagRun,
    Finding,
    SeverityCount,
    SnapshotRef,
)
from protocol.calls.kb import ArticleSummary
from protocol.errors import ErrorCode
from protocol.messages import DiagRequest


@ROUTES.handler(DiagRun, roles=WORKERS)
async def diag_run(ctx: Context, call: DiagRun) -> Diagnostics:
    """Take a snapshot on the ticket's agent; the result is attached to the ticket."""
    ticket = await ctx.ticket(call.ticket)
    try:
        collectors = collector_names(call.collectors) if call.collectors else None
    except ValueError as exc:
        raise ApiError(ErrorCode.BAD_REQUEST, f"collectors: {exc}") from None
    link = ctx.services.links.link_for_ticket(ticket.id)
    if link is None:
        raise ApiError(
            ErrorCode.NO_AGENT,
            f"no agent is connected to T-{ticket.id}: issue a code with "
            f"`helpline code T-{ticket.id}` and have the customer join",
        )
    request = DiagRequest(collectors=collectors)
    await ctx.store.add_request(
        request.id, link.session_id, ticket.id, "diagnostics", ctx.caller.user.name, utcnow()
    )
    await ctx.audit(
        "diag.requested",
        ticket_id=ticket.id,
        session_id=link.session_id,
        agent_id=link.agent_id,
        details={"request_id": request.id, "collectors": list(collectors or ["all"])},
    )
    what = ", ".join(collectors) if collectors else "all collectors"
    await ctx.progress(f"collecting diagnostics on the customer's machine ({what})")
    try:
        result = await link.request(request, call.timeout)
    except (TimeoutError, ConnectionError, ConnectionClosed):
        raise ApiError(
            ErrorCode.AGENT_OFFLINE,
            f"the agent did not answer in time; request {request.id} stays open and its "
            f"result will be attached to T-{ticket.id} when the agent delivers it",
        ) from None
    await ctx.progress("evaluating findings")
    found = evaluate(result.data, ctx.services.rules) if result.ok else []
    findings = tuple(Finding.model_validate(f) for f in found)
    return Diagnostics(
        ticket=ticket.id,
        request=request.id,
        ok=result.ok,
        error=result.error,
        data=result.data,
        findings=findings,
        summary=SeverityCount.model_validate(count_by_severity(found)),
        articles=await _articles(ctx, findings),
    )


async def _articles(ctx: Context, findings: Sequence[Finding]) -> tuple[ArticleSummary, ...]:
    """Knowledge-base articles written for these findings (or their suggested fixes)."""
    rules = sorted({f.rule for f in findings})
    fixes = sorted({f.fix for f in findings if f.fix})
    if not rules:
        return ()
    articles = await ctx.store.articles_for(findings=rules[:50], fixes=fixes[:50])
    return tuple(article_summary(a) for a in articles)


@ROUTES.handler(DiagDiff, roles=ANYONE)
async def diag_diff(ctx: Context, call: DiagDiff) -> Comparison:
    """Compare two diagnostics snapshots of a ticket: by default the last two."""
    ticket = await ctx.ticket(call.ticket)
    snapshots = [
        a for a in await ctx.store.attachments(ticket.id) if a.kind == "diagnostics" and a.ok
    ]
    by_id = {a.id: a for a in snapshots}
    wanted = [n for n in (call.from_, call.to) if n is not None]
    for number in wanted:
        if number not in by_id:
            raise ApiError(
                ErrorCode.NOT_FOUND,
                f"T-{ticket.id} has no diagnostics snapshot #{number}; it has "
                f"{', '.join(f'#{a.id}' for a in snapshots) or 'none'}",
            )
    if len(wanted) == 1:
        raise ApiError(ErrorCode.BAD_REQUEST, "give both --from and --to, or neither")
    if wanted:
        before, after = by_id[wanted[0]], by_id[wanted[1]]
    elif len(snapshots) < 2:
        raise ApiError(
            ErrorCode.NOT_FOUND,
            f"T-{ticket.id} has {len(snapshots)} diagnostics snapshot(s); a comparison "
            f"needs two: take another with `helpline diag T-{ticket.id}` after the fix",
        )
    else:
        before, after = snapshots[-2:]
    # the engine's findings and changes, as the models that carry them
    compared = compare(before.data, after.data, ctx.services.rules)
    return Comparison.model_validate(
        {
            "ticket": ticket.id,
            "before": _described(before),
            "after": _described(after),
            **compared,
        }
    )


def _described(attachment: Attachment) -> SnapshotRef:
    data = attachment.data
    taken = data.get("taken_at")
    collectors = data.get("collectors")
    return SnapshotRef(
        attachment=attachment.id,
        request=attachment.request_id,
        taken_at=taken if isinstance(taken, str) else attachment.created_at.isoformat(),
        # the agent's word: a list of names, or nothing said
        collectors=tuple(collectors)
        if isinstance(collectors, list) and all(isinstance(c, str) for c in collectors)
        else None,
    )


@ROUTES.handler(DiagCollectors, roles=ANYONE)
async def diag_collectors(ctx: Context, call: DiagCollectors) -> list[CollectorInfo]:
    """The collectors an agent of this version has, with aliases and time limits."""
    return collector_list()
