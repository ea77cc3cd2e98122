"""Show diagnostics to a technician with rich: findings first, then the details, and diffs.

A snapshot comes from the customer's machine, so every value in it is untrusted: text is
never interpreted as rich markup (it always goes through ``Text``), every string is shown
on one line with its control characters made visible (``protocol.text.one_line``: a host
name must not clear the screen or forge a line) before rich lays it out, and any section
or field may be missing or of the wrong type (an older agent, a failed collector) without
stopping the rest of the summary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from controller.units import MISSING, humanize_bytes, humanize_duration
from protocol.text import one_line

WARN_PERCENT = 80.0
CRIT_PERCENT = 90.0
SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
_MAX_LOG_LINES = 5


def render_diagnostics(
    console: Console, snapshot: Mapping[str, Any], findings: Sequence[Any] | None
) -> None:
    """Findings first (most severe first), then the snapshot's details."""
    if findings is not None:
        render_findings(console, findings)
        console.rule("details", style="dim")
    render_snapshot(console, snapshot)


def render_findings(console: Console, findings: Sequence[Any]) -> None:
    """One block per finding: severity and title, evidence, advice, the suggested fix."""
    rows = [f for f in findings if isinstance(f, Mapping)]
    if not rows:
        console.print(Text("✓ no findings: nothing in this snapshot looks wrong", style="green"))
        return
    counts: dict[str, int] = {}
    for finding in rows:
        severity = _str(finding.get("severity")) or "info"
        counts[severity] = counts.get(severity, 0) + 1
    summary = Text("Findings: ", style="bold")
    for n, severity in enumerate(s for s in SEVERITY_STYLE if s in counts):
        if n:
            summary.append(", ")
        summary.append(f"{counts[severity]} {severity}", style=SEVERITY_STYLE[severity])
    console.print(summary)
    # a grid, so that long lines wrap under their own column, not under the marker
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column()
    for finding in rows:
        severity = _str(finding.get("severity")) or "info"
        style = SEVERITY_STYLE.get(severity, "")
        grid.add_row(Text(f"● {severity.upper():<8}", style=style), _finding_body(finding))
    console.print(grid)


def _finding_body(finding: Mapping[str, Any]) -> Text:
    text = Text(_str(finding.get("title")) or _str(finding.get("rule")) or "?", style="bold")
    explanation = _str(finding.get("explanation"))
    if explanation:
        text.append(f"\n{explanation}", style="dim")
    for line in _strings(finding.get("evidence")):
        text.append(f"\n· {line}")
    advice = _str(finding.get("advice"))
    if advice:
        text.append(f"\n→ {advice}")
    fix = _str(finding.get("fix"))
    if fix:
        text.append("\nsuggested fix: ", style="dim")
        text.append(fix, style="bold")
        params = finding.get("fix_params")
        if isinstance(params, Mapping):
            for name, value in params.items():
                text.append(one_line(f" --param {name}={value}"))
    return text


def render_snapshot(console: Console, snapshot: Mapping[str, Any]) -> None:
    """Print a readable summary of ``snapshot`` to ``console``."""
    collected = snapshot.get("collectors")
    # None: an older snapshot that does not say which collectors it asked for
    asked = {str(c) for c in collected} if isinstance(collected, list) else None
    if asked is None or "system" in asked:
        console.print(_header(snapshot))
    else:
        shown = one_line(", ".join(sorted(asked)))
        console.print(Text(f"partial snapshot: {shown}", style="bold"))
    if asked is None or asked & {"cpu", "memory"}:
        console.print(_load_line(snapshot))
    for line in (_network_line(snapshot), _state_line(snapshot)):
        if line:
            console.print(line)
    disks = _section(snapshot, "disks")
    if disks is not None:
        console.print(_disks_table(disks))
    services = _section(snapshot, "services")
    failed = _rows(services.get("failed")) if services else []
    if failed:
        console.print(_services_table(failed))
    processes = _section(snapshot, "processes")
    if processes is not None:
        count = _num(processes.get("count"))
        suffix = f" of {count:.0f}" if count is not None else ""
        for key, title in (("top_cpu", "by CPU"), ("top_memory", "by memory")):
            rows = _rows(processes.get(key))
            if rows:
                console.print(_process_table(f"Top processes {title}{suffix}", rows))
    logs = _section(snapshot, "logs")
    if logs is not None:
        _print_logs(console, logs)
    errors = snapshot.get("errors")
    if isinstance(errors, Mapping):
        for name, message in errors.items():
            broken = one_line(f"collector {name} failed: {message}")
            console.print(Text(broken, style="bold red"))
    taken_at = snapshot.get("taken_at")
    if isinstance(taken_at, str):
        duration = _num(snapshot.get("duration_ms"))
        took = f" in {duration:.0f} ms" if duration is not None else ""
        console.print(Text(one_line(f"snapshot taken {taken_at}{took}"), style="dim"))


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
    timezone = system.get("timezone")
    zone = _str(timezone.get("name")) if isinstance(timezone, Mapping) else None
    if zone:
        parts.append(f"TZ {zone}")
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


def _network_line(snapshot: Mapping[str, Any]) -> Text | None:
    network = _section(snapshot, "network")
    if network is None:
        return None
    line = Text("Network ", style="bold")
    parts: list[Text] = []
    route = network.get("default_route")
    if isinstance(route, Mapping):
        v4 = route.get("ipv4")
        if isinstance(v4, Mapping):
            gateway = one_line(f"gateway {v4.get('gateway')} via {v4.get('interface')}")
            parts.append(Text(gateway))
        elif route.get("available") is True and not isinstance(route.get("ipv6"), Mapping):
            parts.append(Text("no default route", style="red"))
    dns = network.get("dns")
    if isinstance(dns, Mapping):
        servers = _strings(dns.get("servers"))
        parts.append(Text(f"DNS {', '.join(servers)}" if servers else "no DNS servers"))
    resolve = network.get("resolve")
    if isinstance(resolve, Mapping):
        name = _str(resolve.get("name")) or "?"
        if resolve.get("ok") is True:
            parts.append(Text(f"lookup {name} ok"))
        else:
            parts.append(Text(f"lookup {name} failed", style="red"))
    controller = network.get("controller")
    if isinstance(controller, Mapping):
        if controller.get("reachable") is True:
            parts.append(Text("support server reachable"))
        else:
            parts.append(Text("support server unreachable on a new connection", style="red"))
    listening = _num(network.get("listening_count"))
    if listening is not None:
        parts.append(Text(f"{listening:.0f} listening ports"))
    for n, part in enumerate(parts):
        if n:
            line.append(" · ")
        line.append_text(part)
    return line if parts else None


def _state_line(snapshot: Mapping[str, Any]) -> Text | None:
    """Clock, updates, restart, services, battery, sensors: one line of what is known."""
    parts: list[Text] = []
    clock = _section(snapshot, "time")
    if clock is not None and clock.get("available") is not False:
        synced = clock.get("synchronized")
        if synced is True:
            parts.append(Text("clock synchronised"))
        elif synced is False:
            parts.append(Text("clock not synchronised", style="yellow"))
    packages = _section(snapshot, "packages")
    if packages is not None and packages.get("available") is True:
        if packages.get("checking") is True:
            parts.append(Text("updates: still checking", style="dim"))
        else:
            pending, security = _num(packages.get("pending")), _num(packages.get("security"))
            if pending is not None:
                extra = f" ({security:.0f} security)" if security else ""
                style = "yellow" if security else ""
                parts.append(Text(f"{pending:.0f} updates pending{extra}", style=style))
    system = _section(snapshot, "system")
    if system is not None and system.get("pending_reboot") is True:
        parts.append(Text("restart pending", style="yellow"))
    services = _section(snapshot, "services")
    if services is not None and services.get("available") is True:
        failed = _num(services.get("failed_count")) or 0
        parts.append(Text(f"{failed:.0f} failed services", style="red" if failed else ""))
    battery = _section(snapshot, "battery")
    if battery is not None and battery.get("available") is True:
        percent, health = _num(battery.get("percent")), _num(battery.get("health_percent"))
        text = f"battery {percent:.0f} %" if percent is not None else "battery"
        parts.append(Text(text + (f" (health {health:.0f} %)" if health is not None else "")))
    sensors = _section(snapshot, "sensors")
    if sensors is not None and _num(sensors.get("hottest")) is not None:
        parts.append(Text(f"hottest sensor {_num(sensors.get('hottest')):.0f} °C"))
    if not parts:
        return None
    line = Text("State ", style="bold")
    for n, part in enumerate(parts):
        if n:
            line.append(" · ")
        line.append_text(part)
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
    table.add_column("Inodes", justify="right")
    for part in _rows(disks.get("partitions")):
        mount = Text(_str(part.get("mountpoint")) or MISSING)
        if part.get("readonly") is True:
            mount.append(" (ro)", style="dim")
        table.add_row(
            mount,
            Text(_str(part.get("device")) or MISSING),
            Text(_str(part.get("fstype")) or MISSING),
            humanize_bytes(_num(part.get("used"))),
            humanize_bytes(_num(part.get("total"))),
            _percent_text(_num(part.get("percent"))),
            _percent_text(_num(part.get("inodes_percent"))),
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


def _services_table(failed: list[Mapping[str, Any]]) -> Table:
    table = Table(title="Failed services", title_justify="left")
    table.add_column("Unit")
    table.add_column("State")
    table.add_column("Description")
    for unit in failed:
        table.add_row(
            Text(_str(unit.get("unit")) or MISSING, style="red"),
            Text(f"{_str(unit.get('active')) or '?'}/{_str(unit.get('sub')) or '?'}"),
            Text(_str(unit.get("description")) or ""),
        )
    return table


def _process_table(title: str, rows: list[Mapping[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left", expand=True)
    table.add_column("PID", justify="right", no_wrap=True)
    table.add_column("Name", no_wrap=True)
    table.add_column("User", no_wrap=True, max_width=12, overflow="ellipsis")
    table.add_column("CPU now", justify="right", no_wrap=True)
    table.add_column("CPU time", justify="right", no_wrap=True)
    table.add_column("RSS", justify="right", no_wrap=True)
    table.add_column("Command", overflow="ellipsis", no_wrap=True, ratio=1)
    for proc in rows:
        pid = _num(proc.get("pid"))
        cpu = _num(proc.get("cpu_seconds"))
        now = _num(proc.get("cpu_percent"))
        table.add_row(
            f"{pid:.0f}" if pid is not None else MISSING,
            Text(_str(proc.get("name")) or MISSING),
            Text(_str(proc.get("username")) or MISSING),
            f"{now:.0f} %" if now is not None else MISSING,
            humanize_duration(cpu) if cpu is not None else MISSING,
            humanize_bytes(_num(proc.get("rss"))),
            Text(_str(proc.get("cmdline")) or ""),
        )
    return table


def _print_logs(console: Console, logs: Mapping[str, Any]) -> None:
    lines = _rows(logs.get("lines"))
    if not lines:
        return
    console.print(
        Text(f"Recent error log lines ({len(lines)}, latest {_MAX_LOG_LINES}):", style="bold")
    )
    for entry in lines[-_MAX_LOG_LINES:]:
        text = Text("  ")
        text.append((_str(entry.get("at")) or "?")[:19].replace("T", " "), style="dim")
        text.append(f" {_str(entry.get('source')) or '?'}: ", style="bold")
        text.append(_str(entry.get("message")) or "")
        console.print(text)


# -- before and after -------------------------------------------------------------------


def render_diff(console: Console, diff: Mapping[str, Any]) -> None:
    """What changed between two snapshots: findings resolved, new, remaining; values."""
    before, after = diff.get("before"), diff.get("after")
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        console.print(
            Text(
                one_line(
                    f"{diff.get('ticket', '')}: snapshot #{before.get('attachment')} "
                    f"({before.get('taken_at')}) → #{after.get('attachment')} "
                    f"({after.get('taken_at')})"
                ),
                style="bold",
            )
        )
    findings = diff.get("findings")
    findings = findings if isinstance(findings, Mapping) else {}
    groups = (
        ("resolved", "✓ resolved", "green"),
        ("new", "✗ new", "red"),
        ("remaining", "• still there", "yellow"),
        ("not_compared", "? not compared", "dim"),
    )
    shown = False
    for key, label, style in groups:
        for finding in _rows(findings.get(key)):
            shown = True
            line = Text(f"{label:<20} ", style=style)
            severity = _str(finding.get("severity")) or "info"
            line.append(f"{severity:<8} ", style=SEVERITY_STYLE.get(severity, ""))
            line.append(_str(finding.get("title")) or _str(finding.get("rule")) or "?")
            was = _str(finding.get("severity_before"))
            if was and was != severity:
                line.append(f" (was {was})", style="dim")
            seen = _str(finding.get("seen_in"))
            if seen:
                line.append(f" (only the {seen} snapshot checked this)", style="dim")
            console.print(line)
    if not shown:
        console.print(Text("no findings before or after", style="green"))
    changes = _rows(diff.get("changes"))
    if not changes:
        console.print(Text("no watched value changed", style="dim"))
        return
    table = Table(title="What changed", title_justify="left")
    table.add_column("What")
    table.add_column("Before", justify="right")
    table.add_column("After", justify="right")
    for change in changes:
        if change.get("kind") == "set":
            added, removed = _strings(change.get("added")), _strings(change.get("removed"))
            table.add_row(
                Text(_str(change.get("label")) or "?"),
                Text("\n".join(f"- {r}" for r in removed), style="red"),
                Text("\n".join(f"+ {a}" for a in added), style="green"),
            )
        else:
            table.add_row(
                Text(_str(change.get("label")) or "?"),
                Text(_str(change.get("before_text")) or MISSING),
                Text(_str(change.get("after_text")) or MISSING),
            )
    console.print(table)


# -- formatting --------------------------------------------------------------------------


def _percent_text(percent: float | None) -> Text:
    if percent is None:
        return Text(MISSING)
    style = "red" if percent >= CRIT_PERCENT else "yellow" if percent >= WARN_PERCENT else ""
    return Text(f"{percent:.1f} %", style=style)


def _section(snapshot: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    value = snapshot.get(name)
    return value if isinstance(value, Mapping) else None


def _rows(value: Any) -> list[Mapping[str, Any]]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        return []
    return [row for row in value if isinstance(row, Mapping)]


def _strings(value: Any) -> list[str]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        return []
    return [one_line(str(item)) for item in value if isinstance(item, str | int | float)]


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _str(value: Any) -> str | None:
    """A non-empty string from the snapshot, on one line with its controls made visible."""
    return one_line(value) if isinstance(value, str) and value else None
