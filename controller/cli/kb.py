"""``helpline kb search / show / list / add``: the knowledge base from the terminal."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from controller.cli.common import HomeOpt, JsonOpt, make, run_client
from controller.cli.output import emit, shown, stdout, when
from protocol.calls.kb import (
    Article,
    ArticleHit,
    ArticleSummary,
    KbAdd,
    KbList,
    KbSearch,
    KbShow,
)

kb_app = typer.Typer(help="The knowledge base: search, show, list, add.", no_args_is_help=True)


@kb_app.command("search")
def kb_search(
    words: Annotated[list[str], typer.Argument(help="Words to find (all must match).")],
    limit: Annotated[int, typer.Option(help="At most this many.")] = 10,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Full-text search of the knowledge base."""
    call = make(KbSearch, words=" ".join(words), limit=limit)

    def render(hits: list[ArticleHit]) -> None:
        if not hits:
            stdout.print("no article matches")
            return
        for hit in hits:
            snippet = escape(hit.snippet).replace("«", "[bold]").replace("»", "[/bold]")
            stdout.print(f"[bold]KB-{hit.id}[/]  {shown(hit.title)}")
            stdout.print(f"    {snippet}")

    emit(run_client(home, lambda c: c.request(call)), as_json, render)


@kb_app.command("show")
def kb_show(
    article: Annotated[str, typer.Argument(help="Article id, e.g. KB-3.")],
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show an article."""
    call = make(KbShow, article=article)

    def render(a: Article) -> None:
        stdout.print(f"[bold]KB-{a.id}[/]  {shown(a.title)}")
        source = f" from T-{a.ticket}" if a.ticket is not None else ""
        stdout.print(f"[dim]by {shown(a.author)}{source}, {when(a.created_at)} UTC[/]")
        for label, refs in (("findings", a.findings), ("fixes", a.fixes)):
            if refs:
                stdout.print(f"[dim]{label}: {shown(', '.join(refs))}[/]")
        stdout.print(escape(a.body))

    emit(run_client(home, lambda c: c.request(call)), as_json, render)


@kb_app.command("list")
def kb_list(
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The newest articles."""
    call = make(KbList, limit=limit)

    def render(articles: list[ArticleSummary]) -> None:
        table = Table("id", "title", "from", "findings / fixes", "written")
        for a in articles:
            table.add_row(
                f"KB-{a.id}",
                shown(a.title),
                f"T-{a.ticket}" if a.ticket is not None else "-",
                shown(", ".join(a.findings + a.fixes)),
                when(a.created_at),
            )
        stdout.print(table)

    emit(run_client(home, lambda c: c.request(call)), as_json, render)


@kb_app.command("add")
def kb_add(
    title: Annotated[str, typer.Option(help="The article's title.")],
    body: Annotated[str, typer.Option(help="The article (problem and solution).")],
    ticket: Annotated[
        str | None, typer.Option(help="Write it from this ticket: linked to its findings.")
    ] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write an article."""
    call = make(KbAdd, title=title, body=body, ticket=ticket)
    emit(
        run_client(home, lambda c: c.request(call)),
        as_json,
        lambda a: stdout.print(f"wrote [bold]KB-{a.id}[/]: {shown(a.title)}"),
    )
