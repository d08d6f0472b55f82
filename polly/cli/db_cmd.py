"""``polly db``: check or upgrade the database schema.

``check`` exits 0 when polly can use the database (missing indexes or ledger rows are listed but do not
fail it), 1 when it cannot (missing tables or columns, a schema newer than polly, or an unreachable
database), 2 for invalid settings. ``upgrade`` applies only additive changes and exits 1 if it fails,
having left the database as it was.
"""

from __future__ import annotations

from pathlib import Path

import click

from polly.cli.main import config_option, settings_or_exit
from polly.config import redact_url
from polly.db.schema import check_schema, upgrade_schema
from polly.db.urls import backend_of, parse_url
from polly.errors import ConfigError, DatabaseError


def _sqlite_file(url: str) -> Path | None:
    parsed = parse_url(url)
    if backend_of(parsed) != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _sqlite_file_or_exit(url: str) -> Path | None:
    try:
        return _sqlite_file(url)
    except ConfigError as err:
        click.echo(f"polly: {err}", err=True)
        raise SystemExit(2) from err


@click.group()
def db() -> None:
    """Check or upgrade the database schema (upstream Polly's, plus polly's indexes)."""


@db.command("check")
@config_option
def check(config_path: Path | None) -> None:
    """Report how the database differs from the current schema; exit 1 if polly cannot use it."""
    settings = settings_or_exit(config_path)
    url = settings.database.url.get_secret_value()
    file = _sqlite_file_or_exit(url)
    if file is not None and not file.exists():
        click.echo(f"polly: no database file at {file} (run `polly db upgrade` to create it)", err=True)
        raise SystemExit(1)
    try:
        report = check_schema(url)
    except DatabaseError as err:
        click.echo(f"polly: {err}", err=True)
        raise SystemExit(1) from err
    click.echo(f"database: {redact_url(url)}")
    for line in report.lines():
        click.echo(line)
    if not report.usable:
        click.echo("database cannot be used as it is: run `polly db upgrade`", err=True)
        raise SystemExit(1)
    click.echo(
        "database is usable" + ("" if report.up_to_date else "; `polly db upgrade` would add the rest")
    )


@db.command("upgrade")
@config_option
def upgrade(config_path: Path | None) -> None:
    """Add missing tables, columns (upstream's defaults) and indexes; record versions 1..11.

    Additive only and idempotent; on any error the database is left as it was.
    """
    settings = settings_or_exit(config_path)
    url = settings.database.url.get_secret_value()
    file = _sqlite_file_or_exit(url)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
    try:
        before = check_schema(url)
        after = upgrade_schema(url, before_step=lambda step: click.echo(f"applying: {step}"))
    except DatabaseError as err:
        click.echo(f"polly: {err}", err=True)
        raise SystemExit(1) from err
    if before.up_to_date:
        click.echo("schema is up to date; nothing to do")
    for line in after.lines():
        click.echo(line)
    if not after.up_to_date:
        click.echo("schema upgrade left differences (see above)", err=True)
        raise SystemExit(1)
    click.echo(f"schema is at version {after.detected_version}")
