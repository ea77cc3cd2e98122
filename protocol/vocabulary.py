"""The names both sides share, defined once: roles, support levels, priorities, scopes.

A ``Literal`` type for models and a tuple of the same names, in order, for loops, choices
and messages. Nothing else in the project spells these lists out.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

Role = Literal["admin", "technician", "auditor"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)

#: the support levels a technician (and a catalogue fix's minimum) can have
StaffLevel = Literal["L1", "L2", "L3"]
STAFF_LEVELS: Final[tuple[StaffLevel, ...]] = get_args(StaffLevel)

#: the levels a ticket can sit at: L4 is the vendor, outside the organisation
TicketLevel = Literal["L1", "L2", "L3", "L4"]
TICKET_LEVELS: Final[tuple[TicketLevel, ...]] = get_args(TicketLevel)

Priority = Literal["P1", "P2", "P3", "P4"]
PRIORITIES: Final[tuple[Priority, ...]] = get_args(Priority)

#: what a customer can grant a technician in a session
Scope = Literal["diagnostics:read", "fixes:propose"]
SCOPES: Final[tuple[Scope, ...]] = get_args(Scope)
#: what a join asks for; every fix proposal still asks the customer on its own
DEFAULT_SCOPES: Final[tuple[Scope, ...]] = ("diagnostics:read", "fixes:propose")

#: where a ticket is in its lifecycle (controller/tickets/lifecycle.py has the table)
TicketState = Literal["new", "open", "waiting", "resolved", "closed"]
TICKET_STATES: Final[tuple[TicketState, ...]] = get_args(TicketState)

#: how the customer reached us
Channel = Literal["phone", "e-mail", "chat", "remote", "on-site"]
CHANNELS: Final[tuple[Channel, ...]] = get_args(Channel)

#: what one ticket is to another, as written (the other end reads ``followed_by`` and so on)
LinkKind = Literal["relates", "duplicates", "follows", "blocks"]
LINK_KINDS: Final[tuple[LinkKind, ...]] = get_args(LinkKind)

#: the state of one SLA clock, as the API writes it (``ticket list --sla`` also takes
#: ``on-track`` and ``at-risk``, as people type them)
SlaStatus = Literal["on_track", "at_risk", "breached", "met", "paused", "none"]
SLA_STATUSES: Final[tuple[SlaStatus, ...]] = get_args(SlaStatus)
