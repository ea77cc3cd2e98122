"""logs: the most recent error-level journal lines of the last day, redacted and bounded.

Only what the agent's user may read is read (an unprivileged agent sees its own journal
and, in the ``systemd-journal`` or ``adm`` group, the system's).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import UTC, datetime
from typing import Any, Final

from agent.collectors._common import Context, clip, run, unavailable, which
from agent.collectors.redact import redact

MAX_LINES: Final = 50
MAX_MESSAGE: Final = 300
SINCE: Final = "-24h"
COMMAND_TIMEOUT: Final = 2.5
_PRIORITIES: Final = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")


def collect(ctx: Context) -> dict[str, Any]:
    if which("journalctl") is None:
        return unavailable("journald is not here (no journalctl)", lines=[], count=0)
    if not (os.path.isdir("/run/systemd/journal") or os.path.isdir("/var/log/journal")):
        return unavailable("journald is not running here", lines=[], count=0)
    text = run(
        [
            "journalctl",
            "--priority=err",
            f"--since={SINCE}",
            f"--lines={MAX_LINES}",
            "--output=json",
            "--output-fields=MESSAGE,PRIORITY,SYSLOG_IDENTIFIER,_SYSTEMD_UNIT,_COMM",
            "--no-pager",
            "--quiet",
        ],
        COMMAND_TIMEOUT,
    )
    return {"available": True, "since": SINCE, **parse_journal(text)}


def parse_journal(text: str) -> dict[str, Any]:
    """journalctl ``--output=json`` lines → bounded, redacted rows and counts per source."""
    lines: list[dict[str, Any]] = []
    for raw in text.splitlines()[-MAX_LINES:]:
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        lines.append(
            {
                "at": _timestamp(entry.get("__REALTIME_TIMESTAMP")),
                "source": clip(
                    _text(
                        entry.get("_SYSTEMD_UNIT")
                        or entry.get("SYSLOG_IDENTIFIER")
                        or entry.get("_COMM")
                        or "?"
                    ),
                    100,
                ),
                "priority": _priority(entry.get("PRIORITY")),
                # redact first: a clipped secret could slip past a pattern that needs its end
                "message": clip(redact(_text(entry.get("MESSAGE"))), MAX_MESSAGE),
            }
        )
    sources = Counter(line["source"] for line in lines)
    return {
        "count": len(lines),
        "truncated": len(lines) >= MAX_LINES,
        "by_source": dict(sources.most_common(10)),
        "lines": lines,
    }


def _text(value: Any) -> str:
    # journald sends non-UTF-8 or binary fields as an array of byte values
    if isinstance(value, list):
        try:
            return bytes(int(b) & 0xFF for b in value).decode("utf-8", "replace")
        except (TypeError, ValueError):
            return "?"
    return str(value) if value is not None else ""


def _timestamp(value: Any) -> str | None:
    try:
        return datetime.fromtimestamp(int(value) / 1_000_000, UTC).isoformat(timespec="seconds")
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _priority(value: Any) -> str | None:
    try:
        return _PRIORITIES[int(value)]
    except (TypeError, ValueError, IndexError):
        return None
