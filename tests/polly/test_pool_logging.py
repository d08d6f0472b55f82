"""The connection pool's error records as ``polly run`` logs them: a connection whose reset fails
is one warning line naming the exception's type, never a traceback or the driver's message; a
cancellation cut short at shutdown is not logged at all."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.pool import QueuePool

from polly.cli.run_cmd import POOL_LOGGERS, configure_logging, pool_record
from polly.db.pool import MonitoredAsyncQueuePool, MonitoredQueuePool

SECRET = "hunter2-in-a-parameter"


class Captured:
    """What a handler carrying polly's pool filter writes, as ``polly run`` configures it."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.handler.addFilter(pool_record)

    @property
    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()


@pytest.fixture
def captured() -> Iterator[Captured]:
    capture = Captured()
    logger = logging.getLogger("sqlalchemy.pool")
    saved = logger.level
    logger.setLevel(logging.WARNING)
    logger.addHandler(capture.handler)
    try:
        yield capture
    finally:
        logger.removeHandler(capture.handler)
        logger.setLevel(saved)


def _engine_whose_reset_raises(error: BaseException) -> Engine:
    engine = create_engine("sqlite://", poolclass=QueuePool)

    @event.listens_for(engine.pool, "reset")
    def _fail(dbapi_connection: object, record: object, state: object) -> None:
        raise error

    return engine


def test_a_failed_reset_is_one_warning_line_without_the_drivers_message(captured: Captured) -> None:
    engine = _engine_whose_reset_raises(RuntimeError(f"statement parameters: {SECRET}"))
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    engine.dispose()
    assert len(captured.lines) == 1, captured.lines
    (line,) = captured.lines
    # SQLAlchemy logs it on the pool class's own child logger, which a parent's filter never sees
    assert line.startswith("WARNING sqlalchemy.pool.impl.QueuePool: a pooled connection failed"), line
    assert "(RuntimeError)" in line
    assert "nothing is lost" in line
    assert SECRET not in captured.stream.getvalue()


def test_a_cancellation_during_reset_is_not_logged(captured: Captured) -> None:
    engine = _engine_whose_reset_raises(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError), engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    engine.dispose()
    assert captured.lines == []


def test_other_records_pass_unchanged(captured: Captured) -> None:
    logging.getLogger("sqlalchemy.pool.impl.QueuePool").warning("pool %s is full", "main")
    record = logging.LogRecord("polly.engine", logging.ERROR, __file__, 1, "boom", None, None)
    assert pool_record(record) is True
    assert (record.levelno, record.getMessage()) == (logging.ERROR, "boom")
    assert captured.lines == ["WARNING sqlalchemy.pool.impl.QueuePool: pool main is full"]


def test_polly_run_puts_the_filter_on_every_root_handler() -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers = []
    try:
        configure_logging("INFO")
        assert root.handlers, "basicConfig installs a handler"
        assert all(pool_record in handler.filters for handler in root.handlers)
        assert logging.getLogger("sqlalchemy.pool").getEffectiveLevel() == logging.WARNING
        for pool_class in (MonitoredQueuePool, MonitoredAsyncQueuePool):  # SQLAlchemy's instance logger name
            assert f"{pool_class.__module__}.{pool_class.__name__}".startswith(POOL_LOGGERS)
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers = saved_handlers
        root.setLevel(saved_level)
