"""The ticket lifecycle: everything that decides a ticket's next state lives here.

::

              assign / respond                    wait
     NEW ───────────────────────► OPEN ◄──────────────────► WAITING  (on the customer)
      │                            │   resume / customer joins  │
      │ wait ──────────────────────┼────────────────────────────┘
      │                            │ resolve         (resolve from any of the three)
      └──────────────────────────► RESOLVED ──close──► CLOSED (final)
                                   │  ▲
                            reopen └──┘► OPEN

``TABLE`` maps ``(state, action)`` to the next state; a pair that is not in it is an
illegal transition and :func:`next_state` raises :class:`TransitionError` naming both,
with a hint at what would work. Closed tickets are final: a customer who comes back gets
a new ticket linked to the old one (``follows``).

Support levels are L1-L3 inside the team and L4 for the vendor or manufacturer. The SLA
clocks read :data:`CLOCK_RUNS` (resolution time counts only while new or open: waiting on
the customer pauses it, resolving stops it) and :data:`RESPONSES` (what counts as the
first response to the customer).
"""

from __future__ import annotations

import enum
from typing import Final

from protocol.vocabulary import STAFF_LEVELS, TICKET_LEVELS


class State(enum.StrEnum):
    NEW = "new"
    OPEN = "open"
    WAITING = "waiting"
    RESOLVED = "resolved"
    CLOSED = "closed"


class Action(enum.StrEnum):
    ASSIGN = "assign"
    RESPOND = "respond"  # a note, or a remote session with the customer
    WAIT = "wait"
    RESUME = "resume"
    ESCALATE = "escalate"
    RESOLVE = "resolve"
    CLOSE = "close"
    REOPEN = "reopen"


_NEW, _OPEN, _WAITING = State.NEW, State.OPEN, State.WAITING
_RESOLVED, _CLOSED = State.RESOLVED, State.CLOSED

TABLE: Final[dict[tuple[State, Action], State]] = {
    (_NEW, Action.ASSIGN): _OPEN,
    (_NEW, Action.RESPOND): _OPEN,
    (_NEW, Action.WAIT): _WAITING,
    (_NEW, Action.ESCALATE): _NEW,
    (_NEW, Action.RESOLVE): _RESOLVED,
    (_OPEN, Action.ASSIGN): _OPEN,
    (_OPEN, Action.RESPOND): _OPEN,
    (_OPEN, Action.WAIT): _WAITING,
    (_OPEN, Action.ESCALATE): _OPEN,
    (_OPEN, Action.RESOLVE): _RESOLVED,
    (_WAITING, Action.ASSIGN): _WAITING,
    (_WAITING, Action.RESPOND): _WAITING,
    (_WAITING, Action.RESUME): _OPEN,
    (_WAITING, Action.ESCALATE): _WAITING,
    (_WAITING, Action.RESOLVE): _RESOLVED,
    (_RESOLVED, Action.RESPOND): _RESOLVED,
    (_RESOLVED, Action.CLOSE): _CLOSED,
    (_RESOLVED, Action.REOPEN): _OPEN,
}

#: the resolution clock runs in these states only
CLOCK_RUNS: Final = frozenset({_NEW, _OPEN})
#: actions that are a response to the customer: the first one stops the response clock
RESPONSES: Final = frozenset({Action.RESPOND, Action.WAIT, Action.RESOLVE})
#: states in which a ticket still needs work
ACTIVE: Final = frozenset({_NEW, _OPEN, _WAITING})

_HINTS: Final[dict[tuple[State, Action], str]] = {
    (_CLOSED, Action.REOPEN): "closed tickets are final: open a new ticket and link it with "
    "`--link follows:T-N`",
    (_NEW, Action.CLOSE): "resolve it first",
    (_OPEN, Action.CLOSE): "resolve it first",
    (_WAITING, Action.CLOSE): "resolve it first",
    (_NEW, Action.REOPEN): "it is not resolved",
    (_OPEN, Action.REOPEN): "it is not resolved",
    (_WAITING, Action.REOPEN): "it is not resolved",
    (_NEW, Action.RESUME): "it is not waiting on the customer",
    (_OPEN, Action.RESUME): "it is not waiting on the customer",
    (_RESOLVED, Action.RESOLVE): "it is already resolved",
    (_WAITING, Action.WAIT): "it is already waiting on the customer",
}

LEVELS: Final = TICKET_LEVELS


class TransitionError(ValueError):
    """An action that the ticket's state does not allow."""

    def __init__(self, state: State, action: Action, ticket: str = "the ticket") -> None:
        self.state = state
        self.action = action
        hint = _HINTS.get((state, action)) or (
            "closed tickets are final"
            if state is _CLOSED
            else f"allowed now: {', '.join(allowed(state))}"
        )
        super().__init__(f"cannot {action.value} {ticket}: it is {describe(state)} ({hint})")


def next_state(state: State | str, action: Action | str, ticket: str = "the ticket") -> State:
    """The state after ``action``, or :class:`TransitionError`."""
    current, act = State(state), Action(action)
    try:
        return TABLE[(current, act)]
    except KeyError:
        raise TransitionError(current, act, ticket) from None


def allowed(state: State | str) -> list[str]:
    """The actions ``state`` allows, in table order."""
    current = State(state)
    return [action.value for (s, action) in TABLE if s is current]


def describe(state: State | str) -> str:
    """A state as people say it."""
    return "waiting on the customer" if State(state) is _WAITING else State(state).value


def level_rank(level: str) -> int:
    """L1 → 1 … L4 → 4; ValueError for anything else, naming the levels there are."""
    if level not in TICKET_LEVELS:
        raise ValueError(
            f"there is no support level {level!r}: levels are {', '.join(TICKET_LEVELS)}"
        )
    return TICKET_LEVELS.index(level) + 1


def may_work(user_role: str, user_level: str | None, ticket_level: str) -> bool:
    """Whether a user may be assigned a ticket of ``ticket_level``.

    Admins may work any ticket; technicians need at least the ticket's level (an L4 ticket
    is the vendor's, followed inside the team by an L3); auditors never.
    """
    if user_role == "admin":
        return True
    if user_role != "technician" or user_level not in STAFF_LEVELS:
        return False
    return level_rank(user_level) >= min(level_rank(ticket_level), 3)
