"""What a ticket reader sees of webhook deliveries: never the secret part of a URL; and
no result but ``webhook.add``'s carries a webhook's signing secret."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import get_args

from pydantic import BaseModel

from controller.api.webhooks import delivery_info
from controller.store import Delivery, TicketEvent
from protocol.calls import CALLS
from protocol.calls.webhooks import WebhookLog


def test_delivery_view_shows_only_scheme_and_host() -> None:
    now = datetime.now(UTC)
    event = TicketEvent(1, "ev-1", 1, now, "ticket.opened", "alice", {})
    delivery = Delivery(
        1,
        1,
        "https://user:pw@hooks.127.0.0.1.nip.test:8443/services/T0/B0/s3cr3t?token=abc",
        event,
        now,
        1,
        now,
        200,
        None,
        now,
    )
    shown = delivery_info(delivery).model_dump(mode="json")
    assert shown["endpoint"] == "https://hooks.127.0.0.1.nip.test:8443"
    assert "s3cr3t" not in str(shown) and "token" not in str(shown) and "pw" not in str(shown)


def test_webhook_log_shows_only_scheme_and_host_too() -> None:
    now = datetime.now(UTC)
    event = TicketEvent(1, "ev-1", 7, now, "ticket.opened", "alice", {})
    url = "https://user:pw@hooks.127.0.0.1.nip.test:8443/services/T0/B0/s3cr3t?token=abc"
    delivery = Delivery(1, 1, url, event, now, 0, None, None, None, None)
    [shown] = WebhookLog.dump_result([delivery_info(delivery)])
    assert shown["endpoint"] == "https://hooks.127.0.0.1.nip.test:8443"
    assert shown["ticket"] == "T-7" and shown["delivered_at"] is None
    assert "s3cr3t" not in str(shown) and "token" not in str(shown) and "pw" not in str(shown)


def test_no_result_but_a_new_webhook_carries_a_secret() -> None:
    """The signing secret is shown once, in ``webhook.add``'s answer; no other call's
    result has a field that could carry it."""

    def models(kind: object) -> Iterator[type[BaseModel]]:
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            yield kind
            for field in kind.model_fields.values():
                yield from models(field.annotation)
        for arg in get_args(kind):
            yield from models(arg)

    carrying = {
        (method, model.__name__)
        for method, call in CALLS.items()
        for model in models(call.result_type)
        if any("secret" in name for name in model.model_fields)
    }
    assert carrying == {("webhook.add", "NewWebhook")}
