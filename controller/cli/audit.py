"""``helpline audit …``: read, export and verify the tamper-evident audit log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from controller.cli.common import HomeOpt, JsonOpt, make, run_client
from controller.cli.output import Column, emit, fail, print_table, shown, stderr, stdout
from controller.client import Connection
from protocol.calls import Model
from protocol.calls.audit import (
    AuditAccept,
    AuditAccepted,
    AuditEventInfo,
    AuditExport,
    AuditList,
    AuditPubkey,
    AuditPublicKey,
    AuditVerified,
    AuditVerify,
    ChainReport,
)


class ExportWritten(Model):
    """What ``helpline audit export`` wrote."""

    path: str
    events: int
    checkpoints: int
    head_seq: int
    head: str


audit_app = typer.Typer(help="Read, export and verify the audit log.", no_args_is_help=True)


@audit_app.command("log")
def audit_log(
    ticket: Annotated[str | None, typer.Option(help="Only this ticket.")] = None,
    session: Annotated[str | None, typer.Option(help="Only this session.")] = None,
    actor: Annotated[str | None, typer.Option(help="Only events by this user.")] = None,
    type_: Annotated[
        str | None,
        typer.Option(
            "--type", help="Only these types: consent.refused, 'consent.*', comma-separated."
        ),
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Also auth.ok, one per CLI call (hidden by default).")
    ] = False,
    since: Annotated[
        str | None, typer.Option(help="Only newer events: 30m, 24h, 7d or an ISO time.")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many (the newest).")] = 1000,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show audit events, oldest first (logins, auth.ok, only with --all or --type)."""
    call = make(
        AuditList,
        ticket=ticket,
        session=session,
        actor=actor,
        type=type_,
        all=all_,
        since=since,
        limit=limit,
    )

    def render(events: list[AuditEventInfo]) -> None:
        columns = (
            Column("seq", justify="right"),
            Column("at", "text", min_width=10),  # wraps between date and time
            Column("type"),
            Column("actor"),
            Column("source", drop=3),
            Column("ticket"),
            Column("session", drop=2),
            Column("details", "text", drop=1, ratio=4, min_width=16),
        )
        rows = [
            (
                str(e.seq),
                e.at.isoformat()[:19].replace("T", " "),
                shown(e.type),
                shown(e.actor or ""),
                shown(e.source or ""),
                shown(f"T-{e.ticket}" if e.ticket is not None else ""),
                shown(e.session or ""),
                shown(str(e.details or "")),
            )
            for e in events
        ]
        print_table(columns, rows)

    emit(run_client(home, lambda c: c.request(call)), as_json, render)


@audit_app.command("pubkey")
def audit_pubkey(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Print the audit public key an outsider needs to verify an export."""

    def render(key: AuditPublicKey) -> None:
        stdout.print(key.public_key)

    emit(run_client(home, lambda c: c.request(AuditPubkey())), as_json, render)


@audit_app.command("export")
def audit_export(
    out: Annotated[Path, typer.Option(help="Where to write the export (JSON lines).")],
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export the whole chain with its checkpoints, verifiable without the database."""
    from controller import auditchain

    async def work(c: Connection) -> ExportWritten:
        tmp = out.with_name(out.name + ".partial")
        with (
            open(tmp, "w", encoding="utf-8", newline="\n") as handle,  # noqa: ASYNC230 - CLI output
            stderr.status("exporting the audit log…") as status,
        ):
            page = await c.request(AuditExport(after=0))
            header, until = page.header, page.until
            assert header is not None  # the first page always carries it
            checkpoints = len(page.checkpoints)
            handle.write(auditchain.canonical(header.model_dump(mode="json")) + "\n")
            for checkpoint in page.checkpoints:
                line = {"checkpoint": checkpoint.model_dump(mode="json")}
                handle.write(auditchain.canonical(line) + "\n")
            written = 0
            while True:
                for link in page.links:
                    handle.write(auditchain.canonical(link.model_dump(mode="json")) + "\n")
                    written += 1
                status.update(f"exported {written} of {until} events")
                if written >= until or not page.links:
                    break
                page = await c.request(AuditExport(after=written, until=until))
        tmp.replace(out)
        return ExportWritten(
            path=str(out),
            events=written,
            checkpoints=checkpoints,
            head_seq=until,
            head=header.head,
        )

    def render(d: ExportWritten) -> None:
        stdout.print(
            f"exported {d.events} events to {d.path} (head {d.head[:16]}… at seq {d.head_seq})"
        )

    emit(run_client(home, work), as_json, render)


@audit_app.command("verify")
def audit_verify(
    file: Annotated[
        Path | None, typer.Option(help="Verify this export instead of the controller's log.")
    ] = None,
    pubkey: Annotated[
        str | None, typer.Option(help="With --file: the audit public key, or a file holding it.")
    ] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Walk the whole chain and every signature; name the first bad link (exit 9)."""
    report: ChainReport
    if file is not None:
        report = _verify_file(file, pubkey)
    else:
        report = run_client(home, lambda c: c.request(AuditVerify()))

    def render(r: ChainReport) -> None:
        if r.ok:
            stdout.print(
                f"[green]audit log intact:[/] {r.events} events, "
                f"{r.checkpoints} signed checkpoints, head {r.head[:16]}…"
            )
        else:
            stdout.print(
                f"[bold red]audit log TAMPERED:[/] {escape(r.problem or '')}", soft_wrap=True
            )
            signing = r.signing if isinstance(r, AuditVerified) else None
            if signing is not None and signing.signing == "stopped":
                since = signing.since.isoformat() if signing.since is not None else "?"
                stdout.print(
                    f"checkpoint signing stopped at {since}: "
                    "an admin accepts the chain as it is with `helpline audit accept --reason …`",
                    soft_wrap=True,
                )
        for note in r.notes:
            stdout.print(f"note: {escape(note)}", soft_wrap=True)

    emit(report, as_json, render)
    if not report.ok:
        raise SystemExit(9)


def _verify_file(file: Path, pubkey: str | None) -> ChainReport:
    """Verify an export here, with no controller: the same report the controller makes."""
    from controller import auditchain

    if pubkey is None:
        fail("bad_request", "--file needs --pubkey (from `helpline audit pubkey`)")
    text = Path(pubkey).read_text().strip() if Path(pubkey).is_file() else pubkey
    try:
        key = auditchain.public_key_from_text(text)
    except ValueError as exc:
        fail("bad_request", str(exc))
    try:
        with open(file, encoding="utf-8", newline="") as handle:
            report = auditchain.verify_export(handle, key)
    except OSError as exc:
        fail("bad_request", f"cannot read {file}: {exc.strerror}")
    except UnicodeDecodeError:
        report = auditchain.Report()
        report.fail(None, "the export is not valid UTF-8 (edited?)")
    return ChainReport.model_validate(report.as_json())


@audit_app.command("accept")
def audit_accept(
    reason: Annotated[
        str, typer.Option(help="Why the chain as it is now is accepted (recorded in the log).")
    ],
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resume signing after tampering was found: accept the stored chain as it is (admins).

    Only a chain that is sound in itself can be accepted. The acceptance is recorded as an
    ``audit.accepted`` event naming you, your reason, what was wrong and which signed
    checkpoints it sets aside; exit 8 when signing never stopped.
    """
    call = make(AuditAccept, reason=reason)

    def render(d: AuditAccepted) -> None:
        stdout.print(
            f"accepted the audit chain (event {d.accepted_seq} records it); "
            f"signing again from event {d.signed_seq}. What was wrong: {escape(d.problem)}",
            soft_wrap=True,
        )

    emit(run_client(home, lambda c: c.request(call)), as_json, render)
