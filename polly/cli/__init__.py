"""The ``polly`` command."""

from polly.cli.main import main

__all__ = ["main"]
