"""The error type for mistakes a user can fix; a leaf module, so library and command modules need not import the CLI."""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input; ``nezha`` prints it as one line without a traceback."""
