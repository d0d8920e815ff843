"""One Rich console and the logging set-up, configured once at the CLI entry."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)


class _State:
    verbose: bool = False


state = _State()


def setup_logging(verbose: bool = False) -> None:
    """Configure the `edgekit` logger (never the root logger)."""
    state.verbose = verbose
    log = logging.getLogger("edgekit")
    log.handlers.clear()
    handler = RichHandler(console=err_console, show_path=verbose, show_time=verbose, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False
