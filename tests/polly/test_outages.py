"""Logs during an outage: one line when it starts, a throttled summary, one line when it ends."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from polly.clock import Backoff
from polly.config import DatabaseSettings, SecretUrl
from polly.db.engine import Database
from polly.db.schema import create_schema
from polly.engine import runner
from polly.engine.store import PollStore
from polly.outages import OutageLog, ThrottleFilter, by_message, install_throttles
from polly.supervisor import Readiness, Supervisor
from tests.polly.tcp_proxy import tcp_proxy
from tests.polly.test_caches import FakeClock


def lines(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == name and r.levelno >= logging.WARNING]


def error(n: int) -> OperationalError:
    return OperationalError("SELECT 1", {}, ConnectionRefusedError(f"refused #{n}\nsecond line"))


def test_outage_log_start_summary_and_recovery(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(0.0)
    log = OutageLog(logging.getLogger("t.outage"), window_seconds=60, timer=clock)
    caplog.set_level(logging.INFO, "t.outage")
    for n in range(1, 31):  # one failure a second for 30 s
        log.failed("database", error(n), retry_in_seconds=2.0)
        clock.tick(1)
    for n in range(31, 101):  # and 70 s more
        log.failed("database", error(n), retry_in_seconds=4.0)
        clock.tick(1)
    records = lines(caplog, "t.outage")
    assert len(records) == 2  # the start, then one summary in the second minute
    start, summary = (r.getMessage() for r in records)
    assert start.startswith("database failed: OperationalError:")
    assert "second line" not in start  # one line
    assert "next retry in 2.0 s" in start
    assert records[0].exc_info is not None  # first occurrence: traceback
    assert summary == (
        "database still failing: 61 failures in 60 s, last OperationalError: "
        "(builtins.ConnectionRefusedError) refused #61; next retry in 4.0 s"
    )
    assert log.down_for("database") == 100
    assert log.succeeded("database") is True
    assert caplog.records[-1].getMessage() == "database recovered after 100.0 s (100 failure(s))"
    assert log.succeeded("database") is False
    log.failed("database", error(1))  # a second outage: start line again, no traceback this time
    assert caplog.records[-1].getMessage().startswith("database failed")
    assert caplog.records[-1].exc_info is None


def test_outage_log_traceback_at_debug_every_time(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(0.0)
    log = OutageLog(logging.getLogger("t.debug"), timer=clock)
    caplog.set_level(logging.DEBUG, "t.debug")
    for n in range(5):
        log.failed("redis", error(n))
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(debug) == 5
    assert all(r.exc_info for r in debug)


def test_outage_causes_are_bounded() -> None:
    log = OutageLog(logging.getLogger("t.bounded"), max_causes=3, timer=FakeClock(0.0))
    for n in range(10):
        log.failed(f"cause {n}", error(n))
    assert log.causes() == ["cause 7", "cause 8", "cause 9"]


@pytest.mark.parametrize("window", [30.0, 60.0, 90.0])
def test_outage_summary_comes_exactly_once_per_window(
    window: float, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(0.0)
    log = OutageLog(logging.getLogger("t.window"), window_seconds=window, timer=clock)
    caplog.set_level(logging.INFO, "t.window")
    assert log.failed("cache", error(0)) is True  # the start line opens the window
    clock.tick(window - 0.5)
    assert log.failed("cache", error(1)) is False  # still inside it: counted only
    clock.tick(0.5)
    assert log.failed("cache", error(2)) is True  # the window has passed: the summary
    assert log.failed("cache", error(3)) is False  # and the next one opened
    clock.tick(window)
    assert log.failed("cache", error(4)) is True
    summaries = [r.getMessage() for r in lines(caplog, "t.window") if "still failing" in r.getMessage()]
    assert summaries[0].startswith(f"cache still failing: 3 failures in {window:.0f} s")
    assert summaries[1].startswith(f"cache still failing: 5 failures in {2 * window:.0f} s")


def test_the_default_window_is_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(0.0)
    log = OutageLog(logging.getLogger("t.default"), timer=clock)  # as the supervisor builds it
    log.failed("loop", error(0))
    clock.tick(59.5)
    assert log.failed("loop", error(1)) is False
    clock.tick(0.5)
    assert log.failed("loop", error(2)) is True


def test_outage_detail_replaces_the_error_text_and_traceback_can_be_withheld(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = OutageLog(logging.getLogger("t.detail"), timer=FakeClock(0.0))
    caplog.set_level(logging.DEBUG, "t.detail")
    log.failed(
        "redis GET", ValueError("password=hunter2"), detail="ValueError: password=***", traceback=False
    )
    assert [r.getMessage() for r in caplog.records] == [
        "redis GET failed: ValueError: password=***",  # DEBUG
        "redis GET failed: ValueError: password=***",
    ]
    assert all(r.exc_info is None for r in caplog.records)


def test_a_full_counting_log_keeps_its_causes_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    log = OutageLog(logging.getLogger("t.full"), max_causes=2, when_full="count", timer=FakeClock(0.0))
    caplog.set_level(logging.INFO, "t.full")
    written = [log.failed(f"cause {n}", detail="odd") for n in range(5)]
    assert written == [True, True, False, False, False]
    assert log.causes() == ["cause 0", "cause 1"]
    assert log.overflowed == 3
    assert [r.getMessage() for r in lines(caplog, "t.full")][-1] == (
        "more than 2 distinct causes failing: further new ones are counted, not logged"
    )
    assert log.succeeded("cause 0") is True  # room again: a new cause is logged
    assert log.failed("cause 9", detail="odd") is True


def test_throttle_filter_one_line_per_window_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(0.0)
    logger = logging.getLogger("t.filter")
    throttle = ThrottleFilter(window_seconds=60, timer=clock)
    logger.addFilter(throttle)
    caplog.set_level(logging.INFO, "t.filter")
    try:
        for n in range(300):  # four per second, like per-event warnings in an outage
            try:
                raise error(n)
            except OperationalError:
                logger.warning(
                    "reaction on message %s not recorded: %s", n, "OperationalError", exc_info=True
                )
            logger.info("an info line is never throttled")
            clock.tick(0.25)
        records = lines(caplog, "t.filter")
        assert len(records) == 2
        assert records[0].exc_info is not None
        assert records[1].exc_info is None  # tracebacks only the first time
        assert "(and 239 more like this in the last 60 s)" in records[1].getMessage()
        assert sum(r.levelno == logging.INFO for r in caplog.records) == 300
    finally:
        logger.removeFilter(throttle)


def test_install_throttles_is_idempotent_and_removable() -> None:
    remove = install_throttles()
    again = install_throttles()
    try:
        votes = logging.getLogger("polly.engine.votes")
        assert sum(isinstance(f, ThrottleFilter) for f in votes.filters) == 1
    finally:
        again()
        remove()
    assert not any(isinstance(f, ThrottleFilter) for f in logging.getLogger("polly.engine.votes").filters)


async def test_a_corrupt_row_is_reported_once_not_every_tick(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path}/p.db"
    create_schema(url)
    database = Database(DatabaseSettings(url=SecretUrl(url)))
    with database.sync_engine.begin() as conn:
        for name, options in (("bad", "{not json"), ("good", '["a", "b"]')):
            conn.execute(
                text(
                    "INSERT INTO polls (name, question, options_json, server_id, channel_id, creator_id, "
                    "open_time, close_time, status) VALUES (:n, 'q', :o, '1', '2', '0', "
                    "'2026-01-01 00:00:00', '2026-01-02 00:00:00', 'active')"
                ),
                {"n": name, "o": options},
            )
    remove = install_throttles()
    caplog.set_level(logging.WARNING)
    try:
        store = PollStore(database.async_session_scope)
        for _tick in range(12):  # a minute of ticks
            seen = [v.name async for v in store.views(text("1=1"), limit=10)]
            assert seen == ["good"]  # the rest continue
    finally:
        remove()
        await database.dispose()
    corrupt = [r for r in caplog.records if "corrupt" in r.getMessage()]
    assert len(corrupt) == 1, [r.getMessage() for r in corrupt]


def test_by_message_separates_rows() -> None:
    records = [
        logging.LogRecord("polly.db.queries", logging.WARNING, __file__, 1, "row %d bad", (n,), None)
        for n in (1, 2, 1)
    ]
    assert len({by_message(r) for r in records}) == 2


async def test_supervisor_reports_start_summary_and_recovery(caplog: pytest.LogCaptureFixture) -> None:
    failures_left = 4

    async def flaky(ready: Readiness) -> None:
        nonlocal failures_left
        ready.ready()
        if failures_left:
            failures_left -= 1
            raise ConnectionRefusedError("db down")
        await asyncio.Event().wait()

    caplog.set_level(logging.INFO, "polly.supervisor")
    async with Supervisor(
        registry=None, backoff=Backoff(initial=0.01, cap=0.02, jitter=0.1), recovered_after_seconds=0.05,
        rng=random.Random(1), shutdown_timeout_seconds=1,
    ) as sup:  # fmt: skip
        sup.start_loop("flaky", flaky)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if any("recovered" in r.getMessage() for r in caplog.records):
                break
    messages = [r.getMessage() for r in lines(caplog, "polly.supervisor")]
    assert messages[0].startswith("supervised loop flaky failed: ConnectionRefusedError: db down")
    assert "next retry in" in messages[0]
    assert any(m.startswith("supervised loop flaky is failing: 3 consecutive failures") for m in messages)
    assert messages[-1].startswith("supervised loop flaky recovered after ")
    assert messages[-1].endswith("(4 failure(s))")
    assert len(messages) <= 4  # start, "is failing", recovered (+ at most one summary)
    tracebacks = [r for r in lines(caplog, "polly.supervisor") if r.exc_info]
    assert len(tracebacks) == 1


@pytest.fixture
def proxied_postgres(postgres_url: str) -> Iterator[tuple[str, object]]:
    host_port = postgres_url.split("@", 1)[1].split("/", 1)[0]
    host, _, port = host_port.partition(":")
    with tcp_proxy(host, int(port or 5432)) as proxy:
        yield postgres_url.replace(host_port, f"127.0.0.1:{proxy.port}"), proxy


async def test_status_line_goes_on_during_a_database_outage(
    proxied_postgres: tuple[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    url, proxy = proxied_postgres
    create_schema(url)
    settings = DatabaseSettings(url=SecretUrl(url), pool_timeout_seconds=2, connect_retry_max_seconds=1)
    database = Database(settings)
    outages = OutageLog(logging.getLogger("polly.status"))
    caplog.set_level(logging.INFO, "polly.status")
    try:
        assert await runner._status_counts(database, outages) == {}
        proxy.cut()  # type: ignore[attr-defined]
        assert await runner._status_counts(database, outages) is None
        assert await runner._status_counts(database, outages) is None
        assert outages.down_for(runner.STATUS_DB_CAUSE) is not None
        proxy.restore()  # type: ignore[attr-defined]
        assert await runner._status_counts(database, outages) == {}
    finally:
        await database.dispose()
    messages = [r.getMessage() for r in lines(caplog, "polly.status")]
    assert len(messages) == 2, messages
    assert messages[0].startswith("database (status line) failed: OperationalError")
    assert messages[1].startswith("database (status line) recovered after")
    assert "(2 failure(s))" in messages[1]
