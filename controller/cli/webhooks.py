"""``helpline webhook add / list / remove / retry / log``: hand ticket events to a helpdesk."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from controller.cli.common import HomeOpt, JsonOpt, make, run_client
from controller.cli.output import emit, shown, stdout, when
from protocol.calls.webhooks import (
    DeliveryInfo,
    NewWebhook,
    WebhookAdd,
    WebhookList,
    WebhookLog,
    WebhookRemove,
    WebhookRetry,
    WebhookStatus,
)

webhook_app = typer.Typer(
    help="Hand ticket events to an existing helpdesk (admin; list and log also auditor).",
    no_args_is_help=True,
)


@webhook_app.command("add")
def webhook_add(
    url: Annotated[str, typer.Argument(help="Where to POST events: http(s)://…")],
    event: Annotated[
        list[str] | None,
        typer.Option("--event", help="Only these events (ticket.resolved, ticket.*); repeatable."),
    ] = None,
    secret: Annotated[
        str | None, typer.Option(help="The signing secret (default: a new random one).")
    ] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deliver ticket events to a helpdesk; prints the signing secret once."""
    call = make(WebhookAdd, url=url, events=event or [], secret=secret)

    def render(d: NewWebhook) -> None:
        stdout.print(f"webhook [bold]{d.id}[/] → {shown(d.url)} ({', '.join(d.events)})")
        stdout.print(f"signing secret (shown once): [bold]{shown(d.secret)}[/]")

    emit(run_client(home, lambda c: c.request(call)), as_json, render)


@webhook_app.command("list")
def webhook_list(
    all_: Annotated[bool, typer.Option("--all", help="Include removed webhooks.")] = False,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Webhooks and how delivery is going."""

    def render(hooks: list[WebhookStatus]) -> None:
        table = Table("id", "url", "events", "pending", "failures", "next try", "last error")
        for h in hooks:
            table.add_row(
                str(h.id) + (" (removed)" if h.removed_at else ""),
                shown(h.url),
                ", ".join(h.events),
                str(h.pending),
                str(h.failures),
                when(h.next_attempt_at),
                shown(h.last_error or ""),
            )
        stdout.print(table)

    emit(run_client(home, lambda c: c.request(make(WebhookList, all=all_))), as_json, render)


@webhook_app.command("remove")
def webhook_remove(
    webhook: Annotated[int, typer.Argument(help="Webhook id.")],
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop delivering to a webhook."""
    call = make(WebhookRemove, id=webhook)
    emit(
        run_client(home, lambda c: c.request(call)),
        as_json,
        lambda d: stdout.print(f"webhook {d.id} removed"),
    )


@webhook_app.command("retry")
def webhook_retry(
    webhook: Annotated[int, typer.Argument(help="Webhook id.")],
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Retry pending events now (the receiver is back)."""
    call = make(WebhookRetry, id=webhook)
    emit(
        run_client(home, lambda c: c.request(call)),
        as_json,
        lambda d: stdout.print(f"webhook {d.id}: retrying now"),
    )


@webhook_app.command("log")
def webhook_log(
    ticket: Annotated[str | None, typer.Option(help="This ticket's deliveries.")] = None,
    webhook: Annotated[int | None, typer.Option(help="This webhook's deliveries.")] = None,
    pending: Annotated[bool, typer.Option("--pending", help="Only undelivered.")] = False,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The delivery log: which event went where, when, after how many attempts."""
    call = make(WebhookLog, ticket=ticket, id=webhook, pending=pending)

    def render(items: list[DeliveryInfo]) -> None:
        table = Table("ticket", "event", "webhook", "attempts", "status", "delivered")
        for x in items:
            table.add_row(
                f"T-{x.ticket}",
                x.type,
                str(x.webhook),
                str(x.attempts),
                str(x.last_status or shown(x.last_error or "-")),
                when(x.delivered_at) if x.delivered_at else "[yellow]pending[/]",
            )
        stdout.print(table)

    emit(run_client(home, lambda c: c.request(call)), as_json, render)
