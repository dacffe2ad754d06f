"""Errors raised by services. Adapters (admin forms, API views) turn them into messages."""

from __future__ import annotations


class DomainError(Exception):
    """A refusal with a stable ``code`` for programs, a ``message`` for people and the input ``field``."""

    http_status = 400

    def __init__(self, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.field = code, message, field


class RuleViolation(DomainError):
    """The input breaks a protocol rule (HTTP 400)."""


class StateConflict(DomainError):
    """The input is well formed, but the record's current state forbids it (HTTP 409)."""

    http_status = 409


class PermissionRefused(DomainError):
    """The user's role does not allow this action on a record they can see (HTTP 403)."""

    http_status = 403
