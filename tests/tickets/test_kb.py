"""The knowledge base on SQLite (FTS5) and PostgreSQL (tsvector): search, links, articles
written from resolutions."""

from __future__ import annotations

import pytest

from controller.store import Store
from tests.tickets.conftest import T0, Desk

ARTICLES = [
    ("Printer shows error 49", "Update the printer firmware, then power-cycle it."),
    ("Drucker druckt nicht", "Druckerwarteschlange leeren und den Spooler-Dienst neu starten."),
    ("Принтер не печатает", "Очистите очередь печати и перезапустите службу диспетчера."),
    ("VPN drops every hour", "The DHCP lease renews hourly; set a static address for wi-fi."),
]


async def _fill(store: Store) -> list[int]:
    return [(await store.add_article(t, b, "alice", T0)).id for t, b in ARTICLES]


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("printer", [0]),
        ("PRINT", [0]),  # prefixes, any case
        ("error 49", [0]),
        ("drucker", [1]),
        ("spooler dienst", [1]),
        ("принтер", [2]),
        ("печати", [2]),
        ("wifi", []),
        ("wi-fi", [3]),
        ("printer vpn", []),  # every word must match
        ("", []),
    ],
)
async def test_search_finds_articles_in_any_language(
    store: Store, words: str, expected: list[int]
) -> None:
    ids = await _fill(store)
    hits = await store.search_articles(words)
    assert [h.article.id for h in hits] == [ids[i] for i in expected]
    for hit in hits:
        assert hit.snippet


@pytest.mark.parametrize(
    "words", ['"', "printer*", "OR AND NOT", "a:b", "(x", "'; DROP TABLE kb_articles; --", "^~"]
)
async def test_query_syntax_in_the_words_is_just_text(store: Store, words: str) -> None:
    await _fill(store)
    await store.search_articles(words)  # no exception is the point
    assert len(await store.list_articles()) == len(ARTICLES)


async def test_title_matches_rank_above_body_matches(store: Store) -> None:
    body_only = await store.add_article("Spooler", "The printer spooler hangs.", "bob", T0)
    title = await store.add_article("Printer spooler hangs", "Restart it.", "bob", T0)
    hits = await store.search_articles("printer")
    assert [h.article.id for h in hits] == [title.id, body_only.id]


async def test_any_word_search_for_suggestions(store: Store) -> None:
    ids = await _fill(store)
    hits = await store.search_articles("Laptop printer and VPN", match_all=False)
    assert sorted(h.article.id for h in hits) == sorted([ids[0], ids[3]])


async def test_a_resolution_becomes_an_article_linked_to_findings_and_fixes(office: Desk) -> None:
    store = office.store
    t = await office.desk.open(office.alice, title="Disk full", customer="ACME", priority="P3")
    await store.upsert_agent("agent-1", "k" * 43, "pc", "linux", T0)
    await store.create_session("S-1", t.id, "agent-1", "alice", ["diagnostics:read"], T0, T0)
    for request, kind, data in (
        (
            "r1",
            "diagnostics",
            {
                "disks": {
                    "partitions": [
                        {"mountpoint": "/", "percent": 96, "readonly": False, "fstype": "ext4"}
                    ]
                }
            },
        ),
        ("r2", "fix", {"fix": "disk.free_space", "status": "succeeded"}),
        ("r3", "fix", {"fix": "dns.flush", "status": "failed"}),
    ):
        await store.add_request(request, "S-1", t.id, kind, "alice", T0)
        await store.attach_result(request, True, data, T0, T0)
    t, article = await office.desk.resolve(
        office.alice, t.id, "Emptied /var/log with disk.free_space", article=""
    )
    assert article is not None
    assert (article.title, article.ticket_id, article.author) == ("Disk full", t.id, "alice")
    assert article.findings == ("disk.nearly_full",)
    assert article.fixes == ("disk.free_space",)
    assert await store.articles_for(findings=["disk.nearly_full"]) == [article]
    assert await store.articles_for(fixes=["dns.flush"]) == []
    assert [h.article for h in await store.search_articles("emptied var log")] == [article]
    other = await office.desk.open(
        office.alice, title="Disk full again", customer="B", priority="P3"
    )
    assert [a.id for a in await office.desk.suggestions(other, ["disk.nearly_full"])] == [
        article.id
    ]
    [event] = await store.ticket_events(t.id, ["ticket.article_written"])
    assert event.data["article"] == article.ref
