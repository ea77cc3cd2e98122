"""The catalogue of diagnostics collectors: names, aliases, what each reads, its time limit.

Pure data both sides read: the controller's CLI and API check and list collector names
with it, the agent (:mod:`agent.collectors`) runs the collector each entry names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Spec:
    """One collector: its section name, its module in ``agent.collectors``, a line for
    ``--list``, and its time limit."""

    name: str
    module: str
    summary: str
    timeout: float
    aliases: tuple[str, ...] = ()


#: Every collector, in the order their sections appear in a snapshot.
CATALOGUE: Final[dict[str, Spec]] = {
    spec.name: spec
    for spec in (
        Spec(
            "system",
            "system",
            "OS, kernel, hostname, uptime, timezone, logged-in users, pending reboot",
            2.0,
            ("sys", "os"),
        ),
        Spec("cpu", "cpu", "cores, load averages, per-core use, top consumers", 2.0),
        Spec("memory", "memory", "memory and swap use, swap activity, pressure", 2.0, ("mem",)),
        Spec(
            "disks",
            "disks",
            "usage and inodes per mount, read-only mounts, I/O counters",
            3.0,
            ("disk", "storage"),
        ),
        Spec(
            "network",
            "network",
            "interfaces, default route, DNS servers and a test lookup, controller "
            "reachability, listening ports, connections by state",
            3.0,
            ("net",),
        ),
        Spec(
            "processes",
            "processes",
            "process count and states, top by CPU and by memory, zombies",
            3.0,
            ("process", "procs"),
        ),
        Spec("services", "services", "failed systemd units", 3.0, ("service", "units")),
        Spec(
            "logs", "logs", "recent error-level journal lines (redacted)", 3.0, ("log", "journal")
        ),
        Spec("time", "clock", "clock synchronisation and offset", 2.0, ("clock", "ntp")),
        Spec(
            "packages",
            "packages",
            "pending updates (apt or dnf), security updates",
            2.0,
            ("package", "updates"),
        ),
        Spec(
            "battery", "power", "charge, power source, wear (capacity vs design)", 1.0, ("power",)
        ),
        Spec(
            "sensors",
            "sensors",
            "temperatures and fans",
            1.0,
            ("sensor", "temperature", "temperatures"),
        ),
    )
}

COLLECTORS: Final[tuple[str, ...]] = tuple(CATALOGUE)

ALIASES: Final[dict[str, str]] = {
    alias: spec.name for spec in CATALOGUE.values() for alias in (spec.name, *spec.aliases)
}


def canonical(names: Iterable[str]) -> tuple[str, ...]:
    """Resolve names and aliases to collector names, in snapshot order, without duplicates.

    Raises ``ValueError`` naming every unknown name and the valid ones.
    """
    if isinstance(names, str):
        raise TypeError(f"collectors must be a sequence of names, e.g. ({names!r},)")
    wanted: set[str] = set()
    unknown: list[str] = []
    for raw in names:
        name = ALIASES.get(str(raw).strip().lower())
        if name is None:
            unknown.append(str(raw))
        else:
            wanted.add(name)
    if unknown:
        raise ValueError(
            f"unknown collector(s): {', '.join(sorted(unknown))}; valid: {', '.join(COLLECTORS)}"
        )
    return tuple(name for name in COLLECTORS if name in wanted)
