"""``helpline-agent``: the customer's side. Join with a code, leave at any time.

Exit codes: 0 session ended (left, expired or ended by the technician); 1 unexpected error;
2 bad usage or config; 4 the controller refused (bad code, key mismatch, session over);
5 controller unreachable or its certificate does not match the pin; 6 you declined.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from agent.config import AgentConfig, ConfigError

app = typer.Typer(
    name="helpline-agent",
    help="Let a helpline technician diagnose this machine, with your consent.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home",
        envvar="HELPLINE_AGENT_HOME",
        show_default=False,
        help="Agent state directory (keys, outbox).",
    ),
]
ConfigOpt = Annotated[
    Path, typer.Option("--config", help="Agent config from your technician (agent.toml).")
]


def _say(message: str) -> None:
    print(message, flush=True)


def _home(option: Path | None) -> object:
    from agent.state import AgentHome, StateError

    home = AgentHome(option) if option is not None else AgentHome.default()
    try:
        home.ensure()
    except StateError as exc:
        _fail(str(exc))
    return home


def _fail(message: str, status: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(status)


def _run(config_path: Path, home_option: Path | None, code: str | None, yes: bool) -> int:
    from agent.connection import AgentRunner
    from agent.state import AgentHome, StateError
    from protocol.messages import ConsentRequest

    try:
        config = AgentConfig.load(config_path)
    except ConfigError as exc:
        _fail(str(exc))
    home = _home(home_option)
    assert isinstance(home, AgentHome)

    async def consent(request: ConsentRequest) -> bool:
        level = f" ({request.technician.level})" if request.technician.level else ""
        print(
            "\nA helpline technician asks to connect to this machine.\n"
            f"  technician: {request.technician.name}{level}\n"
            f"  ticket:     {request.ticket.id} \u2014 {request.ticket.title} "
            f"[{request.ticket.customer}]\n"
            f"  may:        {', '.join(SCOPE_TEXT.get(s, s) for s in request.scopes)}\n"
            f"  until:      {request.expires_at:%Y-%m-%d %H:%M} UTC (or until you end it)\n",
            flush=True,
        )
        if yes:
            print("Allowed (--yes).", flush=True)
            return True
        print(
            f"Allow? [y/N] (no answer in {CONSENT_SECONDS:g} s counts as no) ", end="", flush=True
        )
        try:
            answer = await asyncio.wait_for(_read_line(), CONSENT_SECONDS)
        except TimeoutError:
            print("\nNo answer: declined.", flush=True)
            return False
        return answer.strip().lower() in ("y", "yes")

    async def main() -> int:
        return await AgentRunner(config, home, code=code, consent=consent, say=_say).run()

    try:
        return asyncio.run(main())
    except StateError as exc:
        _fail(str(exc))
    return 1


CONSENT_SECONDS = float(os.environ.get("HELPLINE_CONSENT_TIMEOUT", "300"))


def _settle(future: asyncio.Future[str], value: str) -> None:
    if not future.done():
        future.set_result(value)


async def _read_line() -> str:
    """One line from stdin without blocking the loop or pinning it at exit.

    A daemon thread, not ``asyncio.to_thread``: an unanswered prompt must not keep the
    process alive after the session is over.
    """
    import threading

    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()

    def read() -> None:
        line = sys.stdin.readline()  # "" at end of input: no answer is a no
        loop.call_soon_threadsafe(_settle, answer, line)

    threading.Thread(target=read, daemon=True).start()
    return await answer


SCOPE_TEXT = {"diagnostics:read": "read diagnostics (system, CPU, memory, disks, processes)"}


@app.command()
def join(
    code: Annotated[str, typer.Argument(help="The session code your technician read to you.")],
    config: ConfigOpt = Path("agent.toml"),
    home: HomeOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help="Consent without asking.")] = False,
) -> None:
    """Join a support session with a code; stays connected until you end it."""
    raise SystemExit(_run(config, home, code, yes))


@app.command()
def resume(config: ConfigOpt = Path("agent.toml"), home: HomeOpt = None) -> None:
    """Reconnect to the session this agent already joined (no new code)."""
    raise SystemExit(_run(config, home, None, False))


@app.command()
def leave(
    home: HomeOpt = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the agent to stop.")] = 10.0,
) -> None:
    """End the running session from another terminal."""
    import signal

    from agent.state import AgentHome

    state = _home(home)
    assert isinstance(state, AgentHome)
    pid = state.read_pid()
    if pid is None:
        _fail("no helpline agent is running from this state directory", 3)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if state.read_pid() is None:
            print("session ended", flush=True)
            return
        time.sleep(0.1)
    _fail(f"the agent (pid {pid}) did not stop within {wait:g} s", 1)


@app.command()
def status(home: HomeOpt = None) -> None:
    """Show whether an agent is running here and which session it holds."""
    import json

    from agent.state import AgentHome

    state = _home(home)
    assert isinstance(state, AgentHome)
    print(
        json.dumps(
            {
                "running_pid": state.read_pid(),
                "session": state.load_session(),
                "outbox": len(state.outbox_pending()),
            },
            indent=2,
        )
    )


def run() -> None:
    """Console-script entry point."""
    app()
