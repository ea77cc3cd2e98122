"""Session codes: generation, phone-friendly normalisation, keyed hashing, rate limits.

A code is 10 symbols of Crockford's base32 (50 bits), shown as ``XXXXX-XXXXX``. The
alphabet has no I, L, O or U, and reading is forgiving: case, spaces and dashes are
ignored, O reads as 0 and I/L as 1, so what a customer reads over the phone is what the
technician typed. The store only ever sees ``HMAC-SHA256(pepper, code)``; the pepper lives
in the controller home, so a leaked database alone does not let anyone test codes offline.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Final

# the form of a code is the protocol's: the agent checks it too, before dialling
from protocol.codes import ALPHABET as ALPHABET
from protocol.codes import CODE_SYMBOLS as CODE_SYMBOLS
from protocol.codes import normalise as normalise

CODE_BITS: Final = CODE_SYMBOLS * 5


def new_code() -> str:
    """A fresh random code, formatted for reading aloud."""
    symbols = "".join(secrets.choice(ALPHABET) for _ in range(CODE_SYMBOLS))
    return f"{symbols[:5]}-{symbols[5:]}"


def code_hash(pepper: bytes, canonical: str) -> bytes:
    """The keyed hash under which a code is stored and looked up."""
    return hmac.new(pepper, canonical.encode("ascii"), sha256).digest()


@dataclass
class FailureLimiter:
    """Sliding-window limits on failed code attempts, per source address and overall.

    Only failures count, so a customer who types their code right is never slowed by an
    attacker elsewhere until the global window fills; the global limit bounds what a
    distributed guesser can try (about ``global_limit`` guesses per window against 2**50).
    """

    per_source: int = 5
    global_limit: int = 100
    window_seconds: float = 60.0
    _by_source: dict[str, deque[float]] = field(default_factory=dict)
    _all: deque[float] = field(default_factory=deque)

    def _prune(self, stamps: deque[float], now: float) -> None:
        while stamps and now - stamps[0] > self.window_seconds:
            stamps.popleft()

    def blocked(self, source: str, now: float | None = None) -> str | None:
        """Why ``source`` may not try a code now, or None when it may."""
        now = time.monotonic() if now is None else now
        self._prune(self._all, now)
        if len(self._all) >= self.global_limit:
            return "too many failed code attempts on this controller; try again in a minute"
        stamps = self._by_source.get(source)
        if stamps is not None:
            self._prune(stamps, now)
            if len(stamps) >= self.per_source:
                return "too many failed code attempts from this address; try again in a minute"
        return None

    def failed(self, source: str, now: float | None = None) -> float:
        """Record one failed (or not yet decided) attempt from ``source``; returns its stamp."""
        now = time.monotonic() if now is None else now
        self._all.append(now)
        self._by_source.setdefault(source, deque()).append(now)
        if len(self._by_source) > 10_000:
            # bound memory under a spray from many addresses: forget the ones whose
            # attempts have all left the window
            for key, stamps in list(self._by_source.items()):
                self._prune(stamps, now)
                if not stamps:
                    del self._by_source[key]
        return now

    def forgive(self, source: str, stamp: float) -> None:
        """Take back an attempt counted in advance that turned out to be right."""
        for stamps in (self._all, self._by_source.get(source)):
            if stamps is not None and stamp in stamps:
                stamps.remove(stamp)
