"""Poll behaviour as upstream defines it, and upstream's defensive column readers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from polly.db.models import POLL_EMOJIS, Poll, TypeSafeColumn, Vote, as_aware_utc, get_poll_emoji
from tests.polly.db.upstream import naive_utc


def poll(options: list[str], votes: list[tuple[str, int]], **kw: object) -> Poll:
    p = Poll(name="n", question="q", server_id="1", channel_id="2", creator_id="3", **kw)
    p.options = options
    p.votes = [Vote(user_id=u, option_index=i) for u, i in votes]
    return p


def test_results_winner_and_totals() -> None:
    p = poll(["a", "b", "c"], [("u1", 0), ("u2", 1), ("u3", 1), ("u4", 7)], multiple_choice=False)
    assert p.get_results() == {0: 1, 1: 2, 2: 0}
    assert p.get_winner() == [1]
    assert p.get_total_votes() == 4
    assert p.get_total_vote_count() == 4
    tie = poll(["a", "b"], [("u1", 0), ("u2", 1)])
    assert tie.get_winner() == [0, 1]
    # upstream: with no votes every option ties at 0; with no options there is no winner at all
    assert poll(["a", "b"], []).get_winner() == [0, 1]
    assert poll([], []).get_winner() is None
    assert poll([], [("u1", 0)]).get_winner() is None


def test_multiple_choice_counts_distinct_voters() -> None:
    p = poll(["a", "b"], [("u1", 0), ("u1", 1), ("u2", 1)], multiple_choice=True)
    assert p.get_total_votes() == 2
    assert p.get_total_vote_count() == 3


def test_emojis_and_options_as_upstream() -> None:
    p = poll(["a", "b"], [])
    assert p.emojis == []  # emojis_json NULL: upstream gives [], callers fall back to POLL_EMOJIS
    p.emojis = ["x", "y"]
    assert p.emojis_json == '["x", "y"]'
    assert p.emojis == ["x", "y"]
    p.options_json = "{broken"
    with pytest.raises(json.JSONDecodeError):
        _ = p.options  # upstream raises: [] would pass a corrupt poll off as one without options
    p.options_json = None  # type: ignore[assignment]
    assert p.options == []
    assert get_poll_emoji(0) == POLL_EMOJIS[0]
    assert get_poll_emoji(3) == POLL_EMOJIS[3]
    assert get_poll_emoji(10) == "\u2753"
    assert get_poll_emoji(99) == "\u2753"
    assert get_poll_emoji(-1) == "\u2753"


def test_results_hidden_only_while_anonymous_and_open() -> None:
    assert poll(["a"], [], anonymous=True, status="active").should_show_results() is False
    assert poll(["a"], [], anonymous=True, status="closed").should_show_results() is True
    assert poll(["a"], [], anonymous=False, status="active").should_show_results() is True


def test_aware_views_of_naive_utc() -> None:
    p = poll(["a"], [], open_time=naive_utc(2025, 1, 1, 12), close_time=naive_utc(2025, 1, 2, 12))
    assert p.open_time_aware == datetime(2025, 1, 1, 12, tzinfo=UTC)
    plus2 = timezone(timedelta(hours=2))
    assert as_aware_utc(datetime(2025, 1, 1, 14, tzinfo=plus2)) == datetime(2025, 1, 1, 12, tzinfo=UTC)


def test_type_safe_column() -> None:
    class Row:
        flag = "true"
        zero = 0
        num = "12"
        junk = "x"
        when = naive_utc(2025, 1, 1)
        nothing = None

    r = Row()
    assert TypeSafeColumn.get_bool(r, "flag") is True
    assert TypeSafeColumn.get_bool(r, "zero") is False
    assert TypeSafeColumn.get_bool(r, "nothing", True) is True
    assert TypeSafeColumn.get_int(r, "num") == 12
    assert TypeSafeColumn.get_int(r, "junk", 5) == 5
    assert TypeSafeColumn.get_string(r, "nothing", "d") == "d"
    assert TypeSafeColumn.get_datetime(r, "when") == datetime(2025, 1, 1, tzinfo=UTC)
    assert TypeSafeColumn.get_datetime(r, "junk") == "x"  # upstream returns a non-datetime as it is
    assert TypeSafeColumn.get_datetime(r, "nothing", "d") == "d"
    assert TypeSafeColumn.get_datetime(r, "absent") is None
