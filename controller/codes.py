"""Session codes: generation, phone-friendly normalisation, keyed hashing, rate limits.

A code is 10 symbols of Crockford's base32 (50 bits), shown as ``XXXXX-XXXXX``. The
alphabet has no I, L, O or U, and reading is forgiving: case, spaces and dashes are
ignored, O reads as 0 and I/L as 1, so what a customer reads over the phone is what the
technician typed. The store only ever sees ``HMAC-SHA256(pepper, code)``; the pepper lives
in the controller home, so a leaked database alone does not let anyone test codes offline.
"""

from __future__ import annotations

import asyncio
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
    """Limits on failed code attempts: a hard one per source, a slowdown overall.

    Per source (the caller passes an IPv4 address or an IPv6 /64): after ``per_source``
    failures within ``window_seconds`` the source is refused until the window moves on.
    Attempts still being checked hold a slot of that budget, so a burst of simultaneous
    guesses from one address waits for the earlier ones instead of all passing the
    check at once; only failures are recorded, so right codes never use the budget up.

    Overall: past ``global_limit`` failures within the window every attempt is delayed by
    ``slow_seconds`` before it is checked. Nobody is refused for what other addresses
    did: a guesser elsewhere can slow customers down by a second, never lock them out
    (the README's "Guessing, and why nobody is locked out" works out the odds).
    """

    per_source: int = 5
    global_limit: int = 100
    window_seconds: float = 60.0
    slow_seconds: float = 1.0
    _by_source: dict[str, deque[float]] = field(default_factory=dict)
    _all: deque[float] = field(default_factory=deque)
    _in_flight: dict[str, int] = field(default_factory=dict)
    _waiters: dict[str, list[asyncio.Future[None]]] = field(default_factory=dict)

    def _prune(self, stamps: deque[float], now: float) -> None:
        while stamps and now - stamps[0] > self.window_seconds:
            stamps.popleft()

    def blocked(self, source: str, now: float | None = None) -> str | None:
        """Why ``source`` may not try a code now, or None when it may."""
        now = time.monotonic() if now is None else now
        stamps = self._by_source.get(source)
        if stamps is not None:
            self._prune(stamps, now)
            if len(stamps) >= self.per_source:
                return "too many failed code attempts from this address; try again in a minute"
        return None

    def slowdown(self, now: float | None = None) -> float:
        """Seconds to wait before checking a code: 0 unless failures overall run high."""
        now = time.monotonic() if now is None else now
        self._prune(self._all, now)
        return self.slow_seconds if len(self._all) >= self.global_limit else 0.0

    def failed(self, source: str, now: float | None = None) -> None:
        """Record one failed attempt from ``source``."""
        now = time.monotonic() if now is None else now
        self._all.append(now)
        self._prune(self._all, now)
        self._by_source.setdefault(source, deque()).append(now)
        if len(self._by_source) > 10_000:
            # bound memory under a spray from many addresses: forget the ones whose
            # attempts have all left the window
            for key, stamps in list(self._by_source.items()):
                self._prune(stamps, now)
                if not stamps and not self._in_flight.get(key):
                    del self._by_source[key]

    async def begin(self, source: str) -> str | None:
        """Wait for a slot to check a code from ``source``; the refusal, or None.

        After None the caller must call :meth:`end` once the attempt is decided.
        """
        if (refusal := self.blocked(source)) is not None:
            return refusal
        if delay := self.slowdown():
            await asyncio.sleep(delay)
        while True:
            if (refusal := self.blocked(source)) is not None:
                return refusal
            used = len(self._by_source.get(source, ())) + self._in_flight.get(source, 0)
            if used < self.per_source:
                self._in_flight[source] = self._in_flight.get(source, 0) + 1
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(source, []).append(waiter)
            await waiter

    def end(self, source: str, *, failed: bool) -> None:
        """An attempt from ``source`` was decided; record it if it failed."""
        left = self._in_flight.get(source, 1) - 1
        if left:
            self._in_flight[source] = left
        else:
            self._in_flight.pop(source, None)
        if failed:
            self.failed(source)
        for waiter in self._waiters.pop(source, []):
            if not waiter.done():
                waiter.set_result(None)
