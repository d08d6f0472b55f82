"""The poll list's paging and search on every database: the pages, walked with Next, hold exactly
the matching polls newest first; the count is exact up to the search cap and "more than" past it;
``%``, ``_`` and ``\\`` in a search are literal."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, insert, or_, select
from starlette.applications import Starlette

from polly.config import DatabaseSettings, SecretUrl
from polly.db.engine import Database
from polly.db.models import Poll
from polly.db.schema import create_schema
from polly.stats import StatsRegistry
from polly.web import store
from polly.web.store import PAGE_SIZE, PollPage, list_page
from tests.web.support import World, sign_in

Web = tuple[Starlette, httpx.AsyncClient, Database]

CAP = 2 * PAGE_SIZE
NAMES = ("50% off", "500 off", "snake_case", "snakeXcase", "back\\slash", "LUNCH vote", "Lunch", "plain")


def _rows(server: str, count: int, start: int = 0) -> list[dict[str, object]]:
    now = datetime.now(UTC).replace(tzinfo=None)
    return [
        {
            "name": f"{NAMES[i % len(NAMES)]} {i:03d}",
            "question": "Where for lunch?" if i % 3 == 0 else "Which one?",
            "options_json": '["a", "b"]',
            "server_id": server,
            "channel_id": "1",
            "creator_id": "1",
            "status": ("scheduled", "active", "closed")[i % 3],
            "timezone": "UTC",
            "open_time": now,
            "close_time": now + timedelta(days=1),
        }
        for i in range(start, start + count)
    ]


@pytest.fixture
def database(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    monkeypatch.setattr(store, "SEARCH_COUNT_CAP", CAP)
    create_schema(db_url)
    db = Database(DatabaseSettings(url=SecretUrl(db_url)), registry=StatsRegistry())
    with db.session_scope() as session:
        session.execute(insert(Poll), _rows("7", 180) + _rows("8", 20))
    try:
        yield db
    finally:
        db.sync_engine.dispose()


def _expected(db: Database, status: str | None, term: str) -> list[int]:
    with db.session_scope() as session:
        rows = session.execute(select(Poll.id, Poll.name, Poll.question, Poll.status, Poll.server_id)).all()
    t = term.lower()
    return sorted(
        (
            r.id
            for r in rows
            if r.server_id == "7"
            and status in (None, r.status)
            and (t in r.name.lower() or t in r.question.lower())
        ),
        reverse=True,
    )


def _walk(db: Database, status: str | None, term: str) -> list[PollPage]:
    pages = [list_page(db, server_id="7", status=status, search=term, page=1)]
    while pages[-1].has_next:
        assert len(pages) < 20
        pages.append(list_page(db, server_id="7", status=status, search=term, page=len(pages) + 1))
    return pages


@pytest.mark.parametrize(
    ("status", "term"),
    [
        (None, ""),
        ("active", ""),
        (None, "lunch"),  # 100+ matches: past the cap
        ("closed", "LUNCH"),
        (None, "50%"),
        (None, "e_c"),
        (None, "\\"),
        ("scheduled", "snake"),
        (None, "nothing like it"),
    ],
)
def test_the_pages_hold_exactly_the_matches_newest_first(
    database: Database, status: str | None, term: str
) -> None:
    expected = _expected(database, status, term)
    pages = _walk(database, status, term)
    assert [p.id for page in pages for p in page.polls] == expected
    assert all(len(page.polls) == PAGE_SIZE for page in pages[:-1])
    last = pages[-1]
    assert last.exact
    assert last.total == len(expected)
    assert last.pages == len(pages)
    for page in pages[:-1]:
        if page.exact:
            assert page.total == len(expected)
        else:  # only a search counts no further than the cap, and then there are more
            assert term
            assert len(expected) > page.total >= CAP


def test_wildcards_in_a_search_are_literal(database: Database) -> None:
    def names(term: str) -> set[str]:
        polls = _walk(database, None, term)[0].polls
        return {p.name.rsplit(" ", 1)[0] for p in polls}

    assert names("50%") == {"50% off"}
    assert names("e_c") == {"snake_case"}
    assert names("k\\s") == {"back\\slash"}
    assert names("%") == {"50% off"}


def test_a_search_past_the_cap_says_more_than_and_beyond_the_end_counts(database: Database) -> None:
    expected = _expected(database, None, "lunch")
    assert len(expected) > CAP + PAGE_SIZE
    first = list_page(database, server_id="7", status=None, search="lunch", page=1)
    assert (first.exact, first.total, first.has_next) == (False, CAP, True)
    past = list_page(database, server_id="7", status=None, search="lunch", page=CAP // PAGE_SIZE + 1)
    assert (past.exact, past.total, past.has_next) == (False, CAP + PAGE_SIZE, True)
    beyond = list_page(database, server_id="7", status=None, search="lunch", page=99)
    assert (beyond.polls, beyond.exact, beyond.total, beyond.has_next) == ([], False, CAP, False)
    few = list_page(database, server_id="7", status=None, search="snake", page=9)
    assert (few.polls, few.exact, few.total, few.has_next) == (
        [],
        True,
        len(_expected(database, None, "snake")),
        False,
    )
    plain = list_page(database, server_id="7", status="active", search="", page=9)
    assert (plain.polls, plain.total, plain.pages, plain.has_next) == ([], 60, 3, False)


def test_sqlite_matches_as_lower_like_did_beyond_ascii(sqlite_url: str) -> None:
    """On SQLite the search compares without ``lower()``; both fold ASCII only, so the same rows match."""
    create_schema(sqlite_url)
    db = Database(DatabaseSettings(url=SecretUrl(sqlite_url)), registry=StatsRegistry())
    rows = _rows("7", 4)
    for row, name in zip(rows, ("ÉCOLE", "école", "Straße", "STRASSE"), strict=True):
        row["name"] = name
    with db.session_scope() as session:
        session.execute(insert(Poll), rows)
    try:
        for term in ("école", "ÉCOLE", "cole", "straße", "strasse", "É"):
            like = f"%{term.lower()}%"
            with db.session_scope() as session:
                before = set(
                    session.scalars(
                        select(Poll.name).where(
                            or_(func.lower(Poll.name).like(like), func.lower(Poll.question).like(like))
                        )
                    )
                )
            now = {p.name for p in list_page(db, server_id="7", status=None, search=term, page=1).polls}
            assert now == before, term
    finally:
        db.sync_engine.dispose()


async def test_the_list_page_shows_more_than_and_pages_on(
    world: World, web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "SEARCH_COUNT_CAP", CAP)
    _, client, database = web
    gid = str(world.discord.guild.id)
    with database.session_scope() as session:
        session.execute(insert(Poll), _rows(gid, 90))
    await sign_in(client, world.discord, world.manager)
    base = f"/servers/{gid}/polls?status=all"
    first = (await client.get(f"{base}&q=which")).text  # 60 of the 90 ask "Which one?"
    assert f"more than {CAP} poll(s), page 1" in first
    assert '&page=2">Next</a>' in first
    assert ">Previous</a>" not in first
    third = (await client.get(f"{base}&q=which&page=3")).text
    assert "60 poll(s), page 3 of 3" in third
    assert '&page=2">Previous</a>' in third
    assert ">Next</a>" not in third
    plain = (await client.get(base)).text
    assert "90 poll(s), page 1 of 4" in plain
    assert '&page=2">Next</a>' in plain
