"""The diagnostics API methods: take a snapshot, compare two, and findings on tickets.

``METHODS`` here is merged into :data:`controller.api.METHODS` (same shape: handler and
the roles allowed to call it). Findings are computed from the stored snapshot whenever a
result is shown (``diag.run``, ``diag.diff``, ``ticket.show``), never stored, so an
improved rule catalogue applies to every snapshot already on a ticket.

This module imports :mod:`controller.api` only inside its functions: ``api`` imports this
module at its end, and either may be imported first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from controller.findings import compare, count_by_severity, evaluate

if TYPE_CHECKING:
    from controller.api import Api, Caller, Handler
    from controller.store import Attachment

Progress = Callable[[str], Awaitable[None]]


def _error(code: str, message: str) -> Exception:
    from controller.api import ApiError

    return ApiError(code, message)


def _collectors(value: Any) -> tuple[str, ...] | None:
    """The requested collectors (names or aliases) as canonical names; None means all."""
    from protocol.collectors import canonical

    if value is None or value == []:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _error("bad_request", "collectors must be a list of names")
    try:
        return canonical(value)
    except ValueError as exc:
        raise _error("bad_request", str(exc)) from None


def with_findings(data: Any, ok: bool) -> dict[str, Any]:
    """Findings and their counts for a snapshot (none for a failed result)."""
    findings = evaluate(data) if ok else []
    return {"findings": findings, "summary": count_by_severity(findings)}


async def diag_run(api: Api, caller: Caller, params: dict[str, Any], progress: Progress) -> Any:
    """Take a snapshot on the ticket's agent; the result is attached to the ticket."""
    from websockets.exceptions import ConnectionClosed

    from controller.api import utcnow
    from protocol.messages import DiagRequest

    ticket = await api._ticket(params)
    collectors = _collectors(params.get("collectors"))
    timeout = params.get("timeout", 60)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 1 <= timeout <= 600:
        raise _error("bad_request", "timeout must be 1 to 600 seconds")
    link = api.controller.link_for_ticket(ticket.id)
    if link is None:
        raise _error(
            "no_agent",
            f"no agent is connected to T-{ticket.id}: issue a code with "
            f"`helpline code T-{ticket.id}` and have the customer join",
        )
    request = DiagRequest(collectors=collectors)
    await api.store.add_request(
        request.id, link.session_id, ticket.id, "diagnostics", caller.user.name, utcnow()
    )
    await api.controller.audit(
        "diag.requested",
        actor=caller.user.name,
        role=caller.user.role,
        source=caller.source,
        ticket_id=ticket.id,
        session_id=link.session_id,
        agent_id=link.agent_id,
        details={"request_id": request.id, "collectors": list(collectors or ["all"])},
    )
    what = ", ".join(collectors) if collectors else "all collectors"
    await progress(f"collecting diagnostics on the customer's machine ({what})")
    try:
        result = await link.request(request, timeout)
    except (TimeoutError, ConnectionError, ConnectionClosed):
        raise _error(
            "agent_offline",
            f"the agent did not answer in time; request {request.id} stays open and its "
            f"result will be attached to T-{ticket.id} when the agent delivers it",
        ) from None
    await progress("evaluating findings")
    found = with_findings(result.data, result.ok)
    return {
        "ticket": f"T-{ticket.id}",
        "request": request.id,
        "ok": result.ok,
        "error": result.error,
        "data": result.data,
        **found,
        "articles": await _articles(api, found["findings"]),
    }


async def _articles(api: Api, findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Knowledge-base articles written for these findings (or their suggested fixes)."""
    from controller.api.kb import article_summary

    rules = sorted({str(f["rule"]) for f in findings})
    fixes = sorted({str(f["fix"]) for f in findings if f.get("fix")})
    if not rules:
        return []
    articles = await api.store.articles_for(findings=rules[:50], fixes=fixes[:50])
    return [article_summary(a).model_dump(mode="json") for a in articles]


async def diag_diff(api: Api, caller: Caller, params: dict[str, Any], _p: Progress) -> Any:
    """Compare two diagnostics snapshots of a ticket: by default the last two."""
    ticket = await api._ticket(params)
    snapshots = [
        a for a in await api.store.attachments(ticket.id) if a.kind == "diagnostics" and a.ok
    ]
    by_id = {a.id: a for a in snapshots}
    chosen: list[Attachment] = []
    for key in ("from", "to"):
        wanted = params.get(key)
        if wanted is None:
            continue
        if isinstance(wanted, bool) or not isinstance(wanted, int) or wanted not in by_id:
            raise _error(
                "not_found",
                f"T-{ticket.id} has no diagnostics snapshot #{wanted}; it has "
                f"{', '.join(f'#{a.id}' for a in snapshots) or 'none'}",
            )
        chosen.append(by_id[wanted])
    if len(chosen) == 1:
        raise _error("bad_request", "give both --from and --to, or neither")
    if not chosen:
        if len(snapshots) < 2:
            raise _error(
                "not_found",
                f"T-{ticket.id} has {len(snapshots)} diagnostics snapshot(s); a comparison "
                f"needs two: take another with `helpline diag T-{ticket.id}` after the fix",
            )
        chosen = snapshots[-2:]
    before, after = chosen
    return {
        "ticket": f"T-{ticket.id}",
        "before": _described(before),
        "after": _described(after),
        **compare(before.data, after.data),
    }


def _described(attachment: Attachment) -> dict[str, Any]:
    taken = attachment.data.get("taken_at")
    return {
        "attachment": attachment.id,
        "request": attachment.request_id,
        "taken_at": taken if isinstance(taken, str) else attachment.created_at.isoformat(),
        "collectors": attachment.data.get("collectors"),
    }


async def diag_collectors(api: Api, caller: Caller, params: dict[str, Any], _p: Progress) -> Any:
    """The collectors an agent of this version has, with aliases and time limits."""
    return collector_list()


def collector_list() -> list[dict[str, Any]]:
    from protocol.collectors import CATALOGUE

    return [
        {
            "name": spec.name,
            "aliases": list(spec.aliases),
            "summary": spec.summary,
            "timeout_s": spec.timeout,
        }
        for spec in CATALOGUE.values()
    ]


_ALL = ("admin", "technician", "auditor")
_WORK = ("admin", "technician")

METHODS: dict[str, tuple[Handler, tuple[str, ...]]] = {
    "diag.run": (diag_run, _WORK),
    "diag.diff": (diag_diff, _ALL),
    "diag.collectors": (diag_collectors, _ALL),
}
