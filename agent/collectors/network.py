"""network: interfaces, default route, DNS, a test lookup, controller reachability, ports.

The two checks that wait on the network (the name lookup and a fresh TCP connection to
the controller, a second path beside the live session) run in their own threads from the
start, so they overlap with everything else; each has its own deadline, and a lookup the
resolver is still chewing on is reported as "no answer within N s", not waited for.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit

from agent.collectors._common import Context, clip, is_linux, read_text, run, which

#: Looked up when neither HELPLINE_DIAG_RESOLVE nor a controller host name says otherwise;
#: IANA keeps it resolvable for exactly this kind of test.
DEFAULT_RESOLVE: Final = "example.com"
RESOLVE_TIMEOUT: Final = 2.0
CONNECT_TIMEOUT: Final = 2.0
MAX_INTERFACES: Final = 32
MAX_ADDRESSES: Final = 8
MAX_LISTENING: Final = 50
MAX_ADDRESSES_TRIED: Final = 4


class _Job:
    """A blocking call in a daemon thread; nobody waits for it past its deadline."""

    def __init__(self, work: Callable[[], dict[str, Any]], name: str) -> None:
        self.result: dict[str, Any] | None = None
        self.thread = threading.Thread(target=self._run, args=(work,), name=name, daemon=True)
        self.thread.start()

    def _run(self, work: Callable[[], dict[str, Any]]) -> None:
        self.result = work()

    def wait(self, deadline: float) -> dict[str, Any] | None:
        self.thread.join(max(0.0, deadline - time.monotonic()))
        return None if self.thread.is_alive() else self.result


def collect(ctx: Context) -> dict[str, Any]:
    import psutil

    started = time.monotonic()
    target = _controller_target(ctx.controller_url)
    name = resolve_name(ctx)
    lookup = _Job(lambda: _resolve(name), "diag-resolve")
    probe = _Job(lambda: _probe(*target), "diag-probe") if target else None

    result: dict[str, Any] = {
        "interfaces": _interfaces(psutil),
        "default_route": _default_route(),
        "dns": _dns_config(),
        "io": _io_errors(psutil),
    }
    result.update(_sockets(psutil))

    resolved = lookup.wait(started + RESOLVE_TIMEOUT)
    result["resolve"] = resolved or {
        "name": name,
        "ok": False,
        "addresses": [],
        "error": f"no answer within {RESOLVE_TIMEOUT:g} s",
    }
    if probe is None or target is None:
        result["controller"] = None
    else:
        probed = probe.wait(started + RESOLVE_TIMEOUT + CONNECT_TIMEOUT)
        result["controller"] = probed or {
            "host": target[0],
            "port": target[1],
            "reachable": False,
            "addresses": [],
            "error": "no answer in time",
        }
    return result


def resolve_name(ctx: Context) -> str:
    """The name to look up: HELPLINE_DIAG_RESOLVE, else the controller's host name."""
    if ctx.resolve_name:
        return ctx.resolve_name
    env = os.environ.get("HELPLINE_DIAG_RESOLVE", "").strip()
    if env:
        return env
    target = _controller_target(ctx.controller_url)
    if target and not _is_ip(target[0]):
        return target[0]
    return DEFAULT_RESOLVE


def _controller_target(url: str | None) -> tuple[str, int] | None:
    if not url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port or 443
    except ValueError:
        return None
    return (parts.hostname, port) if parts.hostname else None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _resolve(name: str) -> dict[str, Any]:
    began = time.monotonic()
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return {
            "name": name,
            "ok": False,
            "addresses": [],
            "error": clip(str(exc)),
            "ms": round((time.monotonic() - began) * 1000, 1),
        }
    addresses = sorted({str(info[4][0]) for info in infos})
    return {
        "name": name,
        "ok": bool(addresses),
        "addresses": addresses[:MAX_ADDRESSES],
        "error": None,
        "ms": round((time.monotonic() - began) * 1000, 1),
    }


def _probe(host: str, port: int) -> dict[str, Any]:
    """Open (and close) a fresh TCP connection to each of the controller's addresses."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return {
            "host": host,
            "port": port,
            "reachable": False,
            "addresses": [],
            "error": f"cannot resolve {host}: {clip(str(exc))}",
        }
    seen: list[tuple[int, Any]] = []
    for info in infos:
        entry = (int(info[0]), info[4])
        if entry not in seen:
            seen.append(entry)
    tried: list[dict[str, Any]] = []
    for family, sockaddr in seen[:MAX_ADDRESSES_TRIED]:
        began = time.monotonic()
        error: str | None = None
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(CONNECT_TIMEOUT / max(1, len(seen[:MAX_ADDRESSES_TRIED])))
                sock.connect(sockaddr)
        except OSError as exc:
            error = clip(str(exc) or type(exc).__name__)
        tried.append(
            {
                "address": str(sockaddr[0]),
                "ok": error is None,
                "ms": round((time.monotonic() - began) * 1000, 1),
                "error": error,
            }
        )
    reachable = any(row["ok"] for row in tried)
    return {
        "host": host,
        "port": port,
        "reachable": reachable,
        "addresses": tried,
        "failed": [row["address"] for row in tried if not row["ok"]],
        "error": None if reachable or not tried else tried[0]["error"],
    }


def _interfaces(psutil: Any) -> list[dict[str, Any]]:
    addrs = psutil.net_if_addrs()
    stats = psutil.net_if_stats()
    link = getattr(psutil, "AF_LINK", -1)
    rows: list[dict[str, Any]] = []
    for name in sorted(set(addrs) | set(stats))[:MAX_INTERFACES]:
        stat = stats.get(name)
        ips: list[str] = []
        mac: str | None = None
        for addr in addrs.get(name, []):
            if addr.family == link:
                mac = str(addr.address)
            elif addr.family in (socket.AF_INET, socket.AF_INET6):
                ips.append(_with_prefix(str(addr.address), addr.netmask))
        rows.append(
            {
                "name": clip(name),
                "up": bool(stat.isup) if stat else None,
                "speed_mbps": int(stat.speed) if stat and stat.speed else None,
                "mtu": int(stat.mtu) if stat and stat.mtu else None,
                "addresses": ips[:MAX_ADDRESSES],
                "mac": mac,
            }
        )
    return rows


def _with_prefix(address: str, netmask: str | None) -> str:
    address = address.split("%", 1)[0]  # fe80::1%eth0 → fe80::1
    if not netmask:
        return address
    try:
        prefix = ipaddress.ip_network(f"0.0.0.0/{netmask}").prefixlen
    except ValueError:
        try:
            prefix = bin(int(ipaddress.ip_address(netmask))).count("1")
        except ValueError:
            return address
    return f"{address}/{prefix}"


def _default_route() -> dict[str, Any]:
    """The IPv4 and IPv6 default routes (gateway and interface), where the OS tells us."""
    if is_linux():
        return {"available": True, "ipv4": _linux_route4(), "ipv6": _linux_route6()}
    if sys.platform == "darwin" and which("route"):  # pragma: no cover - macOS
        try:
            text = run(["route", "-n", "get", "default"], 1.0)
        except Exception:
            return {"available": True, "ipv4": None, "ipv6": None}
        fields = dict(
            line.strip().split(": ", 1) for line in text.splitlines() if ": " in line.strip()
        )
        gateway = fields.get("gateway")
        route = {"gateway": gateway, "interface": fields.get("interface"), "metric": None}
        return {"available": True, "ipv4": route if gateway else None, "ipv6": None}
    return {"available": False, "reason": "not read on this platform", "ipv4": None, "ipv6": None}


def _linux_route4() -> dict[str, Any] | None:
    text = read_text("/proc/net/route") or ""
    best: dict[str, Any] | None = None
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 8 or cols[1] != "00000000" or cols[7] != "00000000":
            continue
        flags = int(cols[3], 16)
        if not flags & 0x1:  # RTF_UP
            continue
        gateway = socket.inet_ntoa(bytes.fromhex(cols[2])[::-1])
        metric = int(cols[6])
        if best is None or metric < best["metric"]:
            best = {"gateway": gateway, "interface": cols[0], "metric": metric}
    return best


def _linux_route6() -> dict[str, Any] | None:
    text = read_text("/proc/net/ipv6_route") or ""
    best: dict[str, Any] | None = None
    for line in text.splitlines():
        cols = line.split()
        if len(cols) < 10 or cols[0] != "0" * 32 or cols[1] != "00":
            continue
        if cols[9] == "lo" or not int(cols[8], 16) & 0x1:  # skip unreachable/lo entries
            continue
        hop = str(ipaddress.IPv6Address(bytes.fromhex(cols[4])))
        metric = int(cols[5], 16)
        if best is None or metric < best["metric"]:
            best = {"gateway": hop, "interface": cols[9], "metric": metric}
    return best


def _dns_config() -> dict[str, Any]:
    """Name servers and search domains from resolv.conf (and systemd-resolved's upstream)."""
    text = read_text("/etc/resolv.conf")
    if text is None:
        return {"available": False, "reason": "no /etc/resolv.conf", "servers": [], "search": []}
    servers, search = _parse_resolv(text)
    upstream: list[str] = []
    if servers and all(s.startswith("127.0.0.53") for s in servers):
        upstream, _ = _parse_resolv(read_text("/run/systemd/resolve/resolv.conf") or "")
    return {
        "available": True,
        "servers": servers[:MAX_ADDRESSES],
        "upstream": upstream[:MAX_ADDRESSES],
        "search": search[:MAX_ADDRESSES],
    }


def _parse_resolv(text: str) -> tuple[list[str], list[str]]:
    servers: list[str] = []
    search: list[str] = []
    for line in text.splitlines():
        cols = line.split("#", 1)[0].split()
        if len(cols) >= 2 and cols[0] == "nameserver":
            servers.append(clip(cols[1], 64))
        elif cols and cols[0] in ("search", "domain"):
            search.extend(clip(c, 128) for c in cols[1:])
    return servers, search


def _io_errors(psutil: Any) -> list[dict[str, Any]]:
    """Per-interface traffic and error counters since boot (only interfaces with traffic)."""
    try:
        counters = psutil.net_io_counters(pernic=True) or {}
    except (OSError, RuntimeError):
        return []
    rows = [
        {
            "interface": clip(name),
            "bytes_sent": int(io.bytes_sent),
            "bytes_recv": int(io.bytes_recv),
            "errors": int(io.errin + io.errout),
            "drops": int(io.dropin + io.dropout),
        }
        for name, io in counters.items()
        if io.bytes_sent or io.bytes_recv
    ]
    return rows[:MAX_INTERFACES]


def _sockets(psutil: Any) -> dict[str, Any]:
    """Listening ports and connection counts by state (TCP and UDP, IPv4 and IPv6)."""
    try:
        conns = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError) as exc:  # macOS needs root for this
        reason = f"not readable here: {type(exc).__name__}"
        return {"listening": None, "connections": None, "sockets_reason": reason}
    listening: dict[tuple[str, str, int], int | None] = {}
    states: Counter[str] = Counter()
    for conn in conns:
        if conn.type == socket.SOCK_STREAM:
            if conn.status == "LISTEN":
                listening.setdefault(("tcp", conn.laddr.ip, conn.laddr.port), conn.pid)
            else:
                states[str(conn.status)] += 1
        elif conn.type == socket.SOCK_DGRAM and conn.laddr and not conn.raddr:
            listening.setdefault(("udp", conn.laddr.ip, conn.laddr.port), conn.pid)
    names = _names({pid for pid in listening.values() if pid}, psutil)
    rows = [
        {
            "proto": proto,
            "address": address,
            "port": port,
            "pid": pid,
            "process": names.get(pid) if pid else None,
        }
        for (proto, address, port), pid in sorted(listening.items(), key=lambda kv: kv[0][2])
    ]
    return {
        "listening": rows[:MAX_LISTENING],
        "listening_count": len(rows),
        "connections": dict(states.most_common()),
    }


def _names(pids: set[int], psutil: Any) -> dict[int, str]:
    names: dict[int, str] = {}
    for pid in sorted(pids)[:MAX_LISTENING]:
        try:
            names[pid] = clip(psutil.Process(pid).name())
        except (psutil.Error, OSError):
            continue
    return names
