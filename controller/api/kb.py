"""The knowledge base: ``kb.search``, ``kb.show``, ``kb.list``, ``kb.suggest``, ``kb.add``."""

from __future__ import annotations

from controller.api.registry import ANYONE, ROUTES, WORKERS, ApiError, Context, utcnow
from controller.store import Article as StoredArticle
from controller.tickets.desk import Who
from protocol.calls.kb import (
    Article,
    ArticleHit,
    ArticleSummary,
    KbAdd,
    KbList,
    KbSearch,
    KbShow,
    KbSuggest,
)
from protocol.errors import ErrorCode

#: how many findings and fixes a suggestion looks up (a snapshot has far fewer)
SUGGEST_REFS = 50


def article_summary(article: StoredArticle) -> ArticleSummary:
    return ArticleSummary(
        id=article.id,
        title=article.title,
        ticket=article.ticket_id,
        author=article.author,
        created_at=article.created_at,
        findings=article.findings,
        fixes=article.fixes,
    )


def article_info(article: StoredArticle) -> Article:
    return Article(**article_summary(article).model_dump(), body=article.body)


@ROUTES.handler(KbSearch, roles=ANYONE)
async def kb_search(ctx: Context, call: KbSearch) -> list[ArticleHit]:
    hits = await ctx.store.search_articles(call.words, call.limit)
    return [
        ArticleHit(
            **article_summary(hit.article).model_dump(),
            rank=round(hit.rank, 4),
            snippet=hit.snippet,
        )
        for hit in hits
    ]


@ROUTES.handler(KbShow, roles=ANYONE)
async def kb_show(ctx: Context, call: KbShow) -> Article:
    article = await ctx.store.get_article(call.article)
    if article is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"there is no article KB-{call.article}")
    return article_info(article)


@ROUTES.handler(KbList, roles=ANYONE)
async def kb_list(ctx: Context, call: KbList) -> list[ArticleSummary]:
    """The newest articles."""
    return [article_summary(a) for a in await ctx.store.list_articles(call.limit)]


@ROUTES.handler(KbSuggest, roles=ANYONE)
async def kb_suggest(ctx: Context, call: KbSuggest) -> list[ArticleSummary]:
    articles = await ctx.store.articles_for(
        findings=list(call.findings[:SUGGEST_REFS]), fixes=list(call.fixes[:SUGGEST_REFS])
    )
    return [article_summary(a) for a in articles]


@ROUTES.handler(KbAdd, roles=WORKERS)
async def kb_add(ctx: Context, call: KbAdd) -> Article:
    """Write an article; from a ticket, it is linked to the ticket's findings and fixes."""
    user = ctx.caller.user
    if call.ticket is not None:
        ticket = await ctx.ticket(call.ticket)
        who = Who(user.name, user.role, ctx.caller.source)
        article = await ctx.services.desk.write_article(who, ticket, call.title, call.body)
    else:
        article = await ctx.store.add_article(call.title, call.body, user.name, utcnow())
    return article_info(article)
