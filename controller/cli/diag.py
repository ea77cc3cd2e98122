"""``helpline diag``: take diagnostics on a ticket's agent, list collectors, compare snapshots.

``helpline diag T-1`` is short for ``helpline diag run T-1``: the group routes anything that
is not one of its commands to ``run``, so a ticket id (or ``--list``) can come first.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from controller.cli.common import HomeOpt, JsonOpt, TicketArg, make, run_client
from controller.cli.output import emit, fail, shown, stderr, stdout
from controller.client import Connection
from protocol.calls.diagnostics import CollectorInfo, DiagDiff, Diagnostics, DiagRun
from protocol.text import one_line

DEFAULT_COMMAND = "run"


class _TicketFirst(TyperGroup):
    """A group whose default command is ``run``: ``diag T-1`` means ``diag run T-1``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)


diag_app = typer.Typer(
    cls=_TicketFirst,
    help=(
        "Diagnostics on the customer's machine: `helpline diag T-1` takes a snapshot "
        "(findings first), `helpline diag diff T-1` compares the last two."
    ),
    no_args_is_help=True,
)


def _split(only: str | None) -> list[str] | None:
    if only is None:
        return None
    names = [name.strip() for name in only.split(",") if name.strip()]
    if not names:
        fail("bad_request", "--only needs collector names, e.g. --only disk,network")
    from controller.collectors import collector_names

    try:
        collector_names(names)
    except ValueError as exc:
        fail("bad_request", str(exc))
    return names


def _list_collectors(as_json: bool) -> None:
    # the agent's catalogue ships with this CLI: no controller needed to name it
    from controller.collectors import collector_list

    def render(rows: list[CollectorInfo]) -> None:
        table = Table("collector", "also", "what it reads", "time limit")
        for row in rows:
            table.add_row(row.name, ", ".join(row.aliases), row.summary, f"{row.timeout_s:g} s")
        stdout.print(table)
        stdout.print("[dim]select with --only NAME,NAME (names or aliases)[/]")

    emit(collector_list(), as_json, render)


@diag_app.command(DEFAULT_COMMAND)
def run(
    ticket: Annotated[str | None, typer.Argument(help="Ticket id, e.g. T-1.")] = None,
    only: Annotated[
        str | None,
        typer.Option(help="Only these collectors, comma-separated: --only disk,network."),
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="Name the collectors and stop.")] = False,
    home: HomeOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the agent.")] = 60.0,
    as_json: JsonOpt = False,
) -> None:
    """Take a diagnostics snapshot on the ticket's agent, attach it, show the findings."""
    from controller.cli.render import render_diagnostics

    if list_:
        _list_collectors(as_json)
        return
    if ticket is None:
        fail("bad_request", "name a ticket (helpline diag T-1), or use --list")
    call = make(DiagRun, ticket=ticket, collectors=_split(only), timeout=timeout)

    async def work(c: Connection) -> Diagnostics:
        if as_json:
            return await c.request(call)
        began = time.monotonic()
        with stderr.status("asking the agent…") as status:

            def show(stage: str) -> None:
                # the stage may quote the agent: never markup, always one line
                status.update(Text(f"{one_line(stage, 200)} · {time.monotonic() - began:.1f} s"))

            return await c.request(call, on_progress=show)

    def render(d: Diagnostics) -> None:
        if not d.ok:
            stderr.print(f"[red]the agent reported an error:[/] {shown(d.error)}", highlight=False)
        findings = [f.model_dump() for f in d.findings] if d.ok else None
        render_diagnostics(stdout, d.data, findings)
        if d.articles:
            stdout.rule("knowledge base", style="dim")
            for article in d.articles:
                about = escape(", ".join(article.findings + article.fixes))
                title = shown(article.title)
                stdout.print(f"  KB-{article.id}  {title}  [dim]({about})[/]", highlight=False)
        stdout.print(f"[dim]attached to T-{d.ticket} (request {shown(d.request)})[/]")

    emit(run_client(home, work), as_json, render)


@diag_app.command("diff")
def diff(
    ticket: TicketArg,
    from_: Annotated[
        int | None, typer.Option("--from", help="Earlier snapshot (attachment number).")
    ] = None,
    to: Annotated[int | None, typer.Option(help="Later snapshot (attachment number).")] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare two diagnostics snapshots of a ticket (the last two by default)."""
    from controller.cli.render import render_diff

    call = make(DiagDiff, ticket=ticket, from_=from_, to=to)
    emit(
        run_client(home, lambda c: c.request(call)),
        as_json,
        lambda d: render_diff(stdout, d.model_dump(mode="json", by_alias=True)),
    )
