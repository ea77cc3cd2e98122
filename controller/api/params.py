"""A time or age as ``report.kpi`` takes it (its window reads ``since`` and ``until``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controller.api.registry import ApiError, utcnow


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
