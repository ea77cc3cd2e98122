"""``ticket.show`` with the findings of every diagnostics snapshot on the ticket.

``METHODS`` here is merged into :data:`controller.api.METHODS` (same shape: handler and
the roles allowed to call it). Findings are computed from the stored snapshot whenever it
is shown, never stored. The diagnostics calls themselves are in
``controller/api/diagnostics.py``.

This module imports :mod:`controller.api` only inside its functions: ``api`` imports this
module at its end, and either may be imported first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from controller.findings import with_findings

if TYPE_CHECKING:
    from controller.api import Api, Caller, Handler

Progress = Callable[[str], Awaitable[None]]


async def ticket_show(api: Api, caller: Caller, params: dict[str, Any], progress: Progress) -> Any:
    """``ticket.show``, with the findings of every diagnostics snapshot on the ticket."""
    from controller.tickets_api import show_ticket

    data: dict[str, Any] = await show_ticket(api, caller, params)
    for attachment in data.get("attachments", []):
        if attachment.get("kind") == "diagnostics" and attachment.get("ok"):
            attachment.update(with_findings(attachment.get("data"), True))
    return data


_ALL = ("admin", "technician", "auditor")

METHODS: dict[str, tuple[Handler, tuple[str, ...]]] = {
    "ticket.show": (ticket_show, _ALL),
}
