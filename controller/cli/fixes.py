"""``helpline fixes …`` (the catalogue) and ``helpline fix T-N FIX`` (run one)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from controller.cli.common import HomeOpt, JsonOpt, TicketArg, make, run_client
from controller.cli.output import (
    Column,
    emit,
    exit_with,
    fail,
    live_output,
    print_table,
    shown,
    stderr,
    stdout,
)
from controller.client import Connection
from protocol.calls.fixes import (
    FixCatalogue,
    FixesList,
    FixesPublish,
    FixesPublished,
    FixOutcome,
    FixRun,
)

fixes_app = typer.Typer(
    help="The signed fix catalogue: make a key, sign, publish, list.", no_args_is_help=True
)


@fixes_app.command("keygen")
def keygen(
    out: Annotated[Path, typer.Option(help="Where to write the private signing key.")],
    as_json: JsonOpt = False,
) -> None:
    """Make a catalogue signing key (keep it apart from the controller; it can be offline)."""
    from controller.catalogue import FixCatalogueError
    from controller.catalogue import keygen as make

    try:
        public = make(out)
    except FixCatalogueError as exc:
        fail("conflict", str(exc))
    emit(
        {"key": str(out), "public_key": public},
        as_json,
        lambda d: stdout.print(f"signing key {d['key']} (0600); public key {d['public_key']}"),
    )


@fixes_app.command("sign")
def sign(
    key: Annotated[Path, typer.Option(help="The signing key from `fixes keygen`.")],
    out: Annotated[Path, typer.Option(help="Where to write the signed bundle.")],
    directory: Annotated[
        Path | None, typer.Argument(help="A catalogue: one folder per fix.")
    ] = None,
    builtin: Annotated[
        bool,
        typer.Option("--builtin", help="Sign the 12 fixes that ship with helpline instead."),
    ] = False,
    serial: Annotated[
        int | None, typer.Option(help="Bundle serial (default: now); agents refuse older ones.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Hash and sign every fix in DIRECTORY (or the built-in ones) into one bundle."""
    from importlib import resources

    from controller.catalogue import FixCatalogueError, sign_dir
    from protocol.catalogue import Bundle

    if builtin == (directory is not None):
        fail("bad_request", "name a catalogue folder, or --builtin for the fixes that ship")
    try:
        if directory is not None:
            signed = sign_dir(directory, key, serial)
        else:
            # found where the package is installed, not in a checkout
            source = resources.files("controller").joinpath("fixes_catalogue")
            with resources.as_file(source) as builtin_dir:
                signed = sign_dir(builtin_dir, key, serial)
    except FixCatalogueError as exc:
        fail("bad_request", str(exc))
    out.write_text(signed.model_dump_json())
    bundle = Bundle.model_validate_json(signed.payload)
    emit(
        {
            "bundle": str(out),
            "serial": bundle.serial,
            "key": signed.key,
            "fixes": [e.fix.id for e in bundle.fixes],
        },
        as_json,
        lambda d: stdout.print(
            f"signed {len(d['fixes'])} fixes into {d['bundle']} (serial {d['serial']})"
        ),
    )


@fixes_app.command("publish")
def publish(
    bundle: Annotated[Path, typer.Argument(help="A bundle from `fixes sign`.")],
    replace_key: Annotated[
        bool, typer.Option(help="Accept a bundle signed with a new key (re-issue agent configs).")
    ] = False,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Publish a signed bundle on the controller (admin); the first one pins its key."""
    import json

    try:
        data = json.loads(bundle.read_text())
    except (OSError, ValueError) as exc:
        fail("bad_request", f"cannot read {bundle}: {exc}")
    call = make(FixesPublish, bundle=data, replace_key=replace_key)

    def render(d: FixesPublished) -> None:
        stdout.print(
            f"published catalogue serial {d.serial} ({len(d.fixes)} fixes)"
            + ("; catalogue key pinned: re-run `helpline agent-config`" if d.key_pinned else "")
        )
        if d.rebuild:
            stderr.print(
                f"[yellow]warning:[/] {len(d.rebuild)} agent(s) built here carry no or another "
                "catalogue key and will refuse every fix; rebuild them:",
                highlight=False,
                soft_wrap=True,
            )
            for item in d.rebuild:
                command = "agent" if item.kind == "pyz" else item.kind
                folder = Path(item.path).parent
                stderr.print(
                    f"  {item.path}  (helpline package {command} --out {folder})",
                    highlight=False,
                    soft_wrap=True,
                    markup=False,
                )

    emit(run_client(home, lambda c: c.request(call)), as_json, render)


@fixes_app.command("list")
def list_fixes(
    for_: Annotated[
        str | None, typer.Option("--for", help="Suggest for this ticket first.")
    ] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the published fixes (suggested ones for a ticket first)."""

    def render(d: FixCatalogue) -> None:
        columns = (
            Column("fix"),
            Column("title", "text", ratio=3),
            Column("level"),
            Column("root", drop=3),
            Column("undo", drop=4),
            Column("params", "text", drop=2),
            Column("suggested for", drop=1),
        )
        rows = [
            (
                escape(f.id),
                escape(f.title),
                f.min_level,
                "yes" if f.needs_root else "",
                "yes" if f.reversible else "",
                escape(", ".join(f.params)),
                f"[yellow]{escape(f.suggested_for)}[/]" if f.suggested_for else "",
            )
            for f in d.fixes
        ]
        print_table(columns, rows)

    call = make(FixesList, ticket=for_)
    emit(run_client(home, lambda c: c.request(call)), as_json, render)


def parse_params(pairs: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            fail("bad_request", f"--param wants NAME=VALUE, not {pair!r}")
        params[name] = value
    return params


def fix(
    ticket: TicketArg,
    fix_id: Annotated[str, typer.Argument(metavar="FIX", help="The fix id (see `fixes list`).")],
    param: Annotated[
        list[str] | None, typer.Option("--param", help="NAME=VALUE; repeatable.")
    ] = None,
    home: HomeOpt = None,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw",
            help="Stream the fix's output exactly as the agent sent it, control characters "
            "and all (by default they are shown as ^[ and the like).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Propose a fix to the ticket's agent; its output streams here live."""
    call = make(FixRun, ticket=ticket, fix=fix_id, values=parse_params(param or []))

    async def work(c: Connection) -> FixOutcome:
        def output(stream: str, data: str) -> None:
            if as_json:
                return
            if stream == "status":
                stderr.print(f"[dim]· {shown(data)}[/]", highlight=False)
            else:
                live_output(data, stream, raw=raw)

        def progress(stage: str) -> None:
            if not as_json:
                stderr.print(f"[dim]· {shown(stage)}[/]", highlight=False)

        return await c.request(call, on_progress=progress, on_output=output)

    result = run_client(home, work)

    def render(d: FixOutcome) -> None:
        if d.status == "refused":
            stdout.print(f"[bold red]not run:[/] {shown(d.error)}")
            return
        colour = "green" if d.status == "succeeded" else "red"
        # the agent wrote most of these fields: never markup, always one line
        summary = shown(f"(exit {d.exit_code}, {d.duration_ms} ms, consent: {d.consent})")
        headline = shown(f"{d.fix} {d.status}")
        stdout.print(f"[bold {colour}]{headline}[/] {summary}")
        for stream in ("stdout", "stderr"):
            if d.truncated is not None and getattr(d.truncated, stream):
                stdout.print(f"[yellow]{stream} was truncated[/]")
        check = d.verification
        if check is not None and check.checked:
            outcome = check.outcome or ""
            style = {"cleared": "green", "still there": "red", "appeared": "red"}.get(outcome)
            verdict = f"[{style}]{shown(outcome)}[/]" if style else shown(outcome)
            stdout.print(f"finding {shown(check.targets)}: {verdict}", highlight=False)
        stdout.print(f"[dim]attached to T-{d.ticket} (request {shown(d.request)})[/]")

    emit(result, as_json, render)
    if result.status == "refused":
        exit_with("declined" if result.code == "declined" else "fix_refused")
    if result.status != "succeeded":
        exit_with("fix_failed")
