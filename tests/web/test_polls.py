"""Creating, importing, showing, closing, reopening, deleting and exporting polls in the dashboard,
validated by the same rules and messages as ``polly poll create``."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import select
from starlette.applications import Starlette

from polly.db.engine import Database
from polly.db.models import Poll, UserPreference, Vote
from polly.polls.definition import validate_poll
from tests.web.support import PNG, World, csrf_of, poll_form, sign_in

Web = tuple[Starlette, httpx.AsyncClient, Database]


async def _new(
    client: httpx.AsyncClient,
    world: World,
    files: dict[str, tuple[str, bytes, str]] | None = None,
    **fields: str,
) -> httpx.Response:
    gid = world.discord.guild.id
    token = csrf_of((await client.get(f"/servers/{gid}/polls/new")).text)
    form = {"csrf_token": token, **poll_form(world.discord.channel.id, **fields)}
    return await client.post(f"/servers/{gid}/polls/new", data=form, files=files)


async def test_create_stores_every_field_the_image_and_the_preferences(
    world: World, web: Web, tmp_path: Path
) -> None:
    _, client, database = web
    await sign_in(client, world.discord, world.manager)
    role = world.discord.add_role("pollers")
    page = await client.get(f"/servers/{world.discord.guild.id}/polls/new")
    assert html.escape(world.emoji) in page.text  # the server's custom emojis are offered
    resp = await _new(
        client, world, files={"image": ("chart.png", PNG, "image/png")},
        emoji_0=world.emoji, emoji_1="🌮", multiple_choice="on", max_choices="2", anonymous="on",
        ping_role_enabled="on", ping_role_on_close="on", ping_role_id=str(role.id),
        image_message_text="Look at this", timezone="Europe/Berlin",
    )  # fmt: skip
    assert resp.status_code == 303, resp.text
    poll_id = int(resp.headers["location"].rsplit("/", 1)[1])
    with database.session_scope() as session:
        row = session.get(Poll, poll_id)
        assert row is not None
        assert (row.status, row.options, row.emojis) == ("scheduled", ["Pizza", "Tacos"], [world.emoji, "🌮"])
        assert (row.multiple_choice, row.max_choices, row.anonymous, row.open_immediately) == (
            True,
            2,
            True,
            True,
        )
        assert (row.ping_role_id, row.ping_role_name, row.ping_role_on_close) == (
            str(role.id),
            "pollers",
            True,
        )
        assert (row.channel_name, row.server_name, row.timezone) == (
            "polls",
            "polly test guild",
            "Europe/Berlin",
        )
        assert row.creator_id == str(world.manager.id)
        assert row.image_path is not None
        assert row.image_path.startswith("static/uploads/")
        assert (tmp_path / row.image_path).read_bytes() == PNG
        pref = session.scalars(
            select(UserPreference).where(UserPreference.user_id == str(world.manager.id))
        ).one()
        assert (pref.last_channel_id, pref.default_timezone) == (
            str(world.discord.channel.id),
            "Europe/Berlin",
        )
    again = await client.get(f"/servers/{world.discord.guild.id}/polls/new")
    assert 'value="Europe/Berlin"' in again.text  # the time zone is remembered


async def test_the_form_reports_every_problem_with_the_cli_messages(world: World, web: Web) -> None:
    _, client, database = web
    await sign_in(client, world.discord, world.manager)
    bad = {
        "question": "Hm?",
        "option_1": "",
        "timezone": "Mars/Olympus",
        "emoji_0": "<:nothere:123456789012345678>",
    }
    resp = await _new(client, world, None, **bad)
    assert resp.status_code == 400
    data = {"name": "Lunch", "question": "Hm?", "options": ["Pizza"], "timezone": "Mars/Olympus",
            "server_id": "1" * 18, "channel_id": "2" * 18}  # fmt: skip
    _, cli_problems = validate_poll(data, "poll", now=datetime.now(UTC).replace(tzinfo=None))
    assert len(cli_problems) == 3
    for problem in cli_problems:  # the command line's messages, word for word
        assert problem in html.unescape(resp.text)
    assert "not a custom emoji of this server" in resp.text
    assert 'value="Lunch"' in resp.text  # what was typed is kept
    with database.session_scope() as session:
        assert session.scalar(select(Poll.id)) is None


async def test_import_lists_every_problem_at_once_then_imports_a_good_file(world: World, web: Web) -> None:
    _, client, database = web
    await sign_in(client, world.discord, world.manager)
    gid, cid = world.discord.guild.id, world.discord.channel.id
    token = csrf_of((await client.get(f"/servers/{gid}/import")).text)
    bad = [
        {"name": "ok", "question": "Too short name?", "options": ["a", "b"], "channel_id": str(cid)},
        {
            "name": "Second",
            "question": "Why",
            "options": ["only one"],
            "channel_id": str(cid),
            "colour": "red",
        },
        {"name": "Third", "question": "Elsewhere?", "options": ["a", "b"], "server_id": str(world.other.id)},
    ]
    files = {"file": ("polls.json", json.dumps(bad).encode(), "application/json")}
    resp = await client.post(f"/servers/{gid}/import", data={"csrf_token": token}, files=files)
    assert resp.status_code == 400
    for expected in ("poll 1 ('ok'): name", "poll 2 ('Second'): question", "poll 2 ('Second'): options",
                     "colour: unknown field", "poll 3: server_id"):  # fmt: skip
        assert expected in html.unescape(resp.text)
    assert "5 problem(s), nothing was imported" in resp.text
    good = [
        {
            "name": "Imported",
            "question": "Is this imported?",
            "options": ["yes", "no"],
            "channel_id": str(cid),
        }
    ]
    files = {"file": ("polls.json", json.dumps(good).encode(), "application/json")}
    resp = await client.post(f"/servers/{gid}/import", data={"csrf_token": token}, files=files)
    assert resp.status_code == 303
    with database.session_scope() as session:
        assert list(session.scalars(select(Poll.name))) == ["Imported"]
    listing = await client.get(f"/servers/{gid}/polls?status=scheduled")
    assert "Imported" in listing.text


async def test_close_reopen_results_export_and_delete(world: World, web: Web) -> None:
    _, client, database = web
    await sign_in(client, world.discord, world.manager)
    resp = await _new(client, world)
    poll_id = int(resp.headers["location"].rsplit("/", 1)[1])
    with database.session_scope() as session:
        session.add_all(
            [
                Vote(poll_id=poll_id, user_id="7", option_index=1),
                Vote(poll_id=poll_id, user_id="8", option_index=1),
            ]
        )
    fragment = await client.get(f"/polls/{poll_id}/results", headers={"HX-Request": "true"})
    assert '<td class="count" data-option="1">2</td>' in fragment.text
    assert "<html" not in fragment.text  # a fragment, not a page
    page = await client.get(f"/polls/{poll_id}")
    token = csrf_of(page.text)
    assert 'data-live="/polls/' in page.text
    await client.post(f"/polls/{poll_id}/close", data={"csrf_token": token})
    closed = await client.get(f"/polls/{poll_id}")
    assert "data-live" not in closed.text
    assert "Results" in closed.text
    assert 'class="winner"' in closed.text
    resp = await client.post(f"/polls/{poll_id}/reopen", data={"csrf_token": token, "extend_minutes": "abc"})
    assert resp.status_code == 400
    assert "not a whole number" in resp.text
    resp = await client.post(
        f"/polls/{poll_id}/reopen", data={"csrf_token": token, "extend_minutes": "30", "reset_votes": "on"}
    )
    assert resp.status_code == 303
    with database.session_scope() as session:
        assert session.scalar(select(Poll.status).where(Poll.id == poll_id)) == "scheduled"  # never posted
        assert session.scalar(select(Vote.id).where(Vote.poll_id == poll_id)) is None
    exported = await client.get(f"/polls/{poll_id}/export")
    assert exported.headers["content-disposition"] == f'attachment; filename="poll-{poll_id}.json"'
    data = exported.json()
    assert data["options"] == ["Pizza", "Tacos"]
    assert data["server_id"] == str(world.discord.guild.id)
    assert validate_poll(data, "re-import", now=datetime.now(UTC).replace(tzinfo=None))[1] == []
    confirm = await client.get(f"/polls/{poll_id}/delete")
    assert "Delete it" in confirm.text
    assert (await client.post(f"/polls/{poll_id}/delete", data={"csrf_token": token})).status_code == 303
    assert (await client.get(f"/polls/{poll_id}")).status_code == 404


async def test_the_list_filters_by_status_searches_and_pages(world: World, web: Web) -> None:
    _, client, database = web
    await sign_in(client, world.discord, world.manager)
    from polly.web.store import PAGE_SIZE, create_poll

    now = datetime.now(UTC).replace(tzinfo=None)
    base = {"question": "Which one?", "options": ["a", "b"], "server_id": str(world.discord.guild.id),
            "channel_id": str(world.discord.channel.id)}  # fmt: skip
    for i in range(PAGE_SIZE + 3):
        d, _ = validate_poll(
            {**base, "name": f"Poll {i:03d}" + (" 100%_match" if i == 5 else "")}, "t", now=now
        )
        assert d is not None
        create_poll(database, d, creator_id="1", image_path=None, server_name=None, channel_name="polls",
                    ping_role_name=None)  # fmt: skip
    gid = world.discord.guild.id
    first = await client.get(f"/servers/{gid}/polls?status=scheduled")
    assert f"{PAGE_SIZE + 3} poll(s), page 1 of 2" in first.text
    assert "Poll 027" in first.text
    assert "Poll 002" not in first.text
    second = await client.get(f"/servers/{gid}/polls?status=scheduled&page=2")
    assert "Poll 002" in second.text
    assert "Poll 027" not in second.text
    assert "No active polls" in (await client.get(f"/servers/{gid}/polls")).text
    found = await client.get(f"/servers/{gid}/polls?status=all&q=100%25_")
    assert "1 poll(s)" in found.text
    assert "Poll 005" in found.text


async def test_a_scheduled_poll_is_edited_until_it_opens(world: World, web: Web) -> None:
    _, client, database = web
    await sign_in(client, world.discord, world.manager)
    resp = await _new(client, world, None, open_immediately="", open_time="2099-01-01T09:00", timezone="UTC")
    assert resp.status_code == 303, resp.text
    poll_id = int(resp.headers["location"].rsplit("/", 1)[1])
    form_page = await client.get(f"/polls/{poll_id}/edit")
    assert 'value="2099-01-01T09:00"' in form_page.text  # prefilled from the poll
    assert 'value="Tacos"' in form_page.text
    fields = poll_form(world.discord.channel.id, question="Where do we eat now?", option_2="Curry",
                       open_immediately="", open_time="2099-01-02T10:00", timezone="UTC")  # fmt: skip
    saved = await client.post(
        f"/polls/{poll_id}/edit", data={"csrf_token": csrf_of(form_page.text), **fields}
    )
    assert saved.status_code == 303, saved.text
    with database.session_scope() as session:
        row = session.get(Poll, poll_id)
        assert row is not None
        assert row.question == "Where do we eat now?"
        assert row.options == ["Pizza", "Tacos", "Curry"]
        assert row.open_time == datetime(2099, 1, 2, 10, 0)
        row.message_id = "1234567890123456789"  # the engine posted it meanwhile
    late = await client.post(f"/polls/{poll_id}/edit", data={"csrf_token": csrf_of(form_page.text), **fields})
    assert late.status_code == 409
    assert "can no longer be edited" in late.text
