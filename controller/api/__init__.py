"""The controller's API: the ``/api`` endpoint and one handler module per noun.

``registry`` declares handlers with their call models and roles; ``endpoint`` authenticates
connections and dispatches through it; ``audit``, ``diagnostics``, ``fixes``, ``kb``,
``reports``, ``sessions``, ``tickets``, ``users`` and ``webhooks`` hold the handlers.
Importing this package registers every handler.
"""

from __future__ import annotations

from controller.api import (
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
from controller.api.endpoint import Api
from controller.api.registry import ROUTES, ApiError, Caller, utcnow

#: every method name, for tests and the fuzzers
METHODS = ROUTES.routes

__all__ = [
    "METHODS",
    "ROUTES",
    "Api",
    "ApiError",
    "Caller",
    "audit",
    "diagnostics",
    "fixes",
    "kb",
    "reports",
    "sessions",
    "tickets",
    "users",
    "utcnow",
    "webhooks",
]
