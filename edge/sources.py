"""What audio and camera sources have in common: the table entry, the choice check, the optional import."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from edgekit.errors import UserError


@dataclass(frozen=True)
class SourceSpec:
    """One row of a sources table: the function that opens it and what to tell the user."""

    name: str
    open: Callable[..., Any]
    """Called with the settings; returns an iterator (audio frames) or a camera object."""
    help: str
    """One line for --help and error messages."""
    finite: bool = False
    """The source ends by itself (files); ending is not a failure."""


def pick(setting: str, name: str, table: Mapping[str, Any]) -> Any:
    """The table row called `name`, or a `UserError` naming `setting`, the choices and the closest one.

    `setting` is how the user set it: an environment variable (`EDGEKIT_AUDIO_SOURCE`) or an option
    (`--ui`).
    """
    if name in table:
        return table[name]
    close = difflib.get_close_matches(name, list(table), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    what = "Option" if setting.startswith("-") else "Setting"
    raise UserError(f"{what} {setting} is {name!r}; use one of: {', '.join(table)}{hint}.")


def describe(table: Mapping[str, SourceSpec]) -> str:
    """`name: help` lines for --help text."""
    return "; ".join(f"{s.name}: {s.help}" for s in table.values())


def optional_module(name: str, install: str) -> Any:
    """Import `name` (a device library installed only where it is used), or a `UserError` saying `install`."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise UserError(install) from e
