"""Every command block of README.md and docs/*.md marked runnable runs as documented.

Markers (an HTML comment on the line before a fenced block, invisible when rendered):

* ``<!-- runnable -->`` before a ``console`` block: each ``$ `` line (with ``\\`` continuations) is a
  command that must exit 0; the other lines are the output shown to the reader and are not compared.
* ``<!-- runnable exit=N -->``: each command must exit with status N instead.
* ``<!-- file: PATH -->`` before any block: the block's text is written to PATH first.

A document's blocks run in order, in one temporary directory holding a copy of the shipped
``config.example.yaml`` (as a checkout does), with a fresh SQLite database there (the default
``./db/polly.db``) and no polly settings in the environment. ``uv run polly`` runs this
environment's ``polly``. Each command is bounded in time.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"^<!-- (?:runnable(?: exit=(?P<exit>\d+))?|file: (?P<file>\S+)) -->$")
COMMAND_TIMEOUT_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Block:
    document: Path
    line: int  # 1-based line of the marker
    text: str
    file: str | None  # write text here
    exit_code: int

    def commands(self) -> list[str]:
        out: list[str] = []
        pending = ""
        for raw in self.text.splitlines():
            if pending:
                pending += "\n" + raw
            elif raw.startswith("$ "):
                pending = raw[2:]
            else:
                continue
            if not pending.endswith("\\"):
                out.append(pending)
                pending = ""
        return out


def blocks(document: Path) -> list[Block]:
    lines = document.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    for i, line in enumerate(lines):
        match = MARKER.match(line.strip())
        if not match:
            continue
        start = i + 1
        while start < len(lines) and not lines[start].strip():
            start += 1
        assert start < len(lines), f"{document.name}:{i + 1}: a marker without a block"
        assert lines[start].startswith("```"), f"{document.name}:{i + 1}: a marker without a block"
        end = next(j for j in range(start + 1, len(lines)) if lines[j].startswith("```"))
        text = "\n".join(lines[start + 1 : end]) + "\n"
        found.append(Block(document, i + 1, text, match["file"], int(match["exit"] or 0)))
    return found


def environment(workdir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("POLLY_", "OTEL_", "DB_", "REDIS_"))
        and k not in ("DATABASE_URL", "DISCORD_TOKEN")
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(workdir)
    return env


RUNNABLE = [doc for doc in DOCUMENTS if any(b.file is None for b in blocks(doc))]


def test_documents_have_runnable_blocks() -> None:
    names = {doc.name for doc in RUNNABLE}
    assert {"README.md", "polls.md", "configuration.md"} <= names, names


@pytest.mark.timeout(300)
@pytest.mark.parametrize("document", RUNNABLE, ids=lambda p: p.name)
def test_runnable_blocks(document: Path, tmp_path: Path) -> None:
    shutil.copy(ROOT / "config.example.yaml", tmp_path / "config.example.yaml")
    env = environment(tmp_path)
    for block in blocks(document):
        where = f"{document.name}:{block.line}"
        if block.file is not None:
            target = tmp_path / block.file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text, encoding="utf-8")
            continue
        commands = block.commands()
        assert commands, f"{where}: a runnable block without a `$ ` command"
        for command in commands:
            runnable = re.sub(r"\buv run (polly|python)\b", r"\1", command)
            result = subprocess.run(
                ["bash", "-c", runnable],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS,
                check=False,
            )  # fmt: skip
            shown = f"{where}: `{command}` exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            assert result.returncode == block.exit_code, shown
            assert "Traceback" not in result.stderr, shown


def test_marker_parsing() -> None:
    block = Block(Path("x.md"), 1, "$ a \\\n    b\nout\n$ c\n", None, 0)
    assert block.commands() == ["a \\\n    b", "c"]
