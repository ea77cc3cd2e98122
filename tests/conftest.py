"""Shared test settings: timeouts scale with one variable for slow machines; slow tests opt in."""

from __future__ import annotations

import os

import pytest

from tests.services import services_required

#: Multiply every wait in the tests; e.g. HELPLINE_TEST_TIMEOUT_SCALE=3 on a busy machine.
TIMEOUT_SCALE = float(os.environ.get("HELPLINE_TEST_TIMEOUT_SCALE", "1"))
#: Run the tests marked ``slow`` (booting a whole system under systemd): CI always does.
SLOW_ENV = "HELPLINE_TEST_SLOW"


def scaled(seconds: float) -> float:
    """A test wait, scaled."""
    return seconds * TIMEOUT_SCALE


def slow_tests_enabled() -> bool:
    """Whether ``slow`` tests run: asked for, or CI (which must never quietly shrink)."""
    return os.environ.get(SLOW_ENV) == "1" or services_required()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # a skip with its reason rather than a deselection, so the summary says what was left out
    if slow_tests_enabled():
        return
    skip = pytest.mark.skip(reason=f"slow (boots a system); {SLOW_ENV}=1 or CI runs it")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)
