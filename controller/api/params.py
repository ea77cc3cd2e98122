"""Hand-checked parameters and hand-built results of the calls not yet on call models.

Each function here goes away when the last call using it has a model in ``protocol/calls``
(whose field types, ``TicketId`` and ``text``, do the same checks).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from controller.api.registry import ApiError, utcnow
from controller.store import Attachment, Session
from protocol.calls.base import ID_MAX


def parse_id(value: object, name: str, prefix: str, what: str) -> int:
    """``PREFIX-<n>``, ``<n>`` or an int, as a positive id the store can hold."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ApiError("bad_request", f"{name}: not {what} id (expected {prefix}-<number>)")
    text = str(value).strip().upper().removeprefix(f"{prefix}-")
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or not 0 < int(text) <= ID_MAX:
        shown = repr(value) if len(str(value)) <= 40 else repr(str(value)[:40]) + "…"
        raise ApiError(
            "bad_request", f"{name}: not {what} id: {shown} (expected {prefix}-<number>)"
        )
    return int(text)


def parse_ticket_id(value: object, name: str = "ticket") -> int:
    return parse_id(value, name, "T", "a ticket")


def required_text(params: dict[str, Any], key: str, *, limit: int = 500) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ApiError("bad_request", f"{key} is required, as text")
    if len(value) > limit:
        raise ApiError("bad_request", f"{key} is longer than {limit} characters")
    if "\x00" in value:
        raise ApiError("bad_request", f"{key} contains a NUL character")
    return value.strip()


def optional_text(params: dict[str, Any], key: str, *, limit: int = 500) -> str | None:
    """A parameter that may be absent (or null or empty); if given, text within ``limit``."""
    if params.get(key) in (None, ""):
        return None
    return required_text(params, key, limit=limit)


def session_json(session: Session, connected: bool) -> dict[str, Any]:
    return {
        "id": session.id,
        "ticket": f"T-{session.ticket_id}",
        "agent": session.agent_id,
        "technician": session.technician,
        "scopes": list(session.scopes),
        "state": session.state,
        "connected": connected,
        "created_at": session.created_at.isoformat(),
        "expires_at": session.expires_at.isoformat(),
        "ended_at": session.ended_at.isoformat() if session.ended_at else None,
        "end_reason": session.end_reason,
    }


def attachment_json(attachment: Attachment) -> dict[str, Any]:
    return {
        "id": attachment.id,
        "kind": attachment.kind,
        "ok": attachment.ok,
        "session": attachment.session_id,
        "request": attachment.request_id,
        "created_at": attachment.created_at.isoformat(),
        "produced_at": attachment.produced_at.isoformat() if attachment.produced_at else None,
        "data": attachment.data,
    }


def parse_since(text: str, name: str = "since") -> datetime:
    """An age (``30m``, ``24h``, ``7d``, ``1d12h``: :mod:`protocol.durations`) ago, or an
    ISO-8601 time."""
    from protocol.durations import DurationError, parse_seconds

    if not text.isdigit():  # 20260401 is a basic-format ISO date, not an age in seconds
        try:
            return utcnow() - timedelta(seconds=parse_seconds(text))
        except (DurationError, OverflowError):
            pass
    try:
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise ApiError(
            "bad_request",
            f"{name}: not a time or age: {shown!r} (an ISO time, or an age: 30m, 24h, 7d, 1d12h)",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
