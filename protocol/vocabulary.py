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
