"""memory: memory and swap use, swap traffic over the window, pressure (Linux PSI)."""

from __future__ import annotations

import time
from typing import Any

from agent.collectors._common import Context, pressure


def collect(ctx: Context) -> dict[str, Any]:
    import psutil

    vm = psutil.virtual_memory()
    swap = psutil.swap_memory()
    began = time.monotonic()
    ctx.wait_window()
    later = psutil.swap_memory()
    elapsed = max(time.monotonic() - began, 1e-3)
    return {
        "total": int(vm.total),
        "available": int(vm.available),
        "used": int(vm.used),
        "percent": float(vm.percent),
        "available_percent": round(vm.available / vm.total * 100, 1) if vm.total else None,
        "swap": {
            "total": int(swap.total),
            "used": int(swap.used),
            "percent": float(swap.percent),
            # bytes swapped in and out since boot, and per second over the window
            "in_total": int(swap.sin),
            "out_total": int(swap.sout),
            "in_per_s": round(max(0, later.sin - swap.sin) / elapsed),
            "out_per_s": round(max(0, later.sout - swap.sout) / elapsed),
        },
        "pressure": pressure("memory"),
    }
