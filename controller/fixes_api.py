"""The fix API methods: publish a signed catalogue, list fixes, propose one to an agent.

``METHODS`` is merged into :data:`controller.api.METHODS`. The controller checks what it
can (the catalogue verifies, the fix exists, the technician's level is enough, the
parameters fit the schema) and refuses early with a clear message; the agent checks all of
it again, because a controller could be compromised.

Running fixes is a technician's job: admins enrol and audit, technicians change customer
machines, and the level of the technician decides which fixes they may propose.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from controller import artefacts

if TYPE_CHECKING:
    from controller.api import Api, Caller, Handler
    from protocol.catalogue import Bundle, Fix, SignedBundle

Progress = Callable[..., Awaitable[None]]
#: how long the customer has to answer a proposal (the agent's own default)
CONSENT_WAIT = 120.0


def _error(code: str, message: str) -> Exception:
    from controller.api import ApiError

    return ApiError(code, message)


def _published(api: Api) -> tuple[SignedBundle, Bundle]:
    from controller.catalogue import PublishedCatalogue
    from protocol.catalogue import CatalogueError

    try:
        found = PublishedCatalogue(api.controller.home.path).load()
    except CatalogueError as exc:
        raise _error("conflict", f"the published catalogue does not verify: {exc.reason}") from None
    if found is None:
        raise _error(
            "not_found",
            "no fix catalogue is published: `helpline fixes sign DIR --key KEY --out B` "
            "and `helpline fixes publish B`",
        )
    return found


def fix_json(fix: Fix) -> dict[str, Any]:
    return {
        "id": fix.id,
        "title": fix.title,
        "description": fix.description,
        "min_level": fix.min_level,
        "needs_root": fix.needs_root,
        "reversible": fix.reversible or fix.undo is not None,
        "targets": fix.targets,
        "platforms": list(fix.platforms),
        "timeout": fix.timeout,
        "params": {name: spec.model_dump(exclude_none=True) for name, spec in fix.params.items()},
        "sha256": fix.content_hash(),
    }


async def fixes_publish(api: Api, caller: Caller, params: dict[str, Any], _p: Progress) -> Any:
    """Verify and publish a signed bundle; the first one pins the catalogue key."""
    from pydantic import ValidationError

    from controller.catalogue import PublishedCatalogue
    from protocol.catalogue import CatalogueError, SignedBundle

    who = {"actor": caller.user.name, "role": caller.user.role, "source": caller.source}
    try:
        signed = SignedBundle.model_validate(params.get("bundle"))
        bundle, newly_pinned = PublishedCatalogue(api.controller.home.path).publish(
            signed, replace_key=bool(params.get("replace_key"))
        )
    except (ValidationError, CatalogueError) as exc:
        reason = exc.reason if isinstance(exc, CatalogueError) else "not a signed bundle"
        await api.controller.audit("catalogue.publish_refused", **who, details={"reason": reason})
        raise _error("bad_request", f"catalogue refused: {reason}") from None
    if newly_pinned:
        await api.controller.audit("catalogue.key_pinned", **who, details={"key": signed.key})
    ids = [entry.fix.id for entry in bundle.fixes]
    await api.controller.audit(
        "catalogue.published",
        **who,
        details={"serial": bundle.serial, "key": signed.key, "fixes": ids},
    )
    # agents built before this key was pinned (or under another one) refuse every fix
    rebuild = [
        {"kind": x["kind"], "path": x["path"]}
        for x in artefacts.stale(api.controller.home.path, signed.key)
    ]
    return {
        "serial": bundle.serial,
        "key": signed.key,
        "fixes": ids,
        "key_pinned": newly_pinned,
        "rebuild": rebuild,
    }


async def fixes_list(api: Api, caller: Caller, params: dict[str, Any], _p: Progress) -> Any:
    """Every published fix; with a ticket, the ones its findings suggest come first."""
    from controller.findings import evaluate

    _signed, bundle = _published(api)
    suggested: dict[str, str] = {}
    if params.get("ticket"):
        ticket = await api._ticket(params)
        snapshots = [
            a for a in await api.store.attachments(ticket.id) if a.kind == "diagnostics" and a.ok
        ]
        if snapshots:
            for finding in evaluate(snapshots[-1].data):
                if finding.get("fix"):
                    suggested.setdefault(str(finding["fix"]), str(finding["rule"]))
    listed = []
    for entry in bundle.fixes:
        data = fix_json(entry.fix)
        data["suggested_for"] = suggested.get(entry.fix.id)
        listed.append(data)
    listed.sort(key=lambda f: (f["suggested_for"] is None, f["id"]))
    return {"serial": bundle.serial, "fixes": listed}


def acting_level(role: str, level: str | None) -> str | None:
    """The support level a caller runs fixes at: admins act as the highest level."""
    from protocol.catalogue import LEVELS

    return LEVELS[-1] if role == "admin" else level


async def fix_run(api: Api, caller: Caller, params: dict[str, Any], progress: Progress) -> Any:
    """Propose a fix to the ticket's agent, stream its output, attach the outcome, and check
    whether the finding it targets cleared."""
    from websockets.exceptions import ConnectionClosed

    from controller.api import utcnow
    from protocol.catalogue import LEVELS, CatalogueError, level_allows, validate_params
    from protocol.messages import FixOutput, FixProposal, Technician, TicketRef

    ticket = await api._ticket(params)
    signed, bundle = _published(api)
    fix_id = str(params.get("fix", ""))
    who = {
        "actor": caller.user.name,
        "role": caller.user.role,
        "source": caller.source,
        "ticket_id": ticket.id,
    }
    # an admin acts as a technician of the highest level; the record says so
    level = acting_level(caller.user.role, caller.user.level)
    acting = {"acting_as": f"technician {level}"} if caller.user.role == "admin" else {}
    try:
        fix = bundle.find(fix_id)
    except CatalogueError as exc:
        raise _error("not_found", exc.reason) from None
    if not level_allows(level, fix):
        await api.controller.audit(
            "fix.refused",
            **who,
            details={
                **acting,
                "fix": fix.id,
                "code": "level",
                "needs": fix.min_level,
                "has": level,
            },
        )
        raise _error(
            "forbidden",
            f"{fix.id} needs a {fix.min_level} technician and you are {level}: "
            f"escalate the ticket to {fix.min_level}",
        )
    # the ticket's level counts too: an L1 ticket gets L1 fixes until it is escalated, so
    # the escalation (who, why) is on the record before a deeper change is made
    if ticket.level in LEVELS and LEVELS.index(ticket.level) < LEVELS.index(fix.min_level):
        await api.controller.audit(
            "fix.refused",
            **who,
            details={
                **acting,
                "fix": fix.id,
                "code": "ticket_level",
                "needs": fix.min_level,
                "ticket_level": ticket.level,
            },
        )
        raise _error(
            "forbidden",
            f"{fix.id} is an {fix.min_level} fix and T-{ticket.id} is at {ticket.level}: "
            f"escalate it first (`helpline ticket escalate T-{ticket.id} --to "
            f"{fix.min_level} --reason …`)",
        )
    raw = params.get("params") or {}
    if not isinstance(raw, dict):
        raise _error("bad_request", "params must be a mapping of names to values")
    try:
        validate_params(fix, raw)
    except CatalogueError as exc:
        await api.controller.audit(
            "fix.refused",
            **who,
            details={**acting, "fix": fix.id, "code": exc.code, "reason": exc.reason},
        )
        raise _error("bad_request", exc.reason) from None
    link = api.controller.link_for_ticket(ticket.id)
    if link is None:
        raise _error("no_agent", f"no agent is connected to T-{ticket.id}")
    # "cleared" needs the finding to have been there: read before the fix changes anything
    before = await _present_before(api, ticket.id, fix.targets) if fix.targets else None
    proposal = FixProposal(
        bundle=signed.model_dump(),
        fix_id=fix.id,
        params={str(k): str(v) for k, v in raw.items()},
        technician=Technician(name=caller.user.name, role=caller.user.role, level=level),
        ticket=TicketRef(id=f"T-{ticket.id}", title=ticket.title, customer=ticket.customer),
    )
    await api.store.add_request(
        proposal.id, link.session_id, ticket.id, "fix", caller.user.name, utcnow()
    )
    await api.controller.audit(
        "fix.proposed",
        **who,
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
    await progress("waiting for the customer to answer")

    async def relay(output: FixOutput) -> None:
        await progress(
            output.data[:200] if output.stream == "status" else "running",
            output.stream,
            output.data,
        )

    try:
        result = await link.request(proposal, fix.timeout + CONSENT_WAIT + 30, relay)
    except (TimeoutError, ConnectionError, ConnectionClosed):
        raise _error(
            "agent_offline",
            f"the agent did not finish in time; if it ran, its result will be attached to "
            f"T-{ticket.id} when the agent delivers it (request {proposal.id})",
        ) from None
    # the agent's data first: what the controller knows (ticket, request, fix) is never
    # overwritten by what an agent claims
    outcome: dict[str, Any] = {
        **result.data,
        "ticket": f"T-{ticket.id}",
        "request": proposal.id,
        "fix": fix.id,
    }
    if not result.ok:
        outcome["error"] = result.error
        return outcome
    if fix.targets and result.data.get("status") == "succeeded":
        await progress("checking whether the finding cleared")
        outcome["verification"] = await _verify(api, caller, link, fix, before)
    return outcome


async def _present_before(api: Api, ticket_id: int, rule_id: str) -> bool | None:
    """Whether the ticket's latest snapshot that looked at the rule's section had its
    finding; None when no snapshot on the ticket looked."""
    from controller.findings import default_catalogue, evaluate

    section = next((r.section for r in default_catalogue().rules if r.id == rule_id), None)
    snapshots = [
        a.data
        for a in await api.store.attachments(ticket_id)
        if a.kind == "diagnostics" and a.ok and isinstance(a.data, dict)
    ]
    for snapshot in reversed(snapshots):
        if section is None or isinstance(snapshot.get(section), dict):
            return any(f.get("rule") == rule_id for f in evaluate(snapshot))
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


async def _verify(
    api: Api, caller: Caller, link: Any, fix: Fix, before: bool | None
) -> dict[str, Any]:
    """Re-run the diagnostics the fix targets; attach them; did the finding clear?"""
    from controller.api import utcnow
    from controller.findings import evaluate
    from protocol.messages import DiagRequest

    request = DiagRequest(collectors=fix.collectors or None)
    await api.store.add_request(
        request.id, link.session_id, link.ticket_id, "diagnostics", caller.user.name, utcnow()
    )
    try:
        result = await link.request(request, 60)
    except (TimeoutError, ConnectionError):
        return {
            "targets": fix.targets,
            "checked": False,
            "note": "the agent did not answer the follow-up diagnostics",
        }
    if not result.ok:
        return {"targets": fix.targets, "checked": False, "note": result.error}
    remaining = [f for f in evaluate(result.data) if f.get("rule") == fix.targets]
    outcome = verdict(before, bool(remaining))
    return {
        "targets": fix.targets,
        "checked": True,
        "present_before": before,
        "present_after": bool(remaining),
        "outcome": outcome,
        "cleared": outcome == "cleared",
        "remaining": [f.get("title") for f in remaining],
        "request": request.id,
    }


METHODS: dict[str, tuple[Handler, tuple[str, ...]]] = {
    "fixes.publish": (fixes_publish, ("admin",)),
    "fixes.list": (fixes_list, ("admin", "technician", "auditor")),
    "fix.run": (fix_run, ("admin", "technician")),
}
