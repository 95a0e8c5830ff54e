"""Fixtures of the authorization tests: operator B (``imap_fixtures``) with its HTTPS listener
on, so that one running operator serves the IMAP and webmail doors."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from imap_fixtures import Operator, Trust, b_database, running_operator, trust
from support import free_port_block

__all__ = ["b_database", "operator_web", "trust"]


@pytest.fixture
async def operator_web(
    trust: Trust, tmp_path: Path, b_database: dict[str, str]
) -> AsyncIterator[Operator]:
    running = running_operator(trust, tmp_path / "b", b_database)
    web = running.settings.web.model_copy(update={"port": free_port_block(1)})
    running.settings = running.settings.model_copy(update={"web": web})
    async with running as op:
        yield op
