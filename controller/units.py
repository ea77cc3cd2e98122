"""How quantities read to people: sizes and durations, for findings' text and the CLI's tables."""

from __future__ import annotations

from typing import Final

#: what a missing or meaningless value reads as
MISSING: Final = "—"


def humanize_bytes(value: float | None) -> str:
    """1536 -> "1.5 KiB"; None -> a dash."""
    if value is None or value < 0:
        return MISSING
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def humanize_duration(seconds: float) -> str:
    """90061 -> "1 d 1 h"; 42.5 -> "42.5 s": the two largest units are enough to read."""
    if seconds < 60:
        return (
            f"{seconds:.1f} s" if seconds < 10 and seconds != int(seconds) else f"{seconds:.0f} s"
        )
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    units = [(days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")]
    first = next(i for i, (amount, _) in enumerate(units) if amount)
    shown = [f"{amount} {unit}" for amount, unit in units[first : first + 2] if amount]
    return " ".join(shown)
