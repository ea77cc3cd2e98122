"""What a test does when an outside service it needs (PostgreSQL, NATS, …) is not there.

By default such tests skip, so the suite runs on a laptop without the services. CI sets
``HELPLINE_REQUIRE_SERVICES=1`` so that a missing service fails the run instead of quietly
shrinking it.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

REQUIRE_ENV = "HELPLINE_REQUIRE_SERVICES"


def services_required() -> bool:
    """Whether a missing service must fail the test rather than skip it."""
    return os.environ.get(REQUIRE_ENV) == "1"


def require_service(name: str, exc: BaseException, where: str | None = None) -> NoReturn:
    """Skip (or, with ``HELPLINE_REQUIRE_SERVICES=1``, fail) because ``name`` is unreachable."""
    place = f" on {where}" if where else ""
    message = f"{name} not reachable{place}: {type(exc).__name__}: {exc}"
    if services_required():
        pytest.fail(f"{message} (and {REQUIRE_ENV}=1 is set)", pytrace=False)
    pytest.skip(message)


def require_tool(name: str, why: str) -> str:
    """The path of command ``name``; else skip (or, under CI, fail) saying what it is for."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed ({why})"
        if services_required():
            pytest.fail(f"{message}, and {REQUIRE_ENV}=1 is set", pytrace=False)
        pytest.skip(message)
    return path
