"""Errors that the CLI reports as one line, without a traceback."""
from __future__ import annotations


class UserError(Exception):
    """Bad arguments, missing data or an unreachable service: say what and where in one line."""


class UnknownTenant(UserError):
    """A read named a tenant the store holds no data for (the service answers 404)."""

    def __init__(self, message: str, tenant: str) -> None:
        super().__init__(message)
        self.tenant = tenant
