"""``helpline``: set up and run a controller, and work tickets against it."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from controller.cli.audit import audit_app
from controller.cli.common import (
    LOGIN_PIN_ADVICE,
    HomeOpt,
    JsonOpt,
    TicketArg,
    make,
    parse_duration,
    run_client,
)
from controller.cli.diag import diag_app
from controller.cli.fixes import fix as fix_command
from controller.cli.fixes import fixes_app
from controller.cli.kb import kb_app
from controller.cli.output import emit, fail, stderr, stdout
from controller.cli.package import package_app
from controller.cli.tickets import (
    report,
    sessions_table,
    sla_app,
    ticket_app,
)
from controller.cli.webhooks import webhook_app
from controller.client import ClientError, ClientSettings, Connection
from protocol.calls.sessions import AgentPing, CodeIssue, SessionEnd, SessionsList
from protocol.calls.users import UserAdd, UserInfo, UserList, UserRemove, UserSetRole, Whoami

T = TypeVar("T")

app = typer.Typer(
    name="helpline",
    help="Remote support over pinned TLS: controller, technician and admin CLI.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
user_app = typer.Typer(help="Enrol technicians, admins and auditors.", no_args_is_help=True)
app.add_typer(ticket_app, name="ticket")  # controller/cli/tickets.py, like sla and report
app.add_typer(user_app, name="user")
app.add_typer(audit_app, name="audit")  # controller/cli/audit.py
app.add_typer(diag_app, name="diag")  # controller/cli/diag.py
app.add_typer(fixes_app, name="fixes")  # controller/cli/fixes.py
app.command("fix")(fix_command)
app.add_typer(package_app, name="package")  # controller/cli/package.py
app.add_typer(kb_app, name="kb")  # controller/cli/kb.py
app.add_typer(webhook_app, name="webhook")  # controller/cli/webhooks.py
app.add_typer(sla_app, name="sla")
app.command("report")(report)

# -- controller setup -----------------------------------------------------------------


@app.command()
def init(
    url: Annotated[str, typer.Option(help="Address agents dial: wss://HOST:PORT.")],
    home: HomeOpt = None,
    listen: Annotated[str | None, typer.Option(help="HOST:PORT to bind, if not the URL's.")] = None,
    name: Annotated[str, typer.Option(help="Name shown to customers.")] = "helpline",
    admin_name: Annotated[str, typer.Option(help="Name of the first admin.")] = "admin",
    admin_key: Annotated[
        Path | None,
        typer.Option(help="The first admin's SSH public key; default: make one in the home."),
    ] = None,
    grant: Annotated[
        str, typer.Option(help="How long a customer's consent lasts: 30m, 2h…")
    ] = "2h",
    as_json: JsonOpt = False,
) -> None:
    """Create a controller home: TLS identity, database, first admin."""
    from controller.home import ControllerHome, HomeError
    from controller.setup import initialise

    target = ControllerHome.resolve(home)
    if target.exists:
        # checked before anything is written: a second init must never touch the first
        fail("conflict", f"{target.path} already holds a controller; use another --home")
    try:
        result = asyncio.run(
            initialise(target, url, listen, name, admin_name, admin_key, parse_duration(grant))
        )
    except HomeError as exc:  # lost a race with another init of the same home
        fail("conflict", str(exc))
    except (ValueError, OSError) as exc:
        fail("bad_request", str(exc))

    def render(data: dict[str, Any]) -> None:
        stdout.print(f"[green]controller home created[/] at {data['home']}")
        stdout.print(f"  agents dial   {data['url']}")
        stdout.print(f"  certificate   sha256:{data['pin']}")
        stdout.print(f"  first admin   {data['admin']} ({data['admin_key']})")
        stdout.print(
            "next: [bold]helpline serve[/] and [bold]helpline agent-config --out agent.toml[/]"
        )

    emit(result, as_json, render)


@app.command()
def serve(
    home: HomeOpt = None,
    listen: Annotated[str | None, typer.Option(help="HOST:PORT to bind instead.")] = None,
    log_format: Annotated[
        str, typer.Option("--log-format", help="text (key=value) or json (one object a line).")
    ] = "text",
) -> None:
    """Run the controller until interrupted; one log line per join, resume, refusal,
    failed code, request and error on stderr."""
    import logging

    from controller import logs
    from controller.home import ControllerHome, HomeError, HomeInUse, parse_listen
    from controller.serve import run_server

    debug = bool(os.environ.get("HELPLINE_DEBUG"))
    try:
        logs.configure(log_format, debug=debug)
    except ValueError as exc:
        fail("bad_request", str(exc))
    if not debug:
        # "connection open/closed" for every agent: 60,000 lines when 10,000 reconnect;
        # who connected, resumed and left is in the audit log already
        logging.getLogger("websockets.server").setLevel(logging.WARNING)
    target = ControllerHome.resolve(home)
    try:
        asyncio.run(run_server(target, parse_listen(listen) if listen else None))
    except HomeInUse as exc:
        fail("conflict", str(exc))
    except (HomeError, ValueError) as exc:
        fail("not_configured", str(exc))
    except OSError as exc:
        fail("unreachable", f"cannot listen: {exc}")


@app.command("agent-config")
def agent_config(
    out: Annotated[Path, typer.Option(help="Where to write the agent config (TOML).")],
    unattended: Annotated[
        list[str] | None,
        typer.Option(help="A fix this (managed) agent runs without asking; repeatable."),
    ] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write what an agent needs: controller URL, certificate pin, catalogue key."""
    import tomli_w

    from controller.catalogue import PublishedCatalogue
    from controller.home import ControllerHome, HomeError

    target = ControllerHome.resolve(home)
    try:
        config = target.load()
    except HomeError as exc:
        fail("not_configured", str(exc))
    data: dict[str, Any] = {"url": config.url, "pin": target.pin()}
    fix_key = PublishedCatalogue(target.path).key()
    if fix_key:
        data["fix_key"] = fix_key  # without it the agent runs no fixes at all
    if unattended:
        data["unattended"] = list(unattended)
    out.write_text(tomli_w.dumps(data))
    emit(
        {**data, "path": str(out)},
        as_json,
        lambda d: stdout.print(f"agent config written to {d['path']} (pin sha256:{d['pin']})"),
    )


@app.command()
def login(
    url: Annotated[str, typer.Option(help="Controller URL, wss://HOST:PORT.")],
    pin: Annotated[str, typer.Option(help="The controller certificate's SHA-256.")],
    key: Annotated[str, typer.Option(help="SSH private key, or a .pub held by ssh-agent.")],
    as_json: JsonOpt = False,
) -> None:
    """Store a remote technician's settings and check they work."""
    from controller.client import default_client_config, save_client_settings
    from controller.home import parse_ws_url
    from protocol.signing import normalise_pin

    try:
        parse_ws_url(url)
        settings = ClientSettings(url=url, pin=normalise_pin(pin), key=key)
    except ValueError as exc:
        fail("bad_request", str(exc))

    async def check() -> UserInfo:
        async with Connection(settings) as connection:
            return await connection.request(Whoami())

    from protocol.signing import PinMismatch

    try:
        me = asyncio.run(check())
    except ClientError as exc:
        fail(exc.code, exc.message)
    except PinMismatch as exc:
        fail("pin_mismatch", exc.explain(LOGIN_PIN_ADVICE))
    path = default_client_config()
    save_client_settings(settings, path)
    emit(
        {**me.model_dump(mode="json"), "config": str(path)},
        as_json,
        lambda d: stdout.print(f"logged in as {d['name']} ({d['role']}); saved to {d['config']}"),
    )


@app.command()
def code(
    ticket: TicketArg,
    lifetime: Annotated[
        str, typer.Option(help="How long the code is valid: 30s, 10m, 1h (at most 24h).")
    ] = "10m",
    for_: Annotated[
        str | None,
        typer.Option(
            "--for",
            help="What the customer has: pyz, deb or pip (default: the agents built here).",
        ),
    ] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Issue a single-use session code for a ticket; read it to the customer."""
    from controller.artefacts import JOIN, KINDS

    if for_ is not None and for_ not in KINDS:
        fail("bad_request", f"--for is one of {', '.join(KINDS)}, not {for_!r}")
    seconds = parse_duration(lifetime)
    issued = run_client(home, lambda c: c.request(make(CodeIssue, ticket=ticket, seconds=seconds)))
    # --for, else every kind built on the controller, else a pip-installed agent
    chosen = [for_] if for_ else [k for k in issued.agents if k in KINDS] or ["pip"]
    data = {
        **CodeIssue.dump_result(issued),
        "join": {kind: JOIN[kind].format(code=issued.code) for kind in chosen},
    }

    def render(d: dict[str, Any]) -> None:
        stdout.print(
            f"session code for T-{issued.ticket}: [bold]{issued.code}[/] "
            f"(single use, expires {issued.expires_at:%H:%M:%S} UTC)"
        )
        label = {"pyz": "the single file", "deb": "the .deb", "pip": "installed with pip"}
        for kind, command in d["join"].items():
            stdout.print(f"the customer runs: {command}   [dim]({label[kind]})[/]", soft_wrap=True)

    emit(data, as_json, render)


@app.command()
def sessions(
    all_: Annotated[bool, typer.Option("--all", help="Include ended sessions.")] = False,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List live sessions (and whether their agent is connected now)."""
    emit(
        run_client(home, lambda c: c.request(make(SessionsList, all=all_))), as_json, sessions_table
    )


@app.command("end-session")
def end_session(
    ticket: TicketArg,
    reason: Annotated[
        str | None, typer.Option(help="Why; the customer sees it. Default: ended by you.")
    ] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """End the ticket's open sessions; a customer at the agent may then rate it."""
    emit(
        run_client(home, lambda c: c.request(make(SessionEnd, ticket=ticket, reason=reason))),
        as_json,
        lambda d: stdout.print(
            f"ended {len(d.ended)} session(s) on T-{d.ticket}: {escape(d.reason)}",
            highlight=False,
        ),
    )


@app.command()
def ping(
    ticket: TicketArg,
    count: Annotated[
        int, typer.Option("--count", "-c", min=1, max=1000, help="How many round trips.")
    ] = 1,
    interval: Annotated[
        float, typer.Option(min=0, max=60, help="Seconds between round trips.")
    ] = 0.2,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Round-trip a trivial request to the ticket's agent; print how long it took."""
    from statistics import median

    ping_call = make(AgentPing, ticket=ticket)

    async def work(connection: Connection) -> dict[str, Any]:
        trips: list[dict[str, Any]] = []
        for n in range(count):
            if n:
                await asyncio.sleep(interval)
            started = time.monotonic()
            answer = await connection.request(ping_call)
            rtt = round((time.monotonic() - started) * 1000, 3)
            trips.append({"rtt_ms": rtt, "agent_ms": answer.agent_ms, "ok": answer.ok})
            if not as_json:
                stdout.print(
                    f"pong from {ticket}: {rtt:.1f} ms (controller to agent "
                    f"{answer.agent_ms:.1f} ms)",
                    highlight=False,
                )
        rtts = [t["rtt_ms"] for t in trips]
        return {
            "ticket": ticket,
            "count": count,
            "ok": all(t["ok"] for t in trips),
            "min_ms": min(rtts),
            "median_ms": round(median(rtts), 3),
            "max_ms": max(rtts),
            "trips": trips,
        }

    def render(d: dict[str, Any]) -> None:
        if d["count"] > 1:  # each trip was printed as it came back
            stdout.print(
                f"{d['count']} round trips: min {d['min_ms']:.1f} ms, "
                f"median {d['median_ms']:.1f} ms, max {d['max_ms']:.1f} ms",
                highlight=False,
            )

    emit(run_client(home, work), as_json, render)


# -- users and audit -------------------------------------------------------------------


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="Login name.")],
    key: Annotated[Path, typer.Option(help="The user's SSH public key file (.pub).")],
    role: Annotated[str, typer.Option(help="technician, admin or auditor.")] = "technician",
    level: Annotated[str | None, typer.Option(help="L1-L3, technicians only.")] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Enrol a user by SSH public key."""
    try:
        public_key = key.read_text()
    except OSError as exc:
        fail("bad_request", f"cannot read {key}: {exc}")
    call = make(UserAdd, name=name, role=role, level=level, public_key=public_key)
    emit(
        run_client(home, lambda c: c.request(call)),
        as_json,
        lambda d: stdout.print(
            f"enrolled {d.name} as {d.role}{' ' + d.level if d.level else ''} ({d.fingerprint})"
        ),
    )


@user_app.command("remove")
def user_remove(
    name: Annotated[str, typer.Argument(help="Login name.")],
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove a user; their open connections are closed at once."""
    emit(
        run_client(home, lambda c: c.request(make(UserRemove, name=name))),
        as_json,
        lambda d: stdout.print(
            f"removed {d.name}; closed {d.connections_closed} open connection(s)"
        ),
    )


@user_app.command("set-role")
def user_set_role(
    name: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[str, typer.Option(help="technician, admin or auditor.")],
    level: Annotated[str | None, typer.Option(help="L1-L3, technicians only.")] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a user's role (and support level); they must log in again."""
    call = make(UserSetRole, name=name, role=role, level=level)
    emit(
        run_client(home, lambda c: c.request(call)),
        as_json,
        lambda d: stdout.print(f"{d.name} is now {d.role}{' ' + d.level if d.level else ''}"),
    )


@user_app.command("list")
def user_list(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """List enrolled users."""

    def render(users: list[UserInfo]) -> None:
        table = Table("name", "role", "level", "key", "enrolled")
        for u in users:
            table.add_row(
                u.name, u.role, u.level or "", u.fingerprint, f"{u.created_at:%Y-%m-%d %H:%M:%S}"
            )
        stdout.print(table)

    emit(run_client(home, lambda c: c.request(make(UserList))), as_json, render)


@app.command()
def demo(
    keep: Annotated[bool, typer.Option(help="Keep the demo home afterwards.")] = False,
) -> None:
    """Start a controller, join a local agent to a demo ticket, show its diagnostics."""
    from controller.cli.demo import run_demo

    raise SystemExit(run_demo(keep))


def run() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:
        if os.environ.get("HELPLINE_DEBUG"):
            raise
        stderr.print(f"[bold red]error:[/] {escape(f'{type(exc).__name__}: {exc}')}")
        stderr.print("[dim]set HELPLINE_DEBUG=1 for a traceback[/]")
        sys.exit(1)
