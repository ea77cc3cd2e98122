"""What a ticket reader sees of webhook deliveries: never the secret part of a URL."""

from __future__ import annotations

from datetime import UTC, datetime

from controller.store import Delivery, TicketEvent
from controller.tickets_api import delivery_json


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
    shown = delivery_json(delivery)
    assert shown["endpoint"] == "https://hooks.127.0.0.1.nip.test:8443"
    assert "s3cr3t" not in str(shown) and "token" not in str(shown) and "pw" not in str(shown)
