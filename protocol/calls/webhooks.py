"""Webhooks: ticket events handed to an existing helpdesk, and the delivery log.

No result carries a webhook's signing secret, except :class:`NewWebhook`: the answer to
``webhook.add`` is the one place it is shown. A delivery names its endpoint by scheme and
host only, since a URL's path and query often carry a token and every role reads
deliveries.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from protocol.calls.base import Call, Model, Text, TicketId, Time, WebhookId

#: the shortest signing secret a receiver may be given
SECRET_MIN = 16


def _long_enough(secret: str) -> str:
    if len(secret) < SECRET_MIN:
        raise ValueError(f"a webhook secret needs at least {SECRET_MIN} characters")
    return secret


class WebhookInfo(Model):
    id: int
    #: the whole URL, tokens and all: only admins and auditors list webhooks
    url: str
    #: event filters; ``*`` when it takes every event
    events: tuple[str, ...]
    created_by: str
    created_at: Time
    removed_at: Time | None
    #: failed attempts in a row; the next one waits longer
    failures: int
    next_attempt_at: Time | None
    last_error: str | None
    last_success_at: Time | None


class WebhookStatus(WebhookInfo):
    #: events not delivered yet
    pending: int


class NewWebhook(WebhookInfo):
    #: the signing secret, shown in this answer only
    secret: str


class DeliveryInfo(Model):
    """One event owed to one webhook, and how its delivery went."""

    webhook: int
    #: scheme and host of the webhook's URL, nothing more
    endpoint: str
    #: the event's id, which receivers de-duplicate on
    event: str
    type: str
    ticket: TicketId
    created_at: Time
    attempts: int
    last_attempt_at: Time | None
    last_status: int | None
    last_error: str | None
    delivered_at: Time | None


class WebhookAdd(Call[NewWebhook]):
    method = "webhook.add"
    #: where to POST events: http(s)://HOST/…, no credentials
    url: Annotated[str, Text(2000)]
    #: only these events (``ticket.resolved``, ``ticket.*``); none means every event
    events: Annotated[tuple[Annotated[str, Text(48)], ...], Field(max_length=100)] = ()
    #: the signing secret; a new random one unless given
    secret: Annotated[str, Text(128), AfterValidator(_long_enough)] | None = None


class WebhookList(Call[list[WebhookStatus]]):
    method = "webhook.list"
    #: removed webhooks too
    all: bool = False


class WebhookRemove(Call[WebhookInfo]):
    method = "webhook.remove"
    id: WebhookId


class WebhookRetry(Call[WebhookInfo]):
    """Retry a webhook's pending events now instead of at the end of its backoff."""

    method = "webhook.retry"
    id: WebhookId


class WebhookLog(Call[list[DeliveryInfo]]):
    """The delivery log, oldest first: one ticket's events, or one webhook's, or all."""

    method = "webhook.log"
    ticket: TicketId | None = None
    id: WebhookId | None = None
    #: only the undelivered
    pending: bool = False
