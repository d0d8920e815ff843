"""The README stays true: every `edgekit ...` line in its code blocks names real commands and options.

Each line is parsed by the real CLI (click's parser, with types and choices checked) without running it;
`make demo` runs the whole walkthrough for real.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import typer

from edgekit.cli import app

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```(\w*)\n(.*?)```", text, flags=re.S)
    lines = []
    for lang, block in blocks:
        if lang not in ("", "bash", "sh", "console"):
            continue
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("edgekit "):
                lines.append(line.split(" #")[0].strip())
    return lines


COMMANDS = readme_commands()


def test_readme_shows_commands():
    assert len(COMMANDS) >= 10, "the README walkthrough lost its commands"


@pytest.mark.parametrize("line", COMMANDS)
def test_readme_command_parses(line):
    args = shlex.split(line)[1:]
    cmd: click.Command = typer.main.get_command(app)
    path = ["edgekit"]
    while isinstance(cmd, click.Group) and args and not args[0].startswith("-"):
        sub = cmd.get_command(click.Context(cmd), args[0])
        assert sub is not None, f"{line!r}: no command {args[0]!r} under {' '.join(path)}"
        path.append(args.pop(0))
        cmd = sub
    if isinstance(cmd, click.Group):
        return  # a group alone (e.g. `edgekit --version`)
    try:
        cmd.make_context(" ".join(path), args)
    except click.exceptions.Exit:
        pass  # --help / --version
    except click.UsageError as e:
        pytest.fail(f"{line!r} does not parse: {e.format_message()}")
