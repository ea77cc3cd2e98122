"""The knowledge base: articles, their links to findings and fixes, full-text search.

The index is FTS5 on SQLite and a generated tsvector on PostgreSQL (see the migrations),
both without stemming or accent folding, punctuation splitting words in both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import and_, func, or_, select, text

from controller.store.atomic import atomic_methods
from controller.store.engine import StoreBase, utc
from controller.store.events import append_event
from controller.store.schema import ArticleLinkRow, ArticleRow, TicketRow

#: search terms: letters and digits; any punctuation (and _) splits, as in the index
_WORD: Final = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class Article:
    id: int
    title: str
    body: str
    ticket_id: int | None
    author: str
    created_at: datetime
    updated_at: datetime
    findings: tuple[str, ...] = ()
    fixes: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"KB-{self.id}"


@dataclass(frozen=True)
class ArticleHit:
    article: Article
    rank: float
    snippet: str


@atomic_methods
class ArticleStore(StoreBase):
    """Knowledge-base articles (part of ``Store``)."""

    async def add_article(
        self,
        title: str,
        body: str,
        author: str,
        now: datetime,
        *,
        ticket_id: int | None = None,
        findings: Iterable[str] = (),
        fixes: Iterable[str] = (),
    ) -> Article:
        """Write an article (the search index follows by trigger or generated column)."""
        row = ArticleRow(
            title=title,
            body=body,
            ticket_id=ticket_id,
            author=author,
            created_at=now,
            updated_at=now,
        )
        links = [("finding", ref) for ref in dict.fromkeys(findings)]
        links += [("fix", ref) for ref in dict.fromkeys(fixes)]
        async with self._write() as s, s.begin():
            ticket = None if ticket_id is None else await s.get(TicketRow, ticket_id)
            if ticket_id is not None and ticket is None:
                raise KeyError(f"T-{ticket_id}")
            s.add(row)
            await s.flush()
            for kind, ref in links:
                s.add(ArticleLinkRow(article_id=row.id, kind=kind, ref=ref))
            if ticket is not None:
                data = {"article": f"KB-{row.id}", "title": title}
                await append_event(s, ticket, "ticket.article_written", author, now, data)
        return _article(row, links)

    async def get_article(self, article_id: int) -> Article | None:
        """The article with this id, if any."""
        return (await self._articles([article_id])).get(article_id)

    async def list_articles(self, limit: int = 100) -> list[Article]:
        """The newest articles."""
        query = select(ArticleRow.id).order_by(ArticleRow.id.desc()).limit(limit)
        async with self._read() as s:
            ids = list(await s.scalars(query))
        found = await self._articles(ids)
        return [found[i] for i in ids]

    async def search_articles(
        self, words: str, limit: int = 10, *, match_all: bool = True
    ) -> list[ArticleHit]:
        """Full-text search, best match first; every word (or, with ``match_all=False``,
        any word) must match, as a prefix."""
        terms = [w.lower() for w in _WORD.findall(words)][:12]
        if not match_all:
            terms = [t for t in terms if len(t) >= 3]
        if not terms:
            return []
        if self._engine.dialect.name == "postgresql":
            query = text(
                "SELECT a.id, ts_rank(a.search, q) AS rank, "
                "ts_headline('simple', a.body, q, "
                "'StartSel=«, StopSel=», MaxWords=18, MinWords=6, MaxFragments=1') "
                "FROM kb_articles a, to_tsquery('simple', :q) q "
                "WHERE a.search @@ q ORDER BY rank DESC, a.id DESC LIMIT :n"
            )
            match = (" & " if match_all else " | ").join(f"{t}:*" for t in terms)
        else:
            # bm25: lower is better; the title weighs ten times the body
            query = text(
                "SELECT kb_fts.rowid, -bm25(kb_fts, 10.0, 1.0) AS rank, "
                "snippet(kb_fts, 1, '«', '»', '…', 18) "
                "FROM kb_fts WHERE kb_fts MATCH :q ORDER BY rank DESC, kb_fts.rowid DESC "
                "LIMIT :n"
            )
            match = (" " if match_all else " OR ").join(f'"{t}"*' for t in terms)
        async with self._read() as s:
            rows = (await s.execute(query, {"q": match, "n": limit})).all()
        found = await self._articles([r[0] for r in rows])
        return [ArticleHit(found[r[0]], float(r[1]), str(r[2] or "")) for r in rows]

    async def articles_for(
        self, findings: Iterable[str] = (), fixes: Iterable[str] = (), limit: int = 5
    ) -> list[Article]:
        """Articles linked to any of these findings or fixes, most links in common first."""
        refs = [("finding", f) for f in findings] + [("fix", f) for f in fixes]
        if not refs:
            return []
        condition = or_(*(and_(ArticleLinkRow.kind == k, ArticleLinkRow.ref == r) for k, r in refs))
        hits = func.count(ArticleLinkRow.id)
        query = (
            select(ArticleLinkRow.article_id, hits)
            .where(condition)
            .group_by(ArticleLinkRow.article_id)
            .order_by(hits.desc(), ArticleLinkRow.article_id.desc())
            .limit(limit)
        )
        async with self._read() as s:
            ids = [row[0] for row in (await s.execute(query)).all()]
        found = await self._articles(ids)
        return [found[i] for i in ids]

    async def _articles(self, ids: Sequence[int]) -> dict[int, Article]:
        if not ids:
            return {}
        async with self._read() as s:
            rows = list(await s.scalars(select(ArticleRow).where(ArticleRow.id.in_(ids))))
            links: dict[int, list[tuple[str, str]]] = {}
            query = (
                select(ArticleLinkRow)
                .where(ArticleLinkRow.article_id.in_(ids))
                .order_by(ArticleLinkRow.id)
            )
            for link in await s.scalars(query):
                links.setdefault(link.article_id, []).append((link.kind, link.ref))
        return {row.id: _article(row, links.get(row.id, [])) for row in rows}


def _article(row: ArticleRow, links: Sequence[tuple[str, str]]) -> Article:
    return Article(
        id=row.id,
        title=row.title,
        body=row.body,
        ticket_id=row.ticket_id,
        author=row.author,
        created_at=utc(row.created_at),
        updated_at=utc(row.updated_at),
        findings=tuple(ref for kind, ref in links if kind == "finding"),
        fixes=tuple(ref for kind, ref in links if kind == "fix"),
    )
