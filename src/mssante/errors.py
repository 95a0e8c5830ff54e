"""Errors that cross a boundary.

Every error shown to a user or a peer carries a safe public message: it names the reason and
never reveals configuration, paths of the server or secrets. Protocol errors (SMTP, IMAP, HTTP)
add their code; see the protocol packages.
"""

from __future__ import annotations


class MssanteError(Exception):
    """Base of the project's errors. ``public`` is safe to show to anyone."""

    def __init__(self, public: str, *, detail: str | None = None) -> None:
        super().__init__(public)
        self.public = public
        self.detail = detail  # for the operator's log only; may name files, never secrets

    def __str__(self) -> str:
        return self.public


class ConfigError(MssanteError):
    """The configuration is missing, malformed or inconsistent."""


class ImmutableFieldError(MssanteError):
    """A field that must never change after creation was changed (address, mailbox type)."""


class NotFoundError(MssanteError):
    """The thing asked for does not exist (or the caller may not know it exists)."""
