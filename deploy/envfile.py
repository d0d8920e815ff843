"""The device's `.env`: parse, merge without losing what the user wrote, render.

A merge changes only the keys it is given: every other line (the user's own keys, comments, blank
lines, their order) comes back byte for byte, so a deploy never erases a setting it does not own.
"""

from __future__ import annotations

import re

from edgekit.errors import UserError

KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MARK = "# set by edgekit deploy"
_LINE_RE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")


def _unquote(raw: str) -> str:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return raw[1:-1]
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return re.sub(r'\\(["\\])', r"\1", raw[1:-1])
    return raw.split(" #", 1)[0].rstrip()


def parse(text: str | None) -> dict[str, str]:
    """The key → value pairs of a `.env` text (last one wins, like docker compose)."""
    out: dict[str, str] = {}
    for line in (text or "").splitlines():
        m = _LINE_RE.match(line)
        if m:
            out[m.group(1)] = _unquote(m.group(2))
    return out


def _render_value(value: str) -> str:
    if "\n" in value or "\r" in value:
        raise UserError(f"An .env value cannot contain a line break: {value!r}.")
    if value == "" or re.fullmatch(r"[A-Za-z0-9_./:,@+%=-]+", value):
        return value
    if "$" in value:  # Compose expands $VAR in unquoted and double-quoted values, not in single-quoted ones
        if "'" in value or "${" in value:  # python-dotenv (`serve --env-file`) expands ${VAR} even there
            raise UserError(f"An .env value cannot hold ${{ or both $ and ' (each .env reader would change it): "
                            f"{value!r}.")
        return f"'{value}'"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def merge(text: str | None, updates: dict[str, str]) -> str:
    """`text` with `updates` applied: changed keys edited in place, new keys appended, the rest kept."""
    for key in updates:
        if not KEY_RE.match(key):
            raise UserError(f"{key!r} is not a valid .env key (letters, digits and '_', not starting with a digit).")
    lines = (text or "").splitlines()
    done: set[str] = set()
    out = []
    for line in lines:
        m = _LINE_RE.match(line)
        key = m.group(1) if m else None
        if key in updates:
            if key in done:
                continue  # a duplicate of a key we own: drop it so the file has one truth
            out.append(f"{key}={_render_value(updates[key])}")
            done.add(key)
        else:
            out.append(line)
    new = [k for k in updates if k not in done]
    if new:
        if MARK not in lines:
            out.append(MARK)
        out.extend(f"{k}={_render_value(updates[k])}" for k in new)
    return "\n".join(out) + "\n"


def parse_assignments(items: list[str]) -> dict[str, str]:
    """`["KEY=VALUE", ...]` from the command line → dict, with a clear error for a malformed item."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not KEY_RE.match(key.strip()):
            raise UserError(f"--env expects KEY=VALUE, got {item!r}.")
        out[key.strip()] = value
    return out
