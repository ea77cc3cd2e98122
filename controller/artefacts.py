"""The agents this controller has built (``helpline package``), recorded in its home.

An agent carries the fix-catalogue key that was published when it was built, and a
``.pyz`` or ``.deb`` built before ``fixes publish`` carries none: it refuses every fix.
So each build is recorded in ``HOME/artefacts.json`` with the key it carries; ``fixes
publish`` names the ones that no longer fit, and ``helpline code`` prints the join command
for the kinds that exist (a recorded file that is gone no longer counts).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

KINDS: Final = ("pyz", "deb", "pip")
#: what the customer types, per kind of agent
JOIN: Final = {
    "pyz": "python3 helpline-agent.pyz join {code}",
    "deb": "sudo helpline-agent join {code}",
    "pip": "helpline-agent join {code} --config agent.toml",
}
_FILE: Final = "artefacts.json"


def _path(home: Path) -> Path:
    return home / _FILE


def _read(home: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(_path(home).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []  # none recorded yet, or unreadable: nothing to point at
    return [x for x in data if isinstance(x, dict)] if isinstance(data, list) else []


def record(home: Path, kind: str, path: Path, sha256: str, fix_key: str | None) -> None:
    """Remember one build (the newest per path wins)."""
    where = str(path.resolve())
    items = [x for x in _read(home) if x.get("path") != where]
    items.append(
        {
            "kind": kind,
            "path": where,
            "sha256": sha256,
            "fix_key": fix_key,
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    tmp = _path(home).with_suffix(".tmp")
    tmp.write_text(json.dumps(items, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, _path(home))


def existing(home: Path) -> list[dict[str, Any]]:
    """The recorded builds whose file is still there, oldest first."""
    return [x for x in _read(home) if Path(str(x.get("path"))).exists()]


def kinds(home: Path) -> list[str]:
    """The kinds of agent built here and still on disk, newest first."""
    seen: list[str] = []
    for item in reversed(existing(home)):
        if item.get("kind") in KINDS and item["kind"] not in seen:
            seen.append(item["kind"])
    return seen


def stale(home: Path, fix_key: str) -> list[dict[str, Any]]:
    """The builds on disk that carry another catalogue key than ``fix_key`` (or none)."""
    return [x for x in existing(home) if x.get("fix_key") != fix_key]
