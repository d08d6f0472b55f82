"""``python -m polly.cli``: the ``polly`` command."""

from polly.cli.main import main

main()
