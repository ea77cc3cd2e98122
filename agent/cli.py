"""``helpline-agent``: the customer's side. Join with a code, leave at any time.

Exit codes: 0 session ended (left, expired or ended by the technician); 1 unexpected error;
2 bad usage or config, or a code that is not of a code's form (nothing is sent); 4 the
controller refused (bad code, key mismatch, session over);
5 controller unreachable or its certificate does not match the pin; 6 you declined.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from agent.connection import ConsentReply
    from agent.fixes import FixQuestion  # imported when a fix is proposed, not at start
    from protocol.messages import ConsentRequest, Rating

from agent.config import CONFIG_ENV, AgentConfig, ConfigError, default_config_path

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
    Path | None,
    typer.Option(
        "--config",
        envvar=CONFIG_ENV,
        show_default=False,
        help="Agent config from your technician [default: the one built into this agent, "
        "else ./agent.toml].",
    ),
]


def _say(message: str) -> None:
    from protocol.text import visible

    # messages quote the controller (a reason, a refusal): shown, never obeyed
    print(visible(message), flush=True)


def _log_to_stderr() -> None:
    """Library warnings to stderr, escaped: they may quote what the controller sent."""
    import logging

    from protocol.text import SafeLogFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(SafeLogFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])


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


def _run(
    config_path: Path | None,
    home_option: Path | None,
    code: str | None,
    yes: bool,
    allow: tuple[str, ...] = (),
) -> int:
    from agent.connection import AgentRunner
    from agent.state import AgentHome, StateError

    _log_to_stderr()
    try:
        config = AgentConfig.load(config_path or default_config_path())
    except ConfigError as exc:
        _fail(str(exc))
    home = _home(home_option)
    assert isinstance(home, AgentHome)
    # A second agent on the same state would fight the first for the session link; the
    # lock closes the race between two that start at once, the pid names the one running.
    try:
        locked = home.lock()
    except StateError as exc:
        _fail(str(exc))
    if not locked:
        running = home.read_pid()
        _fail(
            f"an agent (pid {running or 'unknown'}) is already running from {home.path}; "
            "end it first with `helpline-agent leave`"
        )

    async def consent(request: ConsentRequest) -> ConsentReply:
        print(consent_screen(request), flush=True)
        if yes:
            print("Allowed (--yes).", flush=True)
            return "granted"
        print(
            f"Allow? [y/N] (no answer in {CONSENT_SECONDS:g} s counts as no) ", end="", flush=True
        )
        try:
            answer = await asyncio.wait_for(_read_line(), CONSENT_SECONDS)
        except TimeoutError:
            print("\nNo answer: declined.", flush=True)
            return "timed_out"
        if not answer:  # end of input: nobody at a terminal could answer
            return "no_input"
        return "granted" if answer.strip().lower() in ("y", "yes") else "declined"

    async def ask_fix(question: FixQuestion) -> bool:
        print(fix_screen(question), flush=True)
        print(
            f"Run it? [y/N] (no answer in {FIX_CONSENT_SECONDS:g} s counts as no) ",
            end="",
            flush=True,
        )
        try:
            answer = await asyncio.wait_for(_read_line(), FIX_CONSENT_SECONDS)
        except TimeoutError:
            print("\nNo answer: not run.", flush=True)
            return False
        return answer.strip().lower() in ("y", "yes")

    async def main() -> int:
        runner = AgentRunner(
            config,
            home,
            code=code,
            consent=consent,
            say=_say,
            ask_fix=ask_fix,
            allow=allow,
            rate=_rating_prompt(yes),
        )
        return await runner.run()

    try:
        return asyncio.run(main())
    except StateError as exc:
        _fail(str(exc))
    return 1


CONSENT_SECONDS = float(os.environ.get("HELPLINE_CONSENT_TIMEOUT", "300"))
RATING_SECONDS = float(os.environ.get("HELPLINE_RATING_TIMEOUT", "60"))


def _rating_prompt(yes: bool) -> Callable[[], Awaitable[Rating | None]]:
    """The question a customer who ends the session with Ctrl-C is asked: 1-5, a comment.

    Unattended (``--yes``, or no terminal on stdin) there is nobody to ask: no rating,
    and no wait.
    """

    async def rate() -> Rating | None:
        from protocol.messages import Rating

        if yes or not sys.stdin.isatty():
            return None
        print(
            "\nHow did it go? Rate the support from 1 (poor) to 5 (great), Enter to skip: ",
            end="",
            flush=True,
        )
        try:
            score = (await asyncio.wait_for(_read_line(), RATING_SECONDS)).strip()
            if score not in ("1", "2", "3", "4", "5"):
                print("No rating given.", flush=True)
                return None
            print("Anything to add? (Enter to skip): ", end="", flush=True)
            comment = (await asyncio.wait_for(_read_line(), RATING_SECONDS)).strip()
        except TimeoutError:
            print("\nNo rating given.", flush=True)
            return None
        print("Thank you.", flush=True)
        return Rating(score=int(score), comment=comment[:1000] or None)

    return rate


FIX_CONSENT_SECONDS = float(os.environ.get("HELPLINE_FIX_CONSENT_TIMEOUT", "120"))


_lines: asyncio.Queue[str] | None = None


async def _read_line() -> str:
    """The next line the customer types, without blocking the loop or pinning it at exit.

    One daemon thread reads stdin for the whole run (an unanswered prompt must not keep
    the process alive), and every prompt first throws away lines typed before it was
    shown: a late "y" to an expired question must never answer the next one.
    """
    global _lines
    if _lines is None:
        import threading

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str] = asyncio.Queue()

        def read() -> None:
            while True:
                line = sys.stdin.readline()
                loop.call_soon_threadsafe(queue.put_nowait, line)
                if not line:  # end of input: every later prompt reads "" (a no)
                    return

        threading.Thread(target=read, daemon=True).start()
        _lines = queue
    while not _lines.empty():
        stale = _lines.get_nowait()
        if not stale:
            return ""
    line = await _lines.get()
    if not line:
        _lines.put_nowait("")  # keep end of input visible to the next prompt
    return line


SCOPE_TEXT = {
    "diagnostics:read": "read diagnostics (system, CPU, memory, disks, network, processes, "
    "services, error logs, clock, pending updates, battery, sensors; secrets masked)",
    "fixes:propose": "propose fixes from the signed catalogue (each runs only if you say yes "
    "to it, or allowed it in advance)",
}

#: how much of each remote text a prompt shows: every value stays on one line of a usual
#: terminal, so what the customer is asked to allow cannot be pushed off the screen
SHOW_NAME, SHOW_TITLE, SHOW_VALUE = 60, 100, 200


def consent_screen(request: ConsentRequest) -> str:
    """The session question: the technician's text one clipped line each, then our own.

    Everything the technician typed (name, ticket title, customer) is shown with its
    control characters made visible and on its own line; what the session may do is
    written by this agent from its own table, last, right above the question, so no
    title can forge or hide it.
    """
    from protocol.text import one_line

    who = request.technician
    level = f" ({one_line(who.level, 8)})" if who.level else ""
    ticket = request.ticket
    scopes = [SCOPE_TEXT.get(s) or f"unknown permission {one_line(s, 40)}" for s in request.scopes]
    return "\n".join(
        [
            "",
            "A helpline technician asks to connect to this machine.",
            f"  technician: {one_line(who.name, SHOW_NAME)}{level}",
            f"  ticket:     {one_line(ticket.id, 32)} \u2014 {one_line(ticket.title, SHOW_TITLE)}",
            f"  customer:   {one_line(ticket.customer, SHOW_NAME)}",
            f"  until:      {request.expires_at:%Y-%m-%d %H:%M} UTC (or until you end it)",
            f"  may only:   {scopes[0] if scopes else 'nothing'}",
            *(f"              {scope}" for scope in scopes[1:]),
            "",
        ]
    )


def fix_screen(question: FixQuestion) -> str:
    """The fix question, shown the same way: remote text one visible line each."""
    from protocol.text import one_line

    fix = question.fix
    level = f" ({one_line(question.level, 8)})" if question.level else ""
    lines = [
        "",
        f"The technician {one_line(question.technician, SHOW_NAME)}{level} proposes a fix for "
        f"{one_line(question.ticket, 32)} \u2014 {one_line(question.ticket_title, SHOW_TITLE)}:",
        f"  {one_line(fix.title, SHOW_TITLE)}",
        *(f"  {one_line(line, SHOW_VALUE)}" for line in fix.description.splitlines()),
    ]
    for name, value in question.values.items():
        lines.append(f"  {one_line(name, SHOW_NAME)} = {one_line(value, SHOW_VALUE)}")
        if name in question.notes:
            lines.append(f"      ({one_line(question.notes[name], SHOW_VALUE)})")
    lines.append(
        f"  can be undone: {'yes' if fix.reversible or fix.undo else 'no'}"
        f"{'; needs administrator rights' if fix.needs_root else ''}"
    )
    return "\n".join(lines)


@app.command()
def join(
    code: Annotated[str, typer.Argument(help="The session code your technician read to you.")],
    config: ConfigOpt = None,
    home: HomeOpt = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Consent to the session without asking (not to fixes).")
    ] = False,
    allow: Annotated[
        list[str] | None,
        typer.Option("--allow", help="Pre-approve a fix by id for this session (repeatable)."),
    ] = None,
) -> None:
    """Join a support session with a code; stays connected until you end it."""
    from protocol.codes import CODE_FORM, normalise

    if normalise(code) is None:
        # refused here: a typo sent to the controller would use up one of the few
        # attempts a minute it allows from this address
        _fail(f"{code!r} is not a session code: {CODE_FORM}")
    raise SystemExit(_run(config, home, code, yes, tuple(allow or ())))


@app.command()
def resume(config: ConfigOpt = None, home: HomeOpt = None) -> None:
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
