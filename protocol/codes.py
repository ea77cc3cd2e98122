"""What a session code looks like: the form both sides check, with no I/O.

A code is 10 symbols of Crockford's base32 (50 bits), shown as ``XXXXX-XXXXX``. The
alphabet has no I, L, O or U, and reading is forgiving: case, spaces and dashes are
ignored, O reads as 0 and I/L as 1. The agent checks the form before dialling, so a
mistyped code never costs the customer one of the controller's rate-limited attempts.
"""

from __future__ import annotations

from typing import Final

ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_SYMBOLS: Final = 10
#: told to a person whose code is not of this form
CODE_FORM: Final = (
    "a session code is 10 letters and digits, read as two groups of five (e.g. 7KQ2M-9XD4R); "
    "it has no U, and O, I and L read as 0, 1 and 1"
)
_READ_AS: Final = str.maketrans({"O": "0", "I": "1", "L": "1"})


def normalise(text: str) -> str | None:
    """The canonical symbols of a typed code, or None when it cannot be a code."""
    cleaned = "".join(text.split()).replace("-", "").upper().translate(_READ_AS)
    if len(cleaned) != CODE_SYMBOLS or any(c not in ALPHABET for c in cleaned):
        return None
    return cleaned
