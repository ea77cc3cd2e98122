"""The lifecycle table: every pair of state and action is either in it or refused clearly."""

from __future__ import annotations

import itertools

import pytest

from controller.tickets import lifecycle
from controller.tickets.lifecycle import Action, State, TransitionError


@pytest.mark.parametrize(("state", "action"), list(itertools.product(State, Action)))
def test_every_state_and_action_is_decided(state: State, action: Action) -> None:
    if (state, action) in lifecycle.TABLE:
        assert lifecycle.next_state(state, action) is lifecycle.TABLE[(state, action)]
        assert action.value in lifecycle.allowed(state)
        return
    with pytest.raises(TransitionError) as info:
        lifecycle.next_state(state.value, action.value, "T-7")
    message = str(info.value)
    assert message.startswith(f"cannot {action.value} T-7: it is {lifecycle.describe(state)}")
    assert (info.value.state, info.value.action) == (state, action)


def test_closed_is_final_and_every_other_state_can_reach_closed() -> None:
    assert lifecycle.allowed(State.CLOSED) == []
    for start in State:
        seen, frontier = {start}, [start]
        while frontier:
            state = frontier.pop()
            for (s, _), after in lifecycle.TABLE.items():
                if s is state and after not in seen:
                    seen.add(after)
                    frontier.append(after)
        assert State.CLOSED in seen


def test_the_resolution_clock_runs_only_while_someone_owes_work() -> None:
    assert {State.NEW, State.OPEN} == lifecycle.CLOCK_RUNS
    assert Action.ASSIGN not in lifecycle.RESPONSES  # assigning is internal


@pytest.mark.parametrize(
    ("role", "level", "ticket", "ok"),
    [
        ("technician", "L1", "L1", True),
        ("technician", "L1", "L2", False),
        ("technician", "L3", "L2", True),
        ("technician", "L3", "L4", True),  # L3 follows the vendor's work
        ("technician", "L2", "L4", False),
        ("admin", None, "L4", True),
        ("auditor", None, "L1", False),
    ],
)
def test_who_may_work_a_level(role: str, level: str | None, ticket: str, ok: bool) -> None:
    assert lifecycle.may_work(role, level, ticket) is ok


def test_levels_that_do_not_exist() -> None:
    with pytest.raises(ValueError, match="there is no support level 'L0': levels are L1, L2"):
        lifecycle.level_rank("L0")
