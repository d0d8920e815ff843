"""Errors that are the user's to fix.

A `UserError` ends the CLI with its message as one sentence and exit code 2, without a traceback
(unless `-v`). Bugs raise anything else and keep their traceback.
"""


class UserError(Exception):
    """A mistake the user can fix: missing folder, bad value, unusable input."""

    exit_code = 2


class VerificationError(UserError):
    """A bundle or release whose files do not match their recorded sha256."""
