"""Errors that the CLI reports as one line, without a traceback."""
from __future__ import annotations


class UserError(Exception):
    """Bad arguments, missing data or an unreachable service: say what and where in one line."""
