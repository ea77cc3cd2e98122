"""The diagnostics collectors, one module each, imported on first use.

Each module here has one function, ``collect(ctx) -> dict``; the driver in
:mod:`agent.diagnostics` imports it only when a snapshot asks for it. Their names,
aliases and time limits are in :mod:`protocol.collectors`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from protocol.collectors import CATALOGUE

if TYPE_CHECKING:
    from agent.collectors._common import Context

Collect = Callable[["Context"], dict[str, Any]]


def load(name: str) -> Collect:
    """The ``collect`` function of one collector, imported on first use."""
    module = importlib.import_module(f"agent.collectors.{CATALOGUE[name].module}")
    collect: Collect = module.collect
    return collect
