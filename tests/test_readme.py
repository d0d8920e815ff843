"""The README stays true: every `edgekit ...` line in its code blocks names real commands and options.

Each line is parsed by the real CLI (click's parser, with types and choices checked) without running it;
`make demo` runs the whole walkthrough for real.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

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


def _parse(line: str) -> str | None:
    """Parse `line` with the real CLI without running it; the usage error's message, or None."""
    args = shlex.split(line)[1:]
    cmd = typer.main.get_command(app)
    path = ["edgekit"]
    # typer vendors its own click, so groups are recognised by behaviour, not by click's classes
    while hasattr(cmd, "get_command") and args and not args[0].startswith("-"):
        sub = cmd.get_command(cmd.context_class(cmd), args[0])
        if sub is None:
            return f"no command {args[0]!r} under {' '.join(path)}"
        path.append(args.pop(0))
        cmd = sub
    if hasattr(cmd, "get_command"):
        return None  # a group alone (e.g. `edgekit --version`)
    try:
        cmd.make_context(" ".join(path), args)
    except Exception as e:
        if type(e).__name__ == "Exit":
            return None  # --help / --version
        if hasattr(e, "format_message"):
            return e.format_message()
        raise
    return None


def test_the_parser_catches_a_wrong_option():
    """The check below can fail: a made-up option or command is reported."""
    assert "--no-such-option" in (_parse("edgekit train sequence --data d --no-such-option 1") or "")
    assert "nope" in (_parse("edgekit train nope") or "")
    assert _parse("edgekit train sequence --data d --name har") is None


@pytest.mark.parametrize("line", COMMANDS)
def test_readme_command_parses(line):
    problem = _parse(line)
    assert problem is None, f"{line!r} does not parse: {problem}"


def test_readme_inventory_example_loads(tmp_path):
    """The `hosts.toml` shown in the README is one the deploy command accepts."""
    from edgekit.deploy.targets import expand, load_inventory

    block = re.search(r"```toml\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    assert block, "the README lost its hosts.toml example"
    (tmp_path / "hosts.toml").write_text(block.group(1))
    kitchen = expand(["kitchen"], load_inventory(tmp_path / "hosts.toml"))
    assert [(t.user, t.host, t.root) for t in kitchen] == [("pi", "10.0.0.21", "/opt/edgekit"),
                                                           ("pi", "10.0.0.22", "/opt/edgekit")]
