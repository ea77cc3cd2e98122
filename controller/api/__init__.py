"""The controller's API: the ``/api`` endpoint and one handler module per noun.

``registry`` declares handlers with their call models and roles; ``endpoint`` authenticates
connections and dispatches through it; ``audit``, ``users``, ``sessions``, … hold the handlers.
Importing this package registers every handler.
"""

from __future__ import annotations

# the calls not yet on call models, from the modules that still hold them
from controller import diag_api, fixes_api
from controller.api import audit, kb, reports, sessions, tickets, users, webhooks
from controller.api.endpoint import Api
from controller.api.params import (
    attachment_json,
    optional_text,
    parse_id,
    parse_since,
    parse_ticket_id,
    required_text,
    session_json,
)
from controller.api.registry import ROUTES, ApiError, Caller, utcnow
from controller.api.registry import LegacyHandler as Handler

for _table in (diag_api.METHODS, fixes_api.METHODS):
    for _method, (_handler, _roles) in _table.items():
        ROUTES.legacy(_method, _handler, _roles)

#: every method name, for tests and the fuzzers
METHODS = ROUTES.routes

__all__ = [
    "METHODS",
    "ROUTES",
    "Api",
    "ApiError",
    "Caller",
    "Handler",
    "attachment_json",
    "audit",
    "diag_api",
    "fixes_api",
    "kb",
    "optional_text",
    "parse_id",
    "parse_since",
    "parse_ticket_id",
    "reports",
    "required_text",
    "session_json",
    "sessions",
    "tickets",
    "users",
    "utcnow",
    "webhooks",
    "whole_number",
]
