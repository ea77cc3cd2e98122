"""Fixes: publish the signed catalogue, list it, propose one fix to a ticket's agent.

The controller checks what it can (the catalogue verifies, the fix exists, the caller's
and the ticket's level are enough, the parameters fit the schema) and refuses early with a
clear message; the agent checks all of it again, because a controller could be
compromised. An admin proposes fixes as a technician of the highest level, and the record
says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from websockets.exceptions import ConnectionClosed

from controller import artefacts
from controller.api.registry import ADMINS, ANYONE, ROUTES, WORKERS, ApiError, Context, utcnow
from controller.findings import evaluate
from protocol.calls.fixes import (
    AgentBuild,
    FixCatalogue,
    FixesList,
    FixesPublish,
    FixesPublished,
    FixInfo,
    FixOutcome,
    FixReport,
    FixRun,
    Verification,
)
from protocol.catalogue import (
    LEVELS,
    Bundle,
    CatalogueError,
    Fix,
    SignedBundle,
    level_allows,
    validate_params,
)
from protocol.errors import ErrorCode
from protocol.messages import DiagRequest, FixOutput, FixProposal, Technician, TicketRef

if TYPE_CHECKING:
    from controller.server import AgentLink

#: how long the customer has to answer a proposal (the agent's own default)
CONSENT_WAIT = 120.0


def _published(ctx: Context) -> tuple[SignedBundle, Bundle]:
    try:
        found = ctx.services.fixes.load()
    except CatalogueError as exc:
        raise ApiError(
            ErrorCode.CONFLICT, f"the published catalogue does not verify: {exc.reason}"
        ) from None
    if found is None:
        raise ApiError(
            ErrorCode.NOT_FOUND,
            "no fix catalogue is published: `helpline fixes sign DIR --key KEY --out B` "
            "and `helpline fixes publish B`",
        )
    return found


def fix_info(fix: Fix, suggested_for: str | None = None) -> FixInfo:
    return FixInfo(
        id=fix.id,
        title=fix.title,
        description=fix.description,
        min_level=fix.min_level,
        needs_root=fix.needs_root,
        reversible=fix.reversible or fix.undo is not None,
        targets=fix.targets,
        platforms=fix.platforms,
        timeout=fix.timeout,
        params={name: spec.model_dump(exclude_none=True) for name, spec in fix.params.items()},
        sha256=fix.content_hash(),
        suggested_for=suggested_for,
    )


@ROUTES.handler(FixesPublish, roles=ADMINS)
async def fixes_publish(ctx: Context, call: FixesPublish) -> FixesPublished:
    """Verify and publish a signed bundle; the first one pins the catalogue key."""
    signed = call.bundle
    try:
        bundle, newly_pinned = ctx.services.fixes.publish(signed, replace_key=call.replace_key)
    except (ValidationError, CatalogueError) as exc:
        reason = exc.reason if isinstance(exc, CatalogueError) else "not a signed bundle"
        await ctx.audit("catalogue.publish_refused", details={"reason": reason})
        raise ApiError(ErrorCode.BAD_REQUEST, f"catalogue refused: {reason}") from None
    if newly_pinned:
        await ctx.audit("catalogue.key_pinned", details={"key": signed.key})
    ids = tuple(entry.fix.id for entry in bundle.fixes)
    await ctx.audit(
        "catalogue.published",
        details={"serial": bundle.serial, "key": signed.key, "fixes": list(ids)},
    )
    # agents built before this key was pinned (or under another one) refuse every fix
    rebuild = tuple(
        AgentBuild(kind=x["kind"], path=x["path"])
        for x in artefacts.stale(ctx.services.home, signed.key)
    )
    return FixesPublished(
        serial=bundle.serial, key=signed.key, fixes=ids, key_pinned=newly_pinned, rebuild=rebuild
    )


@ROUTES.handler(FixesList, roles=ANYONE)
async def fixes_list(ctx: Context, call: FixesList) -> FixCatalogue:
    """Every published fix; with a ticket, the ones its findings suggest come first."""
    _signed, bundle = _published(ctx)
    suggested: dict[str, str] = {}
    if call.ticket is not None:
        ticket = await ctx.ticket(call.ticket)
        snapshots = [
            a for a in await ctx.store.attachments(ticket.id) if a.kind == "diagnostics" and a.ok
        ]
        if snapshots:
            for finding in evaluate(snapshots[-1].data, ctx.services.rules):
                if finding.get("fix"):
                    suggested.setdefault(str(finding["fix"]), str(finding["rule"]))
    listed = sorted(
        (fix_info(entry.fix, suggested.get(entry.fix.id)) for entry in bundle.fixes),
        key=lambda f: (f.suggested_for is None, f.id),
    )
    return FixCatalogue(serial=bundle.serial, fixes=tuple(listed))


def acting_level(role: str, level: str | None) -> str | None:
    """The support level a caller runs fixes at: admins act as the highest level."""
    return LEVELS[-1] if role == "admin" else level


@ROUTES.handler(FixRun, roles=WORKERS)
async def fix_run(ctx: Context, call: FixRun) -> FixOutcome:
    """Propose a fix to the ticket's agent, stream its output, attach the outcome, and check
    whether the finding it targets cleared."""
    ticket = await ctx.ticket(call.ticket)
    signed, bundle = _published(ctx)
    user = ctx.caller.user
    # an admin acts as a technician of the highest level; the record says so
    level = acting_level(user.role, user.level)
    acting = {"acting_as": f"technician {level}"} if user.role == "admin" else {}
    try:
        fix = bundle.find(call.fix)
    except CatalogueError as exc:
        raise ApiError(ErrorCode.NOT_FOUND, exc.reason) from None

    async def refused(details: dict[str, Any]) -> None:
        await ctx.audit(
            "fix.refused", ticket_id=ticket.id, details={**acting, "fix": fix.id, **details}
        )

    if not level_allows(level, fix):
        await refused({"code": "level", "needs": fix.min_level, "has": level})
        raise ApiError(
            ErrorCode.FORBIDDEN,
            f"{fix.id} needs a {fix.min_level} technician and you are {level}: "
            f"escalate the ticket to {fix.min_level}",
        )
    # the ticket's level counts too: an L1 ticket gets L1 fixes until it is escalated, so
    # the escalation (who, why) is on the record before a deeper change is made
    if ticket.level in LEVELS and LEVELS.index(ticket.level) < LEVELS.index(fix.min_level):
        await refused(
            {"code": "ticket_level", "needs": fix.min_level, "ticket_level": ticket.level}
        )
        raise ApiError(
            ErrorCode.FORBIDDEN,
            f"{fix.id} is an {fix.min_level} fix and T-{ticket.id} is at {ticket.level}: "
            f"escalate it first (`helpline ticket escalate T-{ticket.id} --to "
            f"{fix.min_level} --reason …`)",
        )
    try:
        validate_params(fix, call.values)
    except CatalogueError as exc:
        await refused({"code": exc.code, "reason": exc.reason})
        raise ApiError(ErrorCode.BAD_REQUEST, exc.reason) from None
    link = ctx.services.links.link_for_ticket(ticket.id)
    if link is None:
        raise ApiError(ErrorCode.NO_AGENT, f"no agent is connected to T-{ticket.id}")
    # "cleared" needs the finding to have been there: read before the fix changes anything
    before = await _present_before(ctx, ticket.id, fix.targets) if fix.targets else None
    proposal = FixProposal(
        bundle=signed.model_dump(),
        fix_id=fix.id,
        params={name: str(value) for name, value in call.values.items()},
        technician=Technician(name=user.name, role=user.role, level=level),
        ticket=TicketRef(id=f"T-{ticket.id}", title=ticket.title, customer=ticket.customer),
    )
    await ctx.store.add_request(proposal.id, link.session_id, ticket.id, "fix", user.name, utcnow())
    await ctx.audit(
        "fix.proposed",
        ticket_id=ticket.id,
        session_id=link.session_id,
        agent_id=link.agent_id,
        details={
            **acting,
            "request_id": proposal.id,
            "fix": fix.id,
            "sha256": fix.content_hash(),
            "params": proposal.params,
            "serial": bundle.serial,
        },
    )
    await ctx.progress("waiting for the customer to answer")

    async def relay(output: FixOutput) -> None:
        await ctx.progress(
            output.data[:200] if output.stream == "status" else "running",
            output.stream,
            output.data,
        )

    try:
        result = await link.request(proposal, fix.timeout + CONSENT_WAIT + 30, relay)
    except (TimeoutError, ConnectionError, ConnectionClosed):
        raise ApiError(
            ErrorCode.AGENT_OFFLINE,
            f"the agent did not finish in time; if it ran, its result will be attached to "
            f"T-{ticket.id} when the agent delivers it (request {proposal.id})",
        ) from None
    known = {"ticket": ticket.id, "request": proposal.id, "fix": fix.id}
    report = FixReport.read(result.data)
    if report is None:
        # stored on the ticket as sent; the technician learns only that it is unreadable
        return FixOutcome.model_validate(
            {
                **known,
                # it may have run: not "refused", which would say it did not
                "status": "failed",
                "error": result.error
                or "the agent's report does not read as a fix report; it is on the ticket "
                "as the agent sent it",
            }
        )
    # what the controller knows (ticket, request, fix) is never what an agent claims
    outcome = FixOutcome.model_validate(
        {**report.model_dump(), **known} | ({} if result.ok else {"error": result.error})
    )
    if fix.targets and result.ok and report.status == "succeeded":
        await ctx.progress("checking whether the finding cleared")
        check = await _verify(ctx, link, fix, before)
        outcome = outcome.model_copy(update={"verification": check})
    return outcome


async def _present_before(ctx: Context, ticket_id: int, rule_id: str) -> bool | None:
    """Whether the ticket's latest snapshot that looked at the rule's section had its
    finding; None when no snapshot on the ticket looked."""
    rules = ctx.services.rules
    section = next((r.section for r in rules.rules if r.id == rule_id), None)
    snapshots = [
        a.data
        for a in await ctx.store.attachments(ticket_id)
        if a.kind == "diagnostics" and a.ok and isinstance(a.data, dict)
    ]
    for snapshot in reversed(snapshots):
        if section is None or isinstance(snapshot.get(section), dict):
            return any(f.get("rule") == rule_id for f in evaluate(snapshot, rules))
    return None


def verdict(before: bool | None, after: bool) -> str:
    """What a fix did to the finding it targets, from its presence before and after."""
    if after:
        if before is None:
            return "present after (no earlier snapshot checked)"
        return "still there" if before else "appeared"
    if before:
        return "cleared"
    if before is False:
        return "not present before or after"
    return "not present after (no earlier snapshot checked)"


async def _verify(ctx: Context, link: AgentLink, fix: Fix, before: bool | None) -> Verification:
    """Re-run the diagnostics the fix targets; attach them; did the finding clear?"""
    assert fix.targets is not None
    request = DiagRequest(collectors=fix.collectors or None)
    await ctx.store.add_request(
        request.id, link.session_id, link.ticket_id, "diagnostics", ctx.caller.user.name, utcnow()
    )
    try:
        result = await link.request(request, 60)
    except (TimeoutError, ConnectionError):
        return Verification(
            targets=fix.targets,
            checked=False,
            note="the agent did not answer the follow-up diagnostics",
        )
    if not result.ok:
        return Verification(targets=fix.targets, checked=False, note=result.error)
    remaining = [
        f for f in evaluate(result.data, ctx.services.rules) if f.get("rule") == fix.targets
    ]
    outcome = verdict(before, bool(remaining))
    return Verification(
        targets=fix.targets,
        checked=True,
        present_before=before,
        present_after=bool(remaining),
        outcome=outcome,
        cleared=outcome == "cleared",
        remaining=tuple(str(f.get("title")) for f in remaining),
        request=request.id,
    )
