"""Show a diagnostics snapshot to a technician with rich.

A snapshot comes from the customer's machine, so every value in it is untrusted: text is
never interpreted as rich markup, and any section or field may be missing or of the wrong
type (an older agent, a failed collector) without stopping the rest of the summary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

WARN_PERCENT = 80.0
CRIT_PERCENT = 90.0
_MISSING = "—"


def render_snapshot(console: Console, snapshot: Mapping[str, Any]) -> None:
    """Print a readable summary of ``snapshot`` to ``console``."""
    console.print(_header(snapshot))
    console.print(_load_line(snapshot))
    disks = _section(snapshot, "disks")
    if disks is not None:
        console.print(_disks_table(disks))
    processes = _section(snapshot, "processes")
    if processes is not None:
        count = _num(processes.get("count"))
        suffix = f" of {count:.0f}" if count is not None else ""
        for key, title in (("top_cpu", "by CPU time"), ("top_memory", "by memory")):
            rows = _rows(processes.get(key))
            if rows:
                console.print(_process_table(f"Top processes {title}{suffix}", rows))
    errors = snapshot.get("errors")
    if isinstance(errors, Mapping):
        for name, message in errors.items():
            console.print(Text(f"collector {name} failed: {message}", style="bold red"))
    taken_at = snapshot.get("taken_at")
    if isinstance(taken_at, str):
        duration = _num(snapshot.get("duration_ms"))
        took = f" in {duration:.0f} ms" if duration is not None else ""
        console.print(Text(f"snapshot taken {taken_at}{took}", style="dim"))


def _header(snapshot: Mapping[str, Any]) -> Text:
    system = _section(snapshot, "system") or {}
    hostname = _str(system.get("hostname")) or "unknown host"
    os_family, release = _str(system.get("os")), _str(system.get("os_release"))
    # "Debian GNU/Linux 12" says more than "Linux"; "Windows 11" already names its family.
    os_name = release if release and (os_family is None or os_family in release) else None
    os_name = os_name or " ".join(part for part in (os_family, release) if part)
    parts: list[str] = []
    if os_name:
        parts.append(os_name)
    arch = _str(system.get("architecture"))
    if arch:
        parts.append(arch)
    uptime = _num(system.get("uptime_seconds"))
    if uptime is not None:
        parts.append(f"up {humanize_duration(uptime)}")
    users = _num(system.get("users"))
    if users is not None:
        parts.append(f"{users:.0f} user{'' if users == 1 else 's'} logged in")
    header = Text(hostname, style="bold")
    for part in parts:
        header.append(" · ")
        header.append(part)
    return header


def _load_line(snapshot: Mapping[str, Any]) -> Text:
    line = Text()
    cpu = _section(snapshot, "cpu")
    if cpu is not None:
        percent = _num(cpu.get("percent"))
        cores = _num(cpu.get("logical"))
        line.append("CPU ", style="bold")
        line.append_text(_percent_text(percent))
        if cores is not None:
            line.append(f" of {cores:.0f} core{'' if cores == 1 else 's'}")
        load = cpu.get("load_avg")
        if isinstance(load, Sequence) and not isinstance(load, str):
            values = [_num(value) for value in load]
            line.append(
                " (load " + " ".join(f"{v:.2f}" if v is not None else "?" for v in values) + ")"
            )
    memory = _section(snapshot, "memory")
    if memory is not None:
        if line:
            line.append(" · ")
        line.append("Memory ", style="bold")
        line.append_text(_usage_text(memory.get("used"), memory.get("total"), memory))
        swap = memory.get("swap")
        if isinstance(swap, Mapping):
            line.append(" · ")
            line.append("Swap ", style="bold")
            line.append_text(_usage_text(swap.get("used"), swap.get("total"), swap))
    if not line:
        line.append("no CPU or memory figures in this snapshot", style="dim")
    return line


def _usage_text(used: Any, total: Any, section: Mapping[str, Any]) -> Text:
    used_n, total_n = _num(used), _num(total)
    text = Text(f"{humanize_bytes(used_n)} / {humanize_bytes(total_n)} (")
    text.append_text(_percent_text(_num(section.get("percent"))))
    text.append(")")
    return text


def _disks_table(disks: Mapping[str, Any]) -> Table:
    table = Table(title="Disks", title_justify="left")
    table.add_column("Mount")
    table.add_column("Device")
    table.add_column("FS")
    table.add_column("Used", justify="right")
    table.add_column("Total", justify="right")
    table.add_column("Use", justify="right")
    for part in _rows(disks.get("partitions")):
        table.add_row(
            Text(_str(part.get("mountpoint")) or _MISSING),
            Text(_str(part.get("device")) or _MISSING),
            Text(_str(part.get("fstype")) or _MISSING),
            humanize_bytes(_num(part.get("used"))),
            humanize_bytes(_num(part.get("total"))),
            _percent_text(_num(part.get("percent"))),
        )
    notes = []
    skipped = _num(disks.get("skipped"))
    if skipped:
        notes.append(f"{skipped:.0f} unreadable partition(s) skipped")
    if disks.get("truncated") is True:
        notes.append("list truncated")
    if notes:
        table.caption = "; ".join(notes)
    return table


def _process_table(title: str, rows: list[Mapping[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("PID", justify="right")
    table.add_column("Name")
    table.add_column("User")
    table.add_column("CPU time", justify="right")
    table.add_column("RSS", justify="right")
    table.add_column("Status")
    for proc in rows:
        pid = _num(proc.get("pid"))
        cpu = _num(proc.get("cpu_seconds"))
        table.add_row(
            f"{pid:.0f}" if pid is not None else _MISSING,
            Text(_str(proc.get("name")) or _MISSING),
            Text(_str(proc.get("username")) or _MISSING),
            humanize_duration(cpu) if cpu is not None else _MISSING,
            humanize_bytes(_num(proc.get("rss"))),
            Text(_str(proc.get("status")) or _MISSING),
        )
    return table


# -- formatting --------------------------------------------------------------------------


def humanize_bytes(value: float | None) -> str:
    """1536 -> "1.5 KiB"; None -> a dash."""
    if value is None or value < 0:
        return _MISSING
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def humanize_duration(seconds: float) -> str:
    """90061 -> "1 d 1 h"; 42.5 -> "42.5 s": the two largest units are enough to read."""
    if seconds < 60:
        return (
            f"{seconds:.1f} s" if seconds < 10 and seconds != int(seconds) else f"{seconds:.0f} s"
        )
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    units = [(days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")]
    first = next(i for i, (amount, _) in enumerate(units) if amount)
    shown = [f"{amount} {unit}" for amount, unit in units[first : first + 2] if amount]
    return " ".join(shown)


def _percent_text(percent: float | None) -> Text:
    if percent is None:
        return Text(_MISSING)
    style = "red" if percent >= CRIT_PERCENT else "yellow" if percent >= WARN_PERCENT else ""
    return Text(f"{percent:.1f} %", style=style)


def _section(snapshot: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    value = snapshot.get(name)
    return value if isinstance(value, Mapping) else None


def _rows(value: Any) -> list[Mapping[str, Any]]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        return []
    return [row for row in value if isinstance(row, Mapping)]


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
