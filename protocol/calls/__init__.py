"""Every API call as a pair of frozen models: its parameters and its result.

One module per noun; importing this package registers every call in :data:`CALLS`. The
wire format of a call is its params model dumped to JSON (``Call.params``) and its result
as the result type dumps it; docs/protocol.md lists them.
"""

from __future__ import annotations

from protocol.calls import (
    audit,
    diagnostics,
    fixes,
    kb,
    reports,
    sessions,
    tickets,
    users,
    webhooks,
)
from protocol.calls.base import CALLS, Call, Model, explain

__all__ = [
    "CALLS",
    "Call",
    "Model",
    "audit",
    "diagnostics",
    "explain",
    "fixes",
    "kb",
    "reports",
    "sessions",
    "tickets",
    "users",
    "webhooks",
]
