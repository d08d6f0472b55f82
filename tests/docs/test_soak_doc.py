"""docs/operations.md's table of `polly soak` options gives the defaults the command really has."""

from __future__ import annotations

import re
from pathlib import Path

import click

from polly.cli.soak_cmd import soak

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
ROW = re.compile(r"^\| `(--[a-z-]+)`(?:, `(--[a-z-]+)`)? \| ([^|]+) \|", re.MULTILINE)


def _shown(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_every_soak_option_is_documented_with_its_default() -> None:
    options = {  # --config is every command's option, documented once in configuration.md
        p.opts[0]: p.default for p in soak.params if isinstance(p, click.Option) and p.opts[0] != "--config"
    }
    documented: dict[str, str] = {}
    for match in ROW.finditer(DOC.read_text(encoding="utf-8")):
        names = [n for n in match.group(1, 2) if n]
        cell = match.group(3).strip()
        defaults = [d.strip().strip("`") for d in cell.split(",")]
        if len(defaults) != len(names):  # one cell for one option: the whole text
            defaults = [cell.strip("`")] * len(names)
        documented.update(zip(names, defaults, strict=True))
    missing = sorted(set(options) - set(documented))
    assert missing == [], f"soak options without a row: {missing}"
    wrong = {
        name: (documented[name], _shown(default))
        for name, default in options.items()
        if default is not None and documented[name] != _shown(default)
    }
    assert wrong == {}, f"documented vs real defaults: {wrong}"
