"""What every ``helpline`` command shares: options, and the connect-and-call wrapper."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from controller.cli.output import fail
from controller.client import ClientError, Connection, load_client_settings

if TYPE_CHECKING:
    from protocol.calls import Call

T = TypeVar("T")
C = TypeVar("C", bound="Call[Any]")

HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home", envvar="HELPLINE_HOME", help="Controller home directory.", show_default=False
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
TicketArg = Annotated[str, typer.Argument(help="Ticket id, e.g. T-1.")]

#: a technician's stored login meets another certificate (the agent's advice fits customers)
STORED_PIN_ADVICE = (
    "If the controller was re-installed, log in again with the pin its admin gives you "
    "(helpline login --pin …); otherwise someone may be intercepting the connection."
)
#: a technician logging in with a --pin that does not match
LOGIN_PIN_ADVICE = (
    "Check the --pin: it is the certificate fingerprint that `helpline agent-config` "
    "prints on the controller (ask your admin). If it is right, someone may be "
    "intercepting the connection."
)


def run_client(home: Path | None, work: Callable[[Connection], Awaitable[T]]) -> T:
    """Connect to the controller, authenticate, run ``work``; map failures to exit codes."""
    from protocol.signing import PinMismatch

    async def main() -> T:
        settings = load_client_settings(home)
        async with Connection(settings) as connection:
            return await work(connection)

    try:
        return asyncio.run(main())
    except ClientError as exc:
        fail(exc.code, exc.message)
    except PinMismatch as exc:
        fail("pin_mismatch", exc.explain(STORED_PIN_ADVICE))


def make(call: type[C], **fields: Any) -> C:
    """The call ``call`` with ``fields``, checked here: a bad value is a usage error (exit 2)
    before anything is sent."""
    from pydantic import ValidationError

    from protocol.calls import explain

    try:
        return call.model_validate(fields)
    except ValidationError as exc:
        fail("bad_request", explain(exc))


def parse_duration(text: str) -> int:
    """A duration option to seconds, or a usage error."""
    from controller.home import parse_duration as parse

    try:
        return parse(text)
    except ValueError as exc:
        fail("bad_request", str(exc))
