"""system: OS, kernel, hostname, uptime, timezone, logged-in users, pending reboot."""

from __future__ import annotations

import os
import platform
import socket
import time
from typing import Any, Final

from agent.collectors._common import Context, clip, is_linux, iso, read_text

MAX_USERS: Final = 20


def collect(ctx: Context) -> dict[str, Any]:
    import psutil

    boot = float(psutil.boot_time())
    users = psutil.users()
    reboot, reboot_reason = pending_reboot()
    return {
        "os": platform.system(),
        "os_release": _os_release(),
        "os_version": clip(platform.version()),
        "platform": clip(platform.platform()),
        "hostname": clip(socket.gethostname()),
        "kernel": clip(platform.release()),
        "architecture": platform.machine(),
        "python": platform.python_version(),
        "boot_time": iso(boot),
        "uptime_seconds": max(0, int(time.time() - boot)),
        "timezone": _timezone(),
        "users": len({str(user.name) for user in users}),
        "user_sessions": len(users),
        "logged_in": [
            {
                "name": clip(str(user.name)),
                "terminal": clip(str(user.terminal)) if user.terminal else None,
                "host": clip(str(user.host)) if user.host else None,
                "since": iso(float(user.started)),
            }
            for user in users[:MAX_USERS]
        ],
        "pending_reboot": reboot,
        "pending_reboot_reason": reboot_reason,
    }


def _os_release() -> str:
    """The distribution or product name people recognise, e.g. "Debian GNU/Linux 12"."""
    system = platform.system()
    if system == "Linux":
        try:
            info = platform.freedesktop_os_release()
        except OSError:
            return clip(platform.release())
        return clip(info.get("PRETTY_NAME") or info.get("NAME") or "Linux")
    if system == "Darwin":
        return f"macOS {platform.mac_ver()[0]}".strip()
    if system == "Windows":
        release, version, _, _ = platform.win32_ver()
        parts = ("Windows", release, platform.win32_edition() or "", f"({version})")
        return clip(" ".join(part for part in parts if part))
    return clip(platform.release())


def _timezone() -> dict[str, Any]:
    """The zone name when the system names one (Europe/Berlin), and the UTC offset now."""
    local = time.localtime()
    name = os.environ.get("TZ") or None
    if name is None:
        try:
            target = os.readlink("/etc/localtime")
        except OSError:
            target = ""
        if "zoneinfo/" in target:
            name = target.split("zoneinfo/", 1)[1]
    if name is None:
        text = read_text("/etc/timezone")
        name = text.strip() if text else None
    return {
        "name": clip(name or local.tm_zone or time.tzname[0]),
        "abbreviation": local.tm_zone,
        "utc_offset_minutes": (local.tm_gmtoff or 0) // 60,
    }


def pending_reboot() -> tuple[bool | None, str | None]:
    """Whether the machine waits for a reboot to finish an update; None when unknown."""
    if is_linux():
        if os.path.exists("/var/run/reboot-required"):
            pkgs = read_text("/var/run/reboot-required.pkgs", 4096) or ""
            names = sorted({line.strip() for line in pkgs.splitlines() if line.strip()})
            suffix = f" ({', '.join(names[:5])})" if names else ""
            return True, clip(f"the package manager asks for a reboot{suffix}")
        # An updated kernel removed the running kernel's modules: the next module load
        # fails until the machine boots the new kernel.
        if os.path.isdir("/lib/modules") and not os.path.isdir(
            f"/lib/modules/{platform.release()}"
        ):
            return True, "the running kernel is no longer installed (a newer one is)"
        return False, None
    if platform.system() == "Windows":
        return _windows_pending_reboot()
    return None, None


def _windows_pending_reboot() -> tuple[bool | None, str | None]:  # pragma: no cover - Windows
    try:
        import winreg
    except ImportError:
        return None, None
    reg: Any = winreg  # typeshed declares winreg for Windows only
    keys = (
        r"SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending",
        r"SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired",
    )
    for key in keys:
        try:
            reg.CloseKey(reg.OpenKey(reg.HKEY_LOCAL_MACHINE, key))
        except OSError:
            continue
        return True, "Windows Update asks for a reboot"
    return False, None
