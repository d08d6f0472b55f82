"""polly's exception tree.

Every error polly raises on purpose derives from :class:`PollyError`::

    PollyError
    ├── ConfigError                  bad settings: names the key path, the value and the rule
    ├── DatabaseError
    │   ├── DatabaseUnavailableError the database cannot be reached (URL shown redacted)
    │   ├── SchemaError              the schema cannot be used or upgraded
    │   ├── PoolExhaustedError       no connection within the acquire timeout (names the limits)
    │   └── AsyncDatabaseNotConfiguredError  upstream's name: no async engine can be built for the URL
    ├── RedisError
    │   ├── RedisUnavailableError    Redis cannot be reached, or the breaker is open
    │   │   └── RedisMisconfiguredError  Redis answered but refused the settings (password, db)
    │   └── RedisPoolExhaustedError  no Redis connection within the acquire timeout
    ├── GatewayError                 a Discord operation failed (see polly.engine.gateway)
    │   ├── NotFoundError            404: the message, channel or reaction is gone
    │   ├── ForbiddenError           403: the bot lacks a permission
    │   ├── RateLimitedError         429: retry after ``retry_after_seconds``
    │   └── ServerError              5xx or a transport failure: transient
    ├── PollValidationError          a poll definition breaks a rule (lists every problem)
    ├── PollNotFoundError            no poll has the id asked for
    ├── CorruptPollError             a poll row that cannot be decoded (names the poll and the column)
    ├── PollStateError               the poll's state forbids the change (e.g. reopening an open poll)
    ├── ShutdownTimeoutError         tasks that did not stop by the shutdown deadline
    └── SupervisorError              the task supervisor refused a task (closed)
        ├── TaskLimitError           the supervisor already runs its maximum of live tasks
        └── ReadinessTimeoutError    loops that did not signal readiness in time (also a TimeoutError)

Exhaustion is its own type, separate from failure: a saturated pool is an operational signal
(raise the limit, find the holder), not a broken server.
"""

from __future__ import annotations

from collections.abc import Sequence


class PollyError(Exception):
    """Base of every error polly raises on purpose."""


class ConfigError(PollyError):
    """Settings that cannot be used. ``problems`` holds one line per offending key."""

    def __init__(self, problems: Sequence[str], source: str = "settings") -> None:
        self.problems = tuple(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid {source} ({len(self.problems)} problem(s)):\n{lines}")


class DatabaseError(PollyError):
    """A database operation failed."""


class DatabaseUnavailableError(DatabaseError):
    """The database cannot be reached. The message carries the redacted URL only."""


class SchemaError(DatabaseError):
    """The database schema cannot be used or upgraded."""


class PoolExhaustedError(DatabaseError):
    """No pooled connection became free within the acquire timeout."""


class AsyncDatabaseNotConfiguredError(DatabaseError):
    """No async engine can be built for the configured URL (upstream Polly's name, kept for imports)."""


class RedisError(PollyError):
    """A Redis operation failed."""


class RedisUnavailableError(RedisError):
    """Redis cannot be reached, or the circuit breaker is open."""


class RedisMisconfiguredError(RedisUnavailableError):
    """Redis answered but refused polly's settings (wrong password, db number out of range).

    Retrying cannot help, so this is a startup error. The message carries the redacted URL only.
    """


class RedisPoolExhaustedError(RedisError):
    """No Redis connection became free within the acquire timeout."""


class GatewayError(PollyError):
    """A Discord operation failed."""


class NotFoundError(GatewayError):
    """Discord answered 404: the object is gone (or never existed)."""


class ForbiddenError(GatewayError):
    """Discord answered 403: the bot lacks a permission."""


class RateLimitedError(GatewayError):
    """Discord answered 429. ``retry_after_seconds`` says when to try again."""

    def __init__(self, message: str, retry_after_seconds: float) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class ServerError(GatewayError):
    """Discord answered 5xx, or the transport failed: transient."""


class PollValidationError(PollyError):
    """A poll definition breaks one or more rules; ``problems`` lists all of them."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class PollNotFoundError(PollyError):
    """No poll has the id asked for; ``poll_id`` says which."""

    def __init__(self, poll_id: int) -> None:
        self.poll_id = poll_id
        super().__init__(f"no poll {poll_id}")


class CorruptPollError(PollyError):
    """A poll row that cannot be used; ``poll_id``, ``column`` and ``problem`` say which, where and why.

    Raised by the one row decoder, :func:`polly.db.poll_rows.poll_view`.
    """

    def __init__(self, poll_id: int, column: str, problem: str) -> None:
        self.poll_id = poll_id
        self.column = column
        self.problem = problem
        super().__init__(f"poll {poll_id}: {column}: {problem}")

    @property
    def reason(self) -> str:
        """The problem without the poll id, e.g. ``options_json is not valid JSON (…)``."""
        return f"{self.column} {self.problem}"


class PollStateError(PollyError):
    """The poll's current state does not allow the change; the message says what would."""


class ShutdownTimeoutError(PollyError):
    """Tasks that had not stopped when the shutdown deadline passed."""

    def __init__(self, task_names: Sequence[str], deadline_seconds: float) -> None:
        self.task_names = tuple(task_names)
        self.deadline_seconds = deadline_seconds
        super().__init__(
            f"{len(self.task_names)} task(s) still running after the {deadline_seconds:g} s shutdown "
            f"deadline: {', '.join(self.task_names)}"
        )


class SupervisorError(PollyError):
    """The task supervisor cannot take the task (it is not running, or is shutting down)."""


class TaskLimitError(SupervisorError):
    """The supervisor already runs ``max_tasks`` live tasks."""

    def __init__(self, task_name: str, max_tasks: int) -> None:
        self.task_name = task_name
        self.max_tasks = max_tasks
        super().__init__(
            f"cannot start task {task_name!r}: the supervisor's limit of {max_tasks} live tasks is reached"
        )


class ReadinessTimeoutError(SupervisorError, TimeoutError):
    """Supervised loops that had not signalled readiness when the startup timeout passed."""

    def __init__(self, task_names: Sequence[str], timeout_seconds: float, ended: Sequence[str] = ()) -> None:
        self.task_names = tuple(task_names)
        self.ended = tuple(ended)
        self.timeout_seconds = timeout_seconds
        detail = (
            f"not ready after {timeout_seconds:g} s: {', '.join(self.task_names)}" if self.task_names else ""
        )
        if self.ended:
            ended_text = f"ended before signalling readiness: {', '.join(self.ended)}"
            detail = f"{detail}; {ended_text}" if detail else ended_text
        super().__init__(f"{len(self.task_names) + len(self.ended)} supervised loop(s) {detail}")
