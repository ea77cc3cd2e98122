"""The collector catalogue (``protocol/collectors.py``) as the controller uses it: the
CLI's ``--only`` and ``diag.collectors``.

The one place on the controller's side that reads the catalogue, so a move of the
catalogue changes one import.
"""

from __future__ import annotations

from collections.abc import Iterable

from protocol.calls.diagnostics import CollectorInfo
from protocol.collectors import CATALOGUE, canonical


def collector_names(names: Iterable[str]) -> tuple[str, ...]:
    """Names and aliases as collector names, in snapshot order; ``ValueError`` names the
    unknown ones and the valid ones."""
    return canonical(names)


def collector_list() -> list[CollectorInfo]:
    """Every collector an agent of this version has, with aliases and time limits."""
    return [
        CollectorInfo(
            name=spec.name, aliases=spec.aliases, summary=spec.summary, timeout_s=spec.timeout
        )
        for spec in CATALOGUE.values()
    ]
