"""Store calls that a cancelled caller cannot interrupt halfway.

When the task awaiting a query is cancelled (a technician's connection ends, an agent goes
away), SQLAlchemy's asyncio layer cannot roll the connection back cleanly: it terminates the
pooled connection, logs "Exception during reset" and leaves a close task behind; on SQLite a
connection cut inside ``BEGIN IMMEDIATE`` holds the write lock until that close runs. Each
store method is one short transaction, so the store lets it finish and only then passes the
cancellation on to the caller.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")
C = TypeVar("C", bound=type)


def finish_before_cancel(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """``method``, run to its end even when its caller is cancelled meanwhile."""

    @functools.wraps(method)
    async def finished(*args: Any, **kwargs: Any) -> T:
        inner = asyncio.ensure_future(method(*args, **kwargs))
        interrupted = False
        while not inner.done():
            try:
                await asyncio.shield(inner)
            except asyncio.CancelledError:
                if inner.cancelled():  # the loop itself is shutting down
                    raise
                interrupted = True
            except BaseException:  # ``inner.result()`` raises it again below
                break
        if interrupted:
            if not inner.cancelled():
                inner.exception()  # retrieved: nobody is left to read it
            raise asyncio.CancelledError
        return inner.result()

    return finished


def atomic_methods(cls: C) -> C:
    """Wrap every coroutine method ``cls`` defines itself with :func:`finish_before_cancel`."""
    for name, value in list(vars(cls).items()):
        if inspect.iscoroutinefunction(value):
            setattr(cls, name, finish_before_cancel(value))
    return cls
