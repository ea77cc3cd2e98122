"""The controller's API: the ``/api`` endpoint and one handler module per noun.

``registry`` declares handlers with their call models and roles; ``endpoint`` authenticates
connections and dispatches through it; ``users``, ``sessions``, … hold the handlers.
Importing this package registers every handler.
"""

from __future__ import annotations

# the calls not yet on call models, from the modules that still hold them
from controller import diag_api, tickets_api
from controller.api import diagnostics, fixes, sessions, users
from controller.api.endpoint import Api
from controller.api.params import (
    attachment_json,
    optional_text,
    parse_id,
    parse_since,
    parse_ticket_id,
    required_text,
    session_json,
    whole_number,
)
from controller.api.registry import ROUTES, ApiError, Caller, utcnow
from controller.api.registry import LegacyHandler as Handler

for _table in (diag_api.METHODS, tickets_api.TICKET_METHODS):
    for _method, (_handler, _roles) in _table.items():
        ROUTES.legacy(_method, _handler, _roles, heavy=_method == "report.kpi")

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
    "diag_api",
    "diagnostics",
    "fixes",
    "optional_text",
    "parse_id",
    "parse_since",
    "parse_ticket_id",
    "required_text",
    "session_json",
    "sessions",
    "tickets_api",
    "users",
    "utcnow",
    "whole_number",
]
