"""What a peer's free-form JSON (a result's ``data``) may hold so that every store keeps it.

Parsing a frame accepts any JSON; storing it does not: SQLite and PostgreSQL hold integers
of 64 bits, the store's JSON encoder (orjson) refuses larger ones and writes NaN as null,
PostgreSQL refuses NUL in text, and very deep nesting exhausts encoders. The controller
checks a result with :func:`problem` on receipt and refuses one that fails, instead of
failing in the store halfway through (which closed the agent's session with 1011).
"""

from __future__ import annotations

import math
from typing import Any, Final

INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**63 - 1
#: far deeper than any snapshot (about 6 levels) and well inside orjson's limit (254)
MAX_DEPTH: Final = 64


def problem(value: Any, where: str = "data") -> str | None:
    """Why ``value`` cannot be stored as it is, naming where; None if it can."""
    stack: list[tuple[str, Any, int]] = [(where, value, 0)]
    while stack:
        path, item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"{_short(path)}: nested deeper than {MAX_DEPTH} levels"
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, int):
            if not INT_MIN <= item <= INT_MAX:
                return f"{_short(path)}: integer outside the 64-bit range"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"{_short(path)}: {item} is not a JSON number"
        elif isinstance(item, str):
            text_problem = _text(item)
            if text_problem:
                return f"{_short(path)}: {text_problem}"
        elif isinstance(item, dict):
            for key, inner in item.items():
                if not isinstance(key, str) or _text(key):
                    return f"{_short(path)}: a key that is not plain text"
                stack.append((f"{path}.{key}", inner, depth + 1))
        elif isinstance(item, list):
            stack.extend((f"{path}.{index}", inner, depth + 1) for index, inner in enumerate(item))
        else:
            return f"{_short(path)}: {type(item).__name__} is not JSON"
    return None


def _text(text: str) -> str | None:
    if "\x00" in text:
        return "text with a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "text with an unpaired surrogate"
    return None


def _short(path: str) -> str:
    return path if len(path) <= 120 else path[:58] + "…" + path[-58:]
