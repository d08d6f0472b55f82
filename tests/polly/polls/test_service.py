"""The poll service and reports on SQLite and PostgreSQL: rows in upstream's conventions, the
lifecycle rules (close, reopen, delete), corrupt rows, and export → import round trips."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select, text, update

from polly.db.engine import Database
from polly.db.models import Poll, Vote, utcnow_naive
from polly.errors import CorruptPollError, PollNotFoundError, PollStateError, PollValidationError
from polly.polls import reports, service
from polly.polls.definition import PollDefinition, load_definitions, validate_poll
from tests.polly.polls.conftest import EXAMPLES, IDS, future_example, local_time


def definition(**fields: object) -> PollDefinition:
    data: dict[str, object] = {
        "name": "Lunch",
        "question": "Where to eat?",
        "options": ["Pizza", "Tacos", "Salad"],
        "open_time": local_time(timedelta(hours=2), "Europe/Berlin"),
        "close_time": local_time(timedelta(hours=5), "Europe/Berlin"),
        "timezone": "Europe/Berlin",
        **IDS,
        **fields,
    }
    poll, problems = validate_poll(data, "test", now=utcnow_naive())
    assert poll is not None, problems
    return poll


def create(db: Database, **fields: object) -> int:
    [poll_id] = service.create_polls(db, [definition(**fields)])
    return poll_id


def set_columns(db: Database, poll_id: int, **values: object) -> None:
    with db.session_scope() as session:
        session.execute(update(Poll).where(Poll.id == poll_id).values(**values))


def add_votes(db: Database, poll_id: int, votes: list[tuple[str, int]]) -> None:
    with db.session_scope() as session:
        for user, option in votes:
            session.execute(insert(Vote).values(poll_id=poll_id, user_id=user, option_index=option))


def vote_count(db: Database, poll_id: int) -> int:
    with db.session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(Vote).where(Vote.poll_id == poll_id)) or 0)


def test_upstream_examples_are_written_in_upstreams_conventions(database: Database, tmp_path: Path) -> None:
    files = [future_example(name, tmp_path) for name in EXAMPLES]
    now = utcnow_naive()
    definitions = load_definitions(files, now=now, defaults=IDS)
    ids = service.create_polls(database, definitions)
    assert len(ids) == 3
    with database.session_scope() as session:
        rows = {r.id: r for r in session.scalars(select(Poll).where(Poll.id.in_(ids)))}
        for poll_id, d in zip(ids, definitions, strict=True):
            row = rows[poll_id]
            assert row.status == "scheduled"  # the engine opens it, never the CLI
            assert row.message_id is None
            assert json.loads(row.options_json) == list(d.options)
            assert json.loads(row.emojis_json or "") == list(d.emojis)
            assert row.open_time == d.open_time
            assert row.open_time.tzinfo is None
            assert row.timezone == d.timezone
            assert row.creator_id == "0"
    comprehensive = rows[ids[2]]
    assert comprehensive.multiple_choice is True
    assert comprehensive.ping_role_enabled is True
    assert comprehensive.ping_role_id == "456789012345678901"
    assert comprehensive.server_id == "123456789012345678"
    assert rows[ids[0]].open_time == now.replace(second=0, microsecond=0)  # no times: opens now


def test_an_invalid_creator_id_writes_nothing(database: Database) -> None:
    with pytest.raises(PollValidationError, match="creator_id: 'bob': must be a Discord user id"):
        service.create_polls(database, [definition(), definition(name="Dinner")], creator_id="bob")
    assert reports.list_polls(database).polls == []


def test_list_filters_orders_newest_first_and_counts_votes(database: Database) -> None:
    first = create(database)
    second = create(database, name="Other channel", channel_id="111111111111111111")
    third = create(database, name="Closed one")
    service.close_poll(database, third)
    add_votes(database, first, [("1", 0), ("2", 0), ("2", 1)])
    listed = reports.list_polls(database)
    assert [p.id for p in listed.polls] == [third, second, first]
    summary = listed.polls[-1]
    assert (summary.votes, summary.voters, summary.timezone) == (3, 2, "Europe/Berlin")
    assert [p.id for p in reports.list_polls(database, status="closed").polls] == [third]
    assert [p.id for p in reports.list_polls(database, channel_id="111111111111111111").polls] == [second]
    assert reports.list_polls(database, server_id="999999999999999999").polls == []
    limited = reports.list_polls(database, limit=2)
    assert ([p.id for p in limited.polls], limited.truncated) == ([third, second], True)
    assert reports.list_polls(database, limit=3).truncated is False
    with pytest.raises(ValueError, match="limit must be from 1 to 10000, got 0"):
        reports.list_polls(database, limit=0)


def test_corrupt_rows_are_skipped_by_list_and_refused_by_show_and_export(database: Database) -> None:
    good = create(database)
    bad = create(database, name="Broken")
    set_columns(database, bad, options_json="not json")
    listed = reports.list_polls(database)
    assert [p.id for p in listed.polls] == [good]
    [skipped] = listed.skipped
    assert skipped.row_id == bad
    assert "options_json is not valid JSON" in skipped.reason
    with pytest.raises(CorruptPollError, match=f"poll {bad}: options_json"):
        reports.show_poll(database, bad)
    with pytest.raises(CorruptPollError, match=f"poll {bad}: options_json"):
        reports.export_poll(database, bad, now=utcnow_naive())
    service.close_poll(database, bad)  # changes need only the status: a corrupt row can still be closed
    assert service.delete_poll(database, bad) == 0


def test_unreadable_sqlite_timestamp_is_reported_with_its_id(sqlite_url: str) -> None:
    from polly.config import DatabaseSettings, SecretUrl
    from polly.db.schema import create_schema

    create_schema(sqlite_url)
    db = Database(DatabaseSettings(url=SecretUrl(sqlite_url)))
    try:
        good, bad = create(db), create(db, name="Bad time")
        with db.session_scope() as session:
            session.execute(text("UPDATE polls SET close_time = 'soon' WHERE id = :id"), {"id": bad})
        listed = reports.list_polls(db)
        assert [p.id for p in listed.polls] == [good]
        assert [r.row_id for r in listed.skipped] == [bad]
        with pytest.raises(CorruptPollError, match=f"poll {bad}: row: cannot be read"):
            reports.show_poll(db, bad)
    finally:
        db.dispose_sync()


def test_show_gives_results_percentages_winners_and_voters(database: Database) -> None:
    poll_id = create(database, multiple_choice=True)
    add_votes(database, poll_id, [("10", 0), ("11", 0), ("11", 1), ("12", 1), ("13", 2)])
    details = reports.show_poll(database, poll_id)
    assert [(r.option, r.votes) for r in details.results] == [("Pizza", 2), ("Tacos", 2), ("Salad", 1)]
    assert [round(r.percent, 1) for r in details.results] == [40.0, 40.0, 20.0]
    assert details.winners == (0, 1)
    assert (details.total_votes, details.voter_count) == (5, 4)
    assert details.voters == {"10": [0], "11": [0, 1], "12": [1], "13": [2]}


def test_show_hides_voters_of_anonymous_polls_and_has_no_winner_without_votes(database: Database) -> None:
    poll_id = create(database, anonymous=True)
    details = reports.show_poll(database, poll_id)
    assert details.voters is None
    assert details.winners == ()
    assert all(r.percent == 0.0 for r in details.results)
    add_votes(database, poll_id, [("10", 2)])
    assert reports.show_poll(database, poll_id).winners == (2,)


def test_close_is_conditional_and_idempotent(database: Database) -> None:
    scheduled = create(database)
    active = create(database, name="Running")
    set_columns(database, active, status="active", message_id="555555555555555555")
    assert service.close_poll(database, scheduled) == "scheduled"
    assert service.close_poll(database, active) == "active"
    assert service.close_poll(database, active) is None
    with pytest.raises(PollNotFoundError, match="no poll 9999"):
        service.close_poll(database, 9999)


def test_reopen_requires_a_closed_poll_and_a_future_close_time(database: Database) -> None:
    poll_id = create(database)
    set_columns(database, poll_id, status="active", message_id="555555555555555555")
    now = utcnow_naive()
    with pytest.raises(PollStateError, match="is active; only a closed poll can be reopened"):
        service.reopen_poll(database, poll_id, now=now)
    service.close_poll(database, poll_id)
    past = now - timedelta(minutes=5)
    set_columns(database, poll_id, open_time=now - timedelta(hours=1), close_time=past)
    with pytest.raises(PollStateError, match=r"which has passed.*pass --extend-minutes N"):
        service.reopen_poll(database, poll_id, now=now)
    assert reports.show_poll(database, poll_id).poll.status == "closed"  # refused: unchanged
    done = service.reopen_poll(database, poll_id, now=now, extend_minutes=30)
    assert done.status == "active"
    assert done.close_time == (now + timedelta(minutes=30)).replace(second=0, microsecond=0)
    view = reports.show_poll(database, poll_id).poll
    assert (view.status, view.close_time, view.message_id) == ("active", done.close_time, 555555555555555555)


def test_reopen_keeps_a_future_close_time_and_resets_votes_when_asked(database: Database) -> None:
    poll_id = create(database)
    set_columns(database, poll_id, status="closed", message_id="555555555555555555")
    add_votes(database, poll_id, [("1", 0), ("2", 1)])
    before = reports.show_poll(database, poll_id).poll.close_time
    done = service.reopen_poll(database, poll_id, now=utcnow_naive())
    assert (done.status, done.close_time, done.votes_deleted) == ("active", before, 0)
    assert vote_count(database, poll_id) == 2
    service.close_poll(database, poll_id)
    done = service.reopen_poll(database, poll_id, now=utcnow_naive(), reset_votes=True)
    assert done.votes_deleted == 2
    assert vote_count(database, poll_id) == 0


@pytest.mark.parametrize("message_id", [None, "claim:replica-1:1700000000"])
def test_reopen_of_a_poll_never_posted_schedules_it(database: Database, message_id: str | None) -> None:
    poll_id = create(database)
    set_columns(database, poll_id, status="closed", message_id=message_id)
    done = service.reopen_poll(database, poll_id, now=utcnow_naive())
    assert done.status == "scheduled"
    view = reports.show_poll(database, poll_id).poll
    assert (view.status, view.message_id, view.claim) == ("scheduled", None, None)


def test_reopen_refuses_a_close_time_before_the_open_time_and_bad_extensions(database: Database) -> None:
    poll_id = create(database, open_time=local_time(timedelta(days=3), "Europe/Berlin"),
                     close_time=local_time(timedelta(days=4), "Europe/Berlin"))  # fmt: skip
    service.close_poll(database, poll_id)
    with pytest.raises(PollStateError, match="the close time must be later"):
        service.reopen_poll(database, poll_id, now=utcnow_naive(), extend_minutes=10)
    with pytest.raises(ValueError, match=r"extend_minutes must be from 1 to 43200 \(30 days\), got 0"):
        service.reopen_poll(database, poll_id, now=utcnow_naive(), extend_minutes=0)
    with pytest.raises(PollNotFoundError, match="no poll 9999"):
        service.reopen_poll(database, 9999, now=utcnow_naive())


def test_delete_removes_the_votes_with_the_poll(database: Database) -> None:
    keep, gone = create(database), create(database, name="Going")
    add_votes(database, keep, [("1", 0)])
    add_votes(database, gone, [("1", 0), ("2", 1), ("3", 2)])
    assert service.delete_poll(database, gone) == 3
    assert vote_count(database, gone) == 0
    assert vote_count(database, keep) == 1
    with pytest.raises(PollNotFoundError, match=f"no poll {gone}"):
        reports.show_poll(database, gone)
    with pytest.raises(PollNotFoundError):
        service.delete_poll(database, gone)


def export_and_import(db: Database, poll_id: int, directory: Path, now: datetime) -> PollDefinition:
    exported = directory / "exported.json"
    data = reports.export_poll(db, poll_id, now=now)
    exported.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    [again] = load_definitions([exported], now=now)
    return again


@pytest.mark.parametrize("name", ["example_poll.json", "comprehensive_poll_example.json"])
def test_export_then_import_recreates_the_same_poll(database: Database, tmp_path: Path, name: str) -> None:
    now = utcnow_naive()
    [original] = load_definitions([future_example(name, tmp_path)], now=now, defaults=IDS)
    [poll_id] = service.create_polls(database, [original])
    again = export_and_import(database, poll_id, tmp_path, now)
    assert again == original
    [copy_id] = service.create_polls(database, [again])
    assert reports.export_poll(database, copy_id, now=now) == reports.export_poll(database, poll_id, now=now)


def test_a_poll_that_has_opened_exports_as_open_immediately(database: Database, tmp_path: Path) -> None:
    now = utcnow_naive()
    [original] = load_definitions([future_example(EXAMPLES[0], tmp_path)], now=now, defaults=IDS)
    assert original.open_immediately is False  # no open_time in the file: it opens now
    [poll_id] = service.create_polls(database, [original])
    later = now + timedelta(minutes=3)
    assert reports.export_poll(database, poll_id, now=later)["open_immediately"] is True
    again = export_and_import(database, poll_id, tmp_path, later)
    assert again.open_immediately is True
    assert again.open_time == later.replace(second=0, microsecond=0)
    assert again.close_time == original.close_time
    same = ("name", "question", "options", "emojis", "server_id", "channel_id", "timezone", "anonymous")
    assert all(getattr(again, f) == getattr(original, f) for f in same)


def test_export_writes_times_in_the_polls_zone(database: Database) -> None:
    opens = local_time(timedelta(days=2), "Asia/Tokyo")
    poll_id = create(database, timezone="Asia/Tokyo", open_time=opens,
                     close_time=local_time(timedelta(days=3), "Asia/Tokyo"), multiple_choice=True,
                     max_choices=2, ping_role_enabled=True, ping_role_id="456789012345678901",
                     ping_role_on_close=True, image_message_text="Look!")  # fmt: skip
    data = reports.export_poll(database, poll_id, now=utcnow_naive())
    assert (data["open_time"], data["timezone"]) == (opens, "Asia/Tokyo")
    assert data["max_choices"] == 2
    assert data["ping_role_id"] == "456789012345678901"
    assert data["ping_role_on_close"] is True
    assert data["image_message_text"] == "Look!"
    assert isinstance(datetime.strptime(data["close_time"], "%Y-%m-%dT%H:%M"), datetime)  # noqa: DTZ007
