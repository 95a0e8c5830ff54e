"""Structured logs (structlog). Configured once by the command line from :class:`LogSettings`.

Secrets never go to the log: callers log identifiers (an address, a DN, a fingerprint), never a
password, a key, a token or a message body. :func:`redact` guards the obvious field names anyway.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from mssante.config import LogFormat, LogSettings

_SECRET_KEYS = frozenset({"password", "secret", "token", "key", "authorization", "otp", "totp"})


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for k in list(event):
        if k.lower() in _SECRET_KEYS:
            event[k] = "[redacted]"
    return event


def configure(settings: LogSettings) -> None:
    level = logging.getLevelNamesMapping().get(settings.level.upper(), logging.INFO)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.format is LogFormat.JSON
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
