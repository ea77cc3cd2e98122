"""The knowledge base: search, show, list, suggest, add."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from protocol.calls.base import ArticleId, Call, Model, Text, TicketId, Time

#: a finding's rule id (``disk.nearly_full``) or a fix's name (``disk.free_space``)
Ref = Annotated[str, Text(200)]


class ArticleSummary(Model):
    """An article without its body: what lists, searches and suggestions show."""

    id: ArticleId
    title: str
    #: the ticket it was written from
    ticket: TicketId | None
    author: str
    created_at: Time
    #: the findings of that ticket's latest snapshot, and the fixes that worked on it
    findings: tuple[str, ...]
    fixes: tuple[str, ...]


class Article(ArticleSummary):
    body: str


class ArticleHit(ArticleSummary):
    rank: float
    #: the matching text, the words found between « and »
    snippet: str


class KbSearch(Call[list[ArticleHit]]):
    method = "kb.search"
    #: every word must match, as a prefix
    words: Annotated[str, Text(500)]
    limit: Annotated[int, Field(ge=1, le=100, strict=True)] = 10


class KbShow(Call[Article]):
    method = "kb.show"
    article: ArticleId


class KbList(Call[list[ArticleSummary]]):
    method = "kb.list"
    limit: Annotated[int, Field(ge=1, le=1000, strict=True)] = 50


class KbSuggest(Call[list[ArticleSummary]]):
    """Articles for findings and fixes, e.g. beside a diagnostics result."""

    method = "kb.suggest"
    findings: Annotated[tuple[Ref, ...], Field(max_length=1000)] = ()
    fixes: Annotated[tuple[Ref, ...], Field(max_length=1000)] = ()


class KbAdd(Call[Article]):
    method = "kb.add"
    title: Annotated[str, Text(300)]
    body: Annotated[str, Text(50_000)]
    #: write it from this ticket: linked to its findings and the fixes that worked
    ticket: TicketId | None = None
