"""Errors that say whose fault it was and what to do next.

Library code raises these; only the CLI turns them into one line on stderr.
"""

from __future__ import annotations


class DevtlsError(Exception):
    """Base of every error devtls reports to a user.

    ``message`` says what went wrong, ``hint`` what to do about it.
    """

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}; {self.hint}"
        return self.message


class UsageError(DevtlsError):
    """The user asked for something that cannot mean anything (a bad name, a bad option value)."""

    exit_code = 2


class CAError(DevtlsError):
    """The CA folder is missing, broken or unreadable."""


class IssueError(DevtlsError):
    """A certificate could not be issued or written."""


class TrustStoreError(DevtlsError):
    """A trust store could not be read or changed."""


class ConfigError(UsageError):
    """A setting of ``devtls serve`` is invalid."""


class ProtocolError(DevtlsError):
    """A peer broke the protocol; ``status_hint`` is the HTTP status to answer with."""

    def __init__(self, message: str, status_hint: int = 400) -> None:
        super().__init__(message)
        self.status_hint = status_hint
