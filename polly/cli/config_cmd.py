"""``polly config``: validate and print the effective settings."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from polly.cli.main import config_option, settings_or_exit


@click.group()
def config() -> None:
    """Inspect polly's settings."""


@config.command("check")
@config_option
def check(config_path: Path | None) -> None:
    """Validate the settings and print the effective values (secrets redacted).

    Exits 0 when the settings are valid and 2, listing every problem, when they are not.
    """
    settings = settings_or_exit(config_path)
    click.echo(yaml.safe_dump(settings.redacted(), sort_keys=False, allow_unicode=True).rstrip())
    click.echo("# settings are valid", err=True)
