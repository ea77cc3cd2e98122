"""The knowledge-base and webhook API methods (``ticket.*``, ``sla.policy`` and
``report.kpi`` are in ``controller/api/tickets.py`` and ``controller/api/reports.py``).

``TICKET_METHODS`` here is merged into :data:`controller.api.METHODS` (same shape: the
handler and the roles allowed to call it); the auditor role reads and changes nothing.
The work is done by the controller's :class:`~controller.tickets.desk.TicketDesk`; this
module checks parameters, maps the desk's refusals to API errors and shapes the JSON.

This module imports :mod:`controller.api` only inside its functions: ``api`` imports this
module at its end, and either may be imported first.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from controller.store import Article, Delivery, Webhook
from controller.tickets import webhooks
from controller.tickets.desk import DeskError, TicketDesk, Who

if TYPE_CHECKING:
    from controller.api import Api, Caller, Handler

Progress = Callable[[str], Awaitable[None]]
Method = Callable[["Api", "Caller", dict[str, Any], Progress], Awaitable[Any]]


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


def webhook_json(hook: Webhook) -> dict[str, Any]:
    return {
        "id": hook.id,
        "url": hook.url,
        "events": list(hook.events) or ["*"],
        "created_by": hook.created_by,
        "created_at": hook.created_at.isoformat(),
        "removed_at": _iso(hook.removed_at),
        "failures": hook.failures,
        "next_attempt_at": _iso(hook.next_attempt_at),
        "last_error": hook.last_error,
        "last_success_at": _iso(hook.last_success_at),
    }


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


# -- knowledge base --------------------------------------------------------------------------


def _article_id(value: Any) -> int:
    from controller.api import parse_id

    return parse_id(value, "article", "KB", "an article")


async def kb_search(api: Api, caller: Caller, params: dict[str, Any], _p: Progress) -> Any:
    """Full-text search of the knowledge base."""
    words = _text(params, "words", limit=500)
    limit = params.get("limit", 10)
    if not isinstance(limit, int) or not 1 <= limit <= 100:
        raise _error("bad_request", "limit must be 1 to 100")
    hits = await api.store.search_articles(words, limit)
    return [
        {**article_json(h.article, body=False), "rank": round(h.rank, 4), "snippet": h.snippet}
        for h in hits
    ]


async def kb_show(api: Api, caller: Caller, params: dict[str, Any], _p: Progress) -> Any:
    """One article, whole."""
    number = _article_id(params.get("article"))
    article = await api.store.get_article(number)
    if article is None:
        raise _error("not_found", f"there is no article KB-{number}")
    return article_json(article)


async def kb_list(api: Api, caller: Caller, params: dict[str, Any], _p: Progress) -> Any:
    """The newest articles."""
    limit = params.get("limit", 50)
    if not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise _error("bad_request", "limit must be 1 to 1000")
    return [article_json(a, body=False) for a in await api.store.list_articles(limit)]


@_refusals
async def kb_add(api: Api, caller: Caller, params: dict[str, Any], _p: Progress) -> Any:
    """Write an article; from a ticket, it is linked to the ticket's findings and fixes."""
    title, body = _text(params, "title", limit=300), _text(params, "body", limit=50_000)
    desk = _desk(api)
    if params.get("ticket"):
        ticket = await desk.get(_ticket_id(params))
        return article_json(await desk.write_article(_who(caller), ticket, title, body))
    article = await api.store.add_article(title, body, caller.user.name, utcnow())
    return article_json(article)


async def kb_suggest(api: Api, caller: Caller, params: dict[str, Any], _p: Progress) -> Any:
    """Articles for findings (rule ids) and fixes, e.g. beside a diagnostics result."""
    findings, fixes = params.get("findings") or [], params.get("fixes") or []
    for value in (findings, fixes):
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise _error("bad_request", "findings and fixes are lists of ids")
    articles = await api.store.articles_for(findings=findings[:50], fixes=fixes[:50])
    return [article_json(a, body=False) for a in articles]


# -- webhooks --------------------------------------------------------------------------------


async def webhook_add(api: Api, caller: Caller, params: dict[str, Any], _p: Progress) -> Any:
    """Register a webhook; the signing secret is shown in this answer only."""
    try:
        url = webhooks.check_url(_text(params, "url", limit=2000))
        events = params.get("events") or []
        if (
            not isinstance(events, list)
            or len(events) > 100
            or not all(isinstance(e, str) for e in events)
        ):
            raise ValueError("events is a list of up to 100 filters (ticket.resolved, ticket.*)")
        events = webhooks.check_events(events)
    except ValueError as exc:
        raise _error("bad_request", str(exc)) from None
    secret = _optional(params, "secret", limit=128) or webhooks.new_secret()
    if len(secret) < 16:
        raise _error("bad_request", "a webhook secret needs at least 16 characters")
    hook = await api.store.add_webhook(url, secret, events, caller.user.name, utcnow())
    await _audit_webhook(api, caller, "webhook.added", hook)
    return {**webhook_json(hook), "secret": secret}


async def webhook_list(api: Api, caller: Caller, params: dict[str, Any], _p: Progress) -> Any:
    """Webhooks and how delivery to each is going (no secrets)."""
    hooks = await api.store.list_webhooks(include_removed=bool(params.get("all")))
    pending = await api.store.deliveries(pending=True, limit=100_000)
    out = []
    for hook in hooks:
        data = webhook_json(hook)
        data["pending"] = sum(1 for d in pending if d.webhook_id == hook.id)
        out.append(data)
    return out


async def webhook_remove(api: Api, caller: Caller, params: dict[str, Any], _p: Progress) -> Any:
    """Stop delivering to a webhook."""
    hook = await api.store.remove_webhook(_webhook_id(params), utcnow())
    if hook is None:
        raise _error("not_found", f"there is no active webhook {params.get('id')!r}")
    await _audit_webhook(api, caller, "webhook.removed", hook)
    return webhook_json(hook)


async def webhook_retry(api: Api, caller: Caller, params: dict[str, Any], _p: Progress) -> Any:
    """Retry a webhook's pending events now instead of at the end of its backoff."""
    hook = await api.store.retry_webhook(_webhook_id(params), utcnow())
    if hook is None:
        raise _error("not_found", f"there is no active webhook {params.get('id')!r}")
    await _audit_webhook(api, caller, "webhook.retried", hook)
    _desk(api).deliverer.notify()
    return webhook_json(hook)


async def webhook_log(api: Api, caller: Caller, params: dict[str, Any], _p: Progress) -> Any:
    """The delivery log: one ticket's events, or one webhook's, oldest first."""
    ticket = _ticket_id(params) if params.get("ticket") else None
    hook = _webhook_id(params) if params.get("id") is not None else None
    items = await api.store.deliveries(
        ticket_id=ticket, webhook_id=hook, pending=bool(params.get("pending")), limit=1000
    )
    return [delivery_json(d) for d in items]


def _webhook_id(params: dict[str, Any]) -> int:
    from controller.api import parse_id

    return parse_id(params.get("id"), "id", "W", "a webhook")


async def _audit_webhook(api: Api, caller: Caller, type_: str, hook: Webhook) -> None:
    await api.controller.audit(
        type_,
        actor=caller.user.name,
        role=caller.user.role,
        source=caller.source,
        details={"webhook": hook.id, "url": hook.url, "events": list(hook.events)},
    )


_ALL = ("admin", "technician", "auditor")
_WORK = ("admin", "technician")
_ADMIN = ("admin",)
_AUDIT = ("admin", "auditor")

TICKET_METHODS: dict[str, tuple[Handler, tuple[str, ...]]] = {
    "kb.search": (kb_search, _ALL),
    "kb.show": (kb_show, _ALL),
    "kb.list": (kb_list, _ALL),
    "kb.suggest": (kb_suggest, _ALL),
    "kb.add": (kb_add, _WORK),
    "webhook.add": (webhook_add, _ADMIN),
    "webhook.list": (webhook_list, _AUDIT),
    "webhook.remove": (webhook_remove, _ADMIN),
    "webhook.retry": (webhook_retry, _ADMIN),
    "webhook.log": (webhook_log, _ALL),
}
