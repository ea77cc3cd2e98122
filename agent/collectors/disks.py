"""disks: usage and inodes per mounted filesystem, read-only mounts, I/O counters."""

from __future__ import annotations

import os
import re
from typing import Any, Final

from agent.collectors._common import Context, clip, pressure

MAX_PARTITIONS: Final = 50
MAX_DEVICES: Final = 20
#: Block devices that are not disks a customer has: loop mounts, RAM disks, device mapper
#: children are kept (LVM volumes are real).
_PSEUDO_DEVICE: Final = re.compile(r"^(loop|ram|zram|fd|sr)\d*")


def collect(ctx: Context) -> dict[str, Any]:
    import psutil

    partitions: list[dict[str, Any]] = []
    skipped = 0
    found = psutil.disk_partitions(all=False)
    for part in found[:MAX_PARTITIONS]:
        try:
            usage = _usage(part.mountpoint, psutil)
        except OSError:  # PermissionError included: unreadable or vanished mounts
            skipped += 1
            continue
        options = set(str(part.opts).split(","))
        partitions.append(
            {
                "mountpoint": clip(str(part.mountpoint)),
                "device": clip(str(part.device)),
                "fstype": clip(str(part.fstype)),
                "readonly": "ro" in options,
                **usage,
            }
        )
    return {
        "partitions": partitions,
        "skipped": skipped,
        "truncated": len(found) > MAX_PARTITIONS,
        "io": _io(psutil),
        "pressure": pressure("io"),
    }


def _usage(mountpoint: str, psutil: Any) -> dict[str, Any]:
    """Space (as ``df`` counts it: root's reserve is not free) and inodes, in one statvfs."""
    if not hasattr(os, "statvfs"):  # Windows: space only
        usage = psutil.disk_usage(mountpoint)
        return {
            "total": int(usage.total),
            "used": int(usage.used),
            "free": int(usage.free),
            "percent": float(usage.percent),
            "inodes_total": None,
            "inodes_used": None,
            "inodes_percent": None,
        }
    st = os.statvfs(mountpoint)
    total = st.f_blocks * st.f_frsize
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    free = st.f_bavail * st.f_frsize
    inodes_used = st.f_files - st.f_ffree
    return {
        "total": total,
        "used": used,
        "free": free,
        # psutil's and df's figure: what users may still write is what counts
        "percent": round(used / (used + free) * 100, 1) if used + free else 0.0,
        # some filesystems (btrfs, vfat) have no fixed inode table: they report 0
        "inodes_total": st.f_files or None,
        "inodes_used": inodes_used if st.f_files else None,
        "inodes_percent": round(inodes_used / st.f_files * 100, 1) if st.f_files else None,
    }


def _io(psutil: Any) -> list[dict[str, Any]] | None:
    """Cumulative I/O since boot per disk (the busiest first), or None if not readable."""
    try:
        counters = psutil.disk_io_counters(perdisk=True) or {}
    except (OSError, RuntimeError, NotImplementedError):
        return None
    rows: list[dict[str, Any]] = [
        {
            "device": clip(str(name)),
            "read_bytes": int(io.read_bytes),
            "write_bytes": int(io.write_bytes),
            "reads": int(io.read_count),
            "writes": int(io.write_count),
            "busy_ms": int(getattr(io, "busy_time", 0)) or None,
        }
        for name, io in counters.items()
        if not _PSEUDO_DEVICE.match(str(name))
    ]
    rows.sort(key=lambda row: int(row["read_bytes"]) + int(row["write_bytes"]), reverse=True)
    return rows[:MAX_DEVICES]
