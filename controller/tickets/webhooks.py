"""Hand-off to an existing helpdesk: ticket events POSTed to webhooks, signed, at least once.

The store writes each event and one outbox row per interested webhook in the transaction
that changed the ticket (:mod:`controller.store.events`). The :class:`Deliverer`
runs in the controller process: it leases a webhook that has events due (so one worker
of several replicas drains an endpoint at a time), POSTs its events oldest first, marks
each delivered on a 2xx answer, and on anything else stops, counts the failure and backs
off (tenacity's ``wait_random_exponential``: random between ``base`` and ``base·2ⁿ``,
capped). Nothing is dropped: an endpoint that is down for an hour gets everything, in
order, once it is back. A receiver may see an event twice (an answer lost after it
stored the event); ``X-Helpline-Delivery`` (the event id, also ``id`` in the body) is how
it recognises the repeat.

Each request carries::

    Content-Type: application/json
    X-Helpline-Event: ticket.resolved
    X-Helpline-Delivery: <event id, 32 hex>
    X-Helpline-Timestamp: <unix seconds>
    X-Helpline-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>

Requests go out with the standard library (``urllib`` in a worker thread): one request
at a time per endpoint needs no HTTP client dependency. Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, cast
from urllib.parse import urlsplit

import orjson
from tenacity import BaseRetrying, RetryCallState, wait_random_exponential

from controller.store import Delivery, Store, TicketEvent, Webhook

log = logging.getLogger("helpline.webhooks")

SIGNATURE: Final = "X-Helpline-Signature"
TIMESTAMP: Final = "X-Helpline-Timestamp"
DELIVERY: Final = "X-Helpline-Delivery"
EVENT: Final = "X-Helpline-Event"
USER_AGENT: Final = "helpline-webhooks/1"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_secret() -> str:
    """A fresh signing secret (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


def check_url(url: str) -> str:
    """An endpoint URL as accepted: http(s), a host, no credentials; ValueError otherwise."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"a webhook URL is http(s)://HOST/…, not {url!r}")
    if parts.username or parts.password:
        raise ValueError("put no credentials in the URL: receivers check the signature instead")
    if len(url) > 2000:
        raise ValueError("the webhook URL is longer than 2000 characters")
    return url.strip()


def check_events(patterns: list[str]) -> list[str]:
    """Event filters: ``ticket.resolved`` or ``ticket.*``; ValueError for anything else."""
    for pattern in patterns:
        if not pattern.startswith("ticket.") or len(pattern) > 48:
            raise ValueError(
                f"event filters look like ticket.resolved or ticket.*, not {pattern!r}"
            )
    return patterns


def body(event: TicketEvent) -> bytes:
    """The JSON a receiver gets for an event (sorted keys, UTF-8)."""
    data = dict(event.data)
    ticket = data.pop("ticket", None)
    return orjson.dumps(
        {
            "id": event.uid,
            "type": event.type,
            "at": event.at.isoformat(),
            "actor": event.actor,
            "ticket": ticket,
            "data": data,
        },
        option=orjson.OPT_SORT_KEYS,
    )


def signature(secret: str, timestamp: int, payload: bytes) -> str:
    """The signature header value for a payload sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + payload, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, payload: bytes, header: str) -> bool:
    """What a receiver does: recompute the signature and compare in constant time."""
    if not timestamp.isdigit():
        return False
    return hmac.compare_digest(signature(secret, int(timestamp), payload), header)


def headers(event: TicketEvent, secret: str, payload: bytes, now: float) -> dict[str, str]:
    stamp = int(now)
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT: event.type,
        DELIVERY: event.uid,
        TIMESTAMP: str(stamp),
        SIGNATURE: signature(secret, stamp, payload),
    }


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx is an answer like any other non-2xx: a failed delivery


_OPENER: Final = urllib.request.build_opener(_NoRedirect())


def post(url: str, payload: bytes, head: dict[str, str], timeout: float) -> int:
    """POST and return the status; OSError (refused, timeout…) when there is no answer."""
    check_url(url)  # http or https only, however the row got into the database
    request = urllib.request.Request(url, data=payload, headers=head, method="POST")  # noqa: S310
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(65536)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status: int | None
    error: str | None


Post = Callable[[str, bytes, dict[str, str], float], int]


class Deliverer:
    """The delivery worker of one controller process."""

    def __init__(
        self,
        store: Store,
        *,
        timeout: float | None = None,
        base: float | None = None,
        cap: float | None = None,
        poll: float | None = None,
        lease: timedelta = timedelta(seconds=60),
        clock: Callable[[], datetime] = utcnow,
        sender: Post = post,
    ) -> None:
        env = os.environ.get
        self.store = store
        self.timeout = timeout or float(env("HELPLINE_WEBHOOK_TIMEOUT", "10"))
        base = base or float(env("HELPLINE_WEBHOOK_BACKOFF_BASE", "1"))
        cap = cap or float(env("HELPLINE_WEBHOOK_BACKOFF_MAX", "300"))
        self.poll = poll or float(env("HELPLINE_WEBHOOK_POLL", "1"))
        self.lease = lease
        self.clock = clock
        self.sender = sender
        self.owner = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"
        self._wait = wait_random_exponential(multiplier=base, min=base, max=cap)
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """New events were written here: look now rather than at the next poll."""
        self._wake.set()

    def backoff(self, failures: int) -> timedelta:
        """How long to leave an endpoint alone after ``failures`` failures in a row."""
        state = RetryCallState(cast(BaseRetrying, None), None, (), {})
        state.attempt_number = max(1, failures)
        return timedelta(seconds=self._wait(state))

    async def run(self) -> None:
        """Deliver until cancelled; wakes on :meth:`notify`, on a due retry, or every poll."""
        while True:
            self._wake.clear()
            try:
                await self.drain()
                pause = await self._pause()
            except Exception:  # a database hiccup must not end deliveries for good
                log.exception("webhook delivery pass failed")
                pause = self.poll
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)

    async def _pause(self) -> float:
        due = await self.store.next_webhook_due()
        if due is None:
            return self.poll
        return min(self.poll, max(0.01, (due - self.clock()).total_seconds()))

    async def drain(self) -> int:
        """One pass over every webhook with events due; returns how many were delivered."""
        delivered = 0
        for hook in await self.store.claim_webhooks(self.owner, self.clock(), self.lease):
            try:
                delivered += await self._drain(hook)
            finally:
                await self.store.release_webhook(hook.id, self.owner)
        return delivered

    async def _drain(self, hook: Webhook) -> int:
        delivered = 0
        while True:
            batch = await self.store.pending_deliveries(hook.id)
            if not batch:
                return delivered
            for item in batch:
                outcome = await self.send(hook, item)
                now = self.clock()
                retry = None if outcome.ok else now + self.backoff(hook.failures + 1)
                await self.store.record_delivery(
                    item.id,
                    hook.id,
                    self.owner,
                    now,
                    ok=outcome.ok,
                    status=outcome.status,
                    error=outcome.error,
                    next_attempt_at=retry,
                    lease=self.lease,
                )
                if not outcome.ok:
                    log.info("webhook %s: %s; retry at %s", hook.url, outcome.error, retry)
                    return delivered
                delivered += 1

    async def send(self, hook: Webhook, item: Delivery) -> Outcome:
        """One POST of one event; never raises for what the network or receiver does."""
        payload = body(item.event)
        head = headers(item.event, hook.secret, payload, time.time())
        call: Awaitable[int] = asyncio.to_thread(self.sender, hook.url, payload, head, self.timeout)
        try:
            status = await call
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            return Outcome(False, None, f"{type(exc).__name__}: {reason}"[:500])
        if 200 <= status < 300:
            return Outcome(True, status, None)
        return Outcome(False, status, f"HTTP {status}")
