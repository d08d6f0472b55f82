"""The ``polly`` command group.

Subcommands live in their own modules under :mod:`polly.cli` and are imported only when used, so
``polly --help`` stays fast and a command's dependencies load only for that command.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

import click

from polly.config import Settings, load_settings
from polly.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

#: command name -> (module, attribute, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "config": ("polly.cli.config_cmd", "config", "Validate and show the effective settings."),
    "db": ("polly.cli.db_cmd", "db", "Check or upgrade the database schema."),
    "run": ("polly.cli.run_cmd", "run", "Run the poll engine."),
    "poll": ("polly.cli.poll_cmd", "poll", "Create, list, show, close, reopen, delete and export polls."),
    "soak": ("polly.cli.soak_cmd", "soak", "Run the sandbox engine under load and write a report."),
    "web": ("polly.cli.web_cmd", "web", "Serve the web dashboard alone."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use; missing modules are not listed."""

    def list_commands(self, ctx: click.Context) -> list[str]:  # noqa: ARG002 - click's signature
        available = [
            name for name, (module, _, _) in COMMANDS.items() if importlib.util.find_spec(module) is not None
        ]
        return sorted(available)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:  # noqa: ARG002
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attr, _ = entry
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:
                return None
            raise
        command = getattr(module, attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _version() -> str:
    try:
        return version("polly")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
        return "0+unknown"


def config_option(func: F) -> F:
    """The ``--config PATH`` option every subcommand that reads settings takes."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        default=None,
        help="config.yaml to read (default: $POLLY_CONFIG, else ./config.yaml if present).",
    )(func)


def settings_or_exit(config_path: Path | None) -> Settings:
    """Load the settings, or print every problem and exit with status 2."""
    try:
        return load_settings(config_path)
    except ConfigError as err:
        click.echo(f"polly: {err}", err=True)
        sys.exit(2)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), "--version", "-V", prog_name="polly")
def main() -> None:
    """polly: a hardened engine for Polly, the Discord poll bot.

    Settings come from config.yaml and the environment (upstream Polly's variable names); see
    docs/configuration.md.

    \b
    Exit status of every command:
      0  done
      1  a runtime failure (database unreachable, no such poll, a state that forbids the change)
      2  invalid settings (including a missing DISCORD_TOKEN for `polly run`) or invalid usage
    """
