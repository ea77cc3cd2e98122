"""Webhooks: ``webhook.add``, ``webhook.list``, ``webhook.remove``, ``webhook.retry`` and the
delivery log ``webhook.log``.

A webhook's secret leaves the controller once, in the answer to ``webhook.add``; nothing
else returns it. Whole URLs are for admins and auditors (``webhook.list``); every role reads
deliveries, which name the endpoint by scheme and host only (:func:`delivery_info`).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from controller.api.registry import ADMINS, ANYONE, AUDITORS, ROUTES, ApiError, Context, utcnow
from controller.store import Delivery, Webhook
from controller.tickets import webhooks
from protocol.calls.webhooks import (
    DeliveryInfo,
    NewWebhook,
    WebhookAdd,
    WebhookInfo,
    WebhookList,
    WebhookLog,
    WebhookRemove,
    WebhookRetry,
    WebhookStatus,
)
from protocol.errors import ErrorCode

#: the most deliveries one ``webhook.log`` answer holds
LOG_LIMIT = 1000


def webhook_info(hook: Webhook) -> WebhookInfo:
    return WebhookInfo(
        id=hook.id,
        url=hook.url,
        events=hook.events or ("*",),
        created_by=hook.created_by,
        created_at=hook.created_at,
        removed_at=hook.removed_at,
        failures=hook.failures,
        next_attempt_at=hook.next_attempt_at,
        last_error=hook.last_error,
        last_success_at=hook.last_success_at,
    )


def delivery_info(item: Delivery) -> DeliveryInfo:
    # a URL's path and query often carry a secret token, and its user part a password:
    # only the scheme and host leave the controller here
    parts = urlsplit(item.url)
    return DeliveryInfo(
        webhook=item.webhook_id,
        endpoint=f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}",
        event=item.event.uid,
        type=item.event.type,
        ticket=item.event.ticket_id,
        created_at=item.created_at,
        attempts=item.attempts,
        last_attempt_at=item.last_attempt_at,
        last_status=item.last_status,
        last_error=item.last_error,
        delivered_at=item.delivered_at,
    )


@ROUTES.handler(WebhookAdd, roles=ADMINS)
async def webhook_add(ctx: Context, call: WebhookAdd) -> NewWebhook:
    """Register a webhook; the signing secret is shown in this answer only."""
    try:
        url = webhooks.check_url(call.url)
        events = webhooks.check_events(list(call.events))
    except ValueError as exc:
        raise ApiError(ErrorCode.BAD_REQUEST, str(exc)) from None
    secret = call.secret or webhooks.new_secret()
    hook = await ctx.store.add_webhook(url, secret, events, ctx.caller.user.name, utcnow())
    await _audit(ctx, "webhook.added", hook)
    return NewWebhook(**webhook_info(hook).model_dump(), secret=secret)


@ROUTES.handler(WebhookList, roles=AUDITORS)
async def webhook_list(ctx: Context, call: WebhookList) -> list[WebhookStatus]:
    """Webhooks and how delivery to each is going."""
    hooks = await ctx.store.list_webhooks(include_removed=call.all)
    pending: dict[int, int] = {}
    for item in await ctx.store.deliveries(pending=True, limit=100_000):
        pending[item.webhook_id] = pending.get(item.webhook_id, 0) + 1
    return [
        WebhookStatus(**webhook_info(hook).model_dump(), pending=pending.get(hook.id, 0))
        for hook in hooks
    ]


@ROUTES.handler(WebhookRemove, roles=ADMINS)
async def webhook_remove(ctx: Context, call: WebhookRemove) -> WebhookInfo:
    """Stop delivering to a webhook."""
    hook = await ctx.store.remove_webhook(call.id, utcnow())
    if hook is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"there is no active webhook {call.id}")
    await _audit(ctx, "webhook.removed", hook)
    return webhook_info(hook)


@ROUTES.handler(WebhookRetry, roles=ADMINS)
async def webhook_retry(ctx: Context, call: WebhookRetry) -> WebhookInfo:
    hook = await ctx.store.retry_webhook(call.id, utcnow())
    if hook is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"there is no active webhook {call.id}")
    await _audit(ctx, "webhook.retried", hook)
    ctx.services.desk.deliverer.notify()
    return webhook_info(hook)


@ROUTES.handler(WebhookLog, roles=ANYONE)
async def webhook_log(ctx: Context, call: WebhookLog) -> list[DeliveryInfo]:
    items = await ctx.store.deliveries(
        ticket_id=call.ticket, webhook_id=call.id, pending=call.pending, limit=LOG_LIMIT
    )
    return [delivery_info(item) for item in items]


async def _audit(ctx: Context, type_: str, hook: Webhook) -> None:
    # the URL is recorded whole (the audit log is for admins and auditors), never the secret
    await ctx.audit(
        type_, details={"webhook": hook.id, "url": hook.url, "events": list(hook.events)}
    )
