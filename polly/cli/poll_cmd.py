"""``polly poll``: create, list, show, close, reopen, delete and export polls.

The commands write only to the database (see :mod:`polly.polls.service`); the running engine picks
every change up on its next tick. Exit status: 0 done (also for closing a closed poll), 1 an
operational error (no such poll, an invalid poll file, a corrupt row, a state that forbids the
change, an unusable database), 2 bad settings or usage.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError

from polly.app import open_database
from polly.cli.main import config_option, settings_or_exit
from polly.db.engine import Database, describe_connect_error
from polly.db.models import STATUSES, utcnow_naive
from polly.db.schema import check_schema
from polly.db.urls import backend_of, parse_url
from polly.errors import ConfigError, PollValidationError, PollyError
from polly.polls import reports, service
from polly.polls.definition import PollDefinition, format_local, load_definitions, validate_poll

T = TypeVar("T")


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"polly: {message}", err=True)
    sys.exit(code)


@contextmanager
def _database(config_path: Path | None) -> Iterator[Database]:
    """The configured database, checked usable; errors exit 1 with the redacted URL."""
    settings = settings_or_exit(config_path)
    url = settings.database.url.get_secret_value()
    try:
        parsed = parse_url(url)
    except ConfigError as err:
        _fail(str(err), 2)
    file = parsed.database if backend_of(parsed) == "sqlite" else None
    if file not in (None, "", ":memory:") and not Path(str(file)).exists():  # connecting would create it
        _fail(f"no database file at {parsed.database} (run `polly db upgrade` to create it)")
    with open_database(settings) as database:
        try:
            report = check_schema(database.sync_engine)
            if report.detected_version is None:
                shown = database.redacted_url
                _fail(f"the database {shown} is empty: run `polly db upgrade` to create the schema")
            if not report.usable:
                findings = "; ".join(report.lines()[2:])
                shown = database.redacted_url
                _fail(f"the database {shown} cannot be used as it is ({findings}); run `polly db upgrade`")
            yield database
        except PollyError as err:
            _fail(str(err))
        except SQLAlchemyError as err:  # e.g. the connection dropped mid-command: nothing was committed
            detail = describe_connect_error(err, parsed.password)
            _fail(f"database error on {database.redacted_url}: {detail}")


def _run(config_path: Path | None, work: Callable[[Database], T]) -> T:
    with _database(config_path) as database:
        return work(database)


def _local(naive_utc: datetime, tz_name: str) -> str:
    """For people: ``YYYY-MM-DD HH:MM`` in the poll's zone."""
    return format_local(naive_utc, tz_name).replace("T", " ")


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


@click.group()
def poll() -> None:
    """Create, list, show, close, reopen, delete and export polls (database only; the engine acts on it)."""


#: Poll ids are INTEGER columns: 32-bit signed on PostgreSQL and MariaDB.
MAX_POLL_ID = 2**31 - 1
poll_id_argument = click.argument("poll_id", metavar="ID", type=click.IntRange(1, MAX_POLL_ID))


def _snowflake_option(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A Discord id filter: digits only (what upstream stores), else a usage error (exit 2)."""
    if value is not None and (not value.isascii() or not value.isdigit() or len(value) > 21):
        msg = f"{value!r} is not a Discord id (15-21 digits)"
        raise click.BadParameter(msg, param=param)
    return value


@poll.command("create")
@config_option
@click.option(
    "--file",
    "files",
    multiple=True,
    type=click.Path(path_type=Path, exists=True),
    help="A JSON file (one poll or a list) or a directory of them, in upstream's import format.",
)
@click.option("--name")
@click.option("--question")
@click.option("--option", "options", multiple=True, help="An option (2-10; repeat the flag).")
@click.option("--emoji", "emojis", multiple=True, help="One per option, in order (default 🇦, 🇧, ...).")
@click.option("--server-id")
@click.option("--channel-id")
@click.option("--multiple-choice", is_flag=True, default=None)
@click.option("--max-choices", type=int)
@click.option("--anonymous", is_flag=True, default=None)
@click.option("--ping-role-id", help="Mention this role when the poll opens (enables the ping).")
@click.option("--image-message-text")
@click.option("--open-time", help="YYYY-MM-DDTHH:MM in --timezone.")
@click.option("--close-time", help="YYYY-MM-DDTHH:MM in --timezone (default: 24 hours after opening).")
@click.option("--timezone", help="IANA name (default US/Eastern).")
@click.option("--open-immediately", is_flag=True, default=None)
@click.option("--creator-id", default="0", show_default=True, help="Discord user id recorded as creator.")
@click.option("--dry-run", is_flag=True, help="Validate only; write nothing.")
def create(
    *, config_path: Path | None, files: tuple[Path, ...], creator_id: str, dry_run: bool, **fields: Any
) -> None:
    """Create polls from flags or from JSON files (all or none: one transaction).

    With --file, the poll flags given fill fields the files leave out (e.g. --server-id).
    """
    given = {k: v for k, v in fields.items() if v not in (None, ())}
    if "options" in given:
        given["options"] = list(given["options"])
    if "emojis" in given:
        given["emojis"] = list(given["emojis"])
    if "ping_role_id" in given:
        given["ping_role_enabled"] = True
    try:
        definitions = _definitions(files, given, now=utcnow_naive())
    except PollValidationError as err:
        lines = "\n".join(f"  - {p}" for p in err.problems)
        _fail(f"invalid poll definition ({len(err.problems)} problem(s)); nothing was written:\n{lines}")
    if dry_run:
        for d in definitions:
            click.echo(f"valid: {d.name!r} opens {_local(d.open_time, d.timezone)}, "
                       f"closes {_local(d.close_time, d.timezone)} {d.timezone}")  # fmt: skip
        click.echo(f"{len(definitions)} poll(s) valid; nothing was written (--dry-run)")
        return
    ids = _run(config_path, lambda db: service.create_polls(db, definitions, creator_id=creator_id))
    for poll_id, d in zip(ids, definitions, strict=True):
        when = (
            "on the engine's next tick"
            if d.open_immediately
            else f"at {_local(d.open_time, d.timezone)} {d.timezone}"
        )
        click.echo(f"created poll {poll_id}: {d.name} (opens {when})")


def _definitions(files: tuple[Path, ...], given: dict[str, Any], *, now: datetime) -> list[PollDefinition]:
    """The polls of ``files`` (``given`` fills what they leave out), else the one the flags describe."""
    if files:
        return load_definitions(files, now=now, defaults=given)
    definition, problems = validate_poll(given, "command line", now=now)
    if definition is None:
        raise PollValidationError(problems)
    return [definition]


@poll.command("list")
@config_option
@click.option("--status", type=click.Choice(sorted(STATUSES)))
@click.option("--server-id", callback=_snowflake_option, help="Only polls of this server (a Discord id).")
@click.option("--channel-id", callback=_snowflake_option, help="Only polls of this channel (a Discord id).")
@click.option("--limit", type=click.IntRange(1, reports.MAX_LIST_LIMIT), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(*, config_path: Path | None, as_json: bool, **filters: Any) -> None:
    """List polls, newest first, with times in each poll's time zone."""
    found = _run(config_path, lambda db: reports.list_polls(db, **filters))
    for row in found.skipped:
        click.echo(f"polly: skipped corrupt poll {row.row_id}: {row.reason}", err=True)
    if as_json:
        _echo_json({
            "polls": [{
                "id": p.id, "name": p.name, "status": p.status, "timezone": p.timezone,
                "open_time": format_local(p.open_time, p.timezone),
                "close_time": format_local(p.close_time, p.timezone),
                "open_time_utc": p.open_time.isoformat(), "close_time_utc": p.close_time.isoformat(),
                "server_id": p.server_id, "channel_id": p.channel_id, "message_id": p.message_id,
                "votes": p.votes, "voters": p.voters,
            } for p in found.polls],
            "skipped": [{"id": r.row_id, "reason": r.reason} for r in found.skipped],
            "truncated": found.truncated,
        })  # fmt: skip
        return
    header = ("ID", "NAME", "STATUS", "OPENS", "CLOSES", "TIMEZONE", "VOTES", "VOTERS")
    rows = [
        (str(p.id), _clip("(no name)" if p.name is None else p.name, 32), p.status,
         _local(p.open_time, p.timezone),
         _local(p.close_time, p.timezone), p.timezone, str(p.votes), str(p.voters))
        for p in found.polls
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    if found.truncated:
        click.echo(f"(showing the newest {len(found.polls) + len(found.skipped)}; raise --limit for more)")


def _clip(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


@poll.command("show")
@config_option
@poll_id_argument
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(*, config_path: Path | None, poll_id: int, as_json: bool) -> None:
    """Settings, results per option, winner(s) and voters (not for anonymous polls)."""
    d = _run(config_path, lambda db: reports.show_poll(db, poll_id))
    p = d.poll
    if as_json:
        _echo_json({
            "id": p.id, "name": p.name, "question": p.question, "status": p.status,
            "server_id": str(p.server_id), "channel_id": str(p.channel_id),
            "message_id": None if p.message_id is None else str(p.message_id), "creator_id": d.creator_id,
            "timezone": p.timezone, "open_time": format_local(p.open_time, p.timezone),
            "close_time": format_local(p.close_time, p.timezone), "open_time_utc": p.open_time.isoformat(),
            "close_time_utc": p.close_time.isoformat(), "open_immediately": d.open_immediately,
            "multiple_choice": p.multiple_choice, "max_choices": p.max_choices, "anonymous": p.anonymous,
            "ping_role_enabled": p.ping_role_enabled,
            "ping_role_id": None if p.ping_role_id is None else str(p.ping_role_id),
            "ping_role_on_close": p.ping_role_on_close, "ping_role_on_update": d.ping_role_on_update,
            "image_message_text": p.image_message_text,
            "results": [{"index": r.index, "option": r.option, "emoji": r.emoji, "votes": r.votes,
                         "percent": round(r.percent, 1)} for r in d.results],
            "total_votes": d.total_votes, "voters_count": d.voter_count,
            "winners": [p.options[i] for i in d.winners],
            "voters": d.voters, "voters_truncated": d.voters_truncated,
        })  # fmt: skip
        return
    choice = "single choice"
    if p.multiple_choice:
        choice = f"multiple choice (up to {p.max_choices})" if p.max_choices else "multiple choice"
    ping = "off"
    if p.ping_role_enabled:
        on = f"on close: {_yn(p.ping_role_on_close)}, on update: {_yn(d.ping_role_on_update)}"
        ping = f"role {p.ping_role_id} ({on})"
    message = f" (message {p.message_id})" if p.message_id else ""
    lines = [
        f"poll {p.id}: {p.name}",
        f"  status:     {p.status}{message}",
        f"  question:   {p.question}",
        f"  server:     {p.server_id}   channel: {p.channel_id}   creator: {d.creator_id}",
        f"  opens:      {_local(p.open_time, p.timezone)} {p.timezone} ({p.open_time:%Y-%m-%d %H:%M} UTC)"
        + (" · open immediately" if d.open_immediately else ""),
        f"  closes:     {_local(p.close_time, p.timezone)} {p.timezone} ({p.close_time:%Y-%m-%d %H:%M} UTC)",
        f"  choice:     {choice}; anonymous: {_yn(p.anonymous)}; ping: {ping}",
    ]
    if p.image_message_text:
        lines.append(f"  image text: {p.image_message_text}")
    lines.append(f"results: {d.total_votes} vote(s) from {d.voter_count} voter(s)")
    width = max(len(r.option) for r in d.results)
    for r in d.results:
        crown = "  🏆" if r.index in d.winners else ""
        lines.append(f"  {r.emoji} {r.option.ljust(width)}  {r.votes:>5}  {r.percent:5.1f}%{crown}")
    lines.append("winner: " + (", ".join(p.options[i] for i in d.winners) or "none (no votes)"))
    if d.voters is None:
        lines.append("voters: hidden (anonymous poll)")
    else:
        cut = f" (from the first {reports.MAX_VOTE_ROWS_SHOWN} votes)" if d.voters_truncated else ""
        lines.append(f"voters{cut}:")
        lines += [f"  {user}: {', '.join(p.options[i] for i in idx if 0 <= i < len(p.options))}"
                  for user, idx in d.voters.items()]  # fmt: skip
    click.echo("\n".join(lines))


def _yn(value: bool) -> str:
    return "yes" if value else "no"


@poll.command("close")
@config_option
@poll_id_argument
def close(*, config_path: Path | None, poll_id: int) -> None:
    """Close a poll now; the engine posts its final results. Closing a closed poll does nothing."""
    before = _run(config_path, lambda db: service.close_poll(db, poll_id))
    if before is None:
        click.echo(f"poll {poll_id} is already closed")
    else:
        click.echo(f"poll {poll_id} closed (was {before})")


@poll.command("reopen")
@config_option
@poll_id_argument
@click.option(
    "--extend-minutes",
    type=click.IntRange(1, service.MAX_EXTEND_MINUTES),
    help="Close N minutes from now (needed when the close time has passed).",
)
@click.option("--reset-votes", is_flag=True, help="Delete the poll's votes (same transaction).")
def reopen(*, config_path: Path | None, poll_id: int, extend_minutes: int | None, reset_votes: bool) -> None:
    """Reopen a closed poll; its close time must be (or be extended into) the future."""
    now = utcnow_naive()
    done = _run(config_path, lambda db: service.reopen_poll(
        db, poll_id, now=now, extend_minutes=extend_minutes, reset_votes=reset_votes))  # fmt: skip
    how = "active" if done.status == "active" else "scheduled (never posted: the engine posts it)"
    extra = f"; {done.votes_deleted} vote(s) deleted" if reset_votes else ""
    closes = f"{_local(done.close_time, done.timezone)} {done.timezone}"
    click.echo(f"poll {poll_id} reopened: {how}, closes {closes}{extra}")


@poll.command("delete")
@config_option
@poll_id_argument
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def delete(*, config_path: Path | None, poll_id: int, yes: bool) -> None:
    """Delete a poll and its votes (one transaction). A posted Discord message stays."""
    if not yes:
        click.confirm(f"delete poll {poll_id} and all its votes?", abort=True, err=True)
    votes = _run(config_path, lambda db: service.delete_poll(db, poll_id))
    click.echo(f"poll {poll_id} deleted with {votes} vote(s)")


@poll.command("export")
@config_option
@poll_id_argument
@click.option(
    "--output", type=click.Path(path_type=Path, dir_okay=False), help="Write here instead of stdout."
)
def export(*, config_path: Path | None, poll_id: int, output: Path | None) -> None:
    """Write the poll in the JSON import format (times in its time zone): `poll create --file` reads it."""
    data = _run(config_path, lambda db: reports.export_poll(db, poll_id, now=utcnow_naive()))
    text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as err:
        _fail(f"cannot write {output}: {err.strerror or err}")
    click.echo(f"poll {poll_id} exported to {output}", err=True)
