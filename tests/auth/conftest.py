"""Fixtures of the authentication tests (helpers in auth_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from auth_helpers import AuthWorld, FakeClock, make_person, make_settings

from mssante.audit.events import ListSink
from mssante.auth.service import AuthService, password_hasher
from mssante.store.db import Database


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def world(db: Database, tmp_path: Path, clock: FakeClock) -> AuthWorld:
    settings = make_settings(tmp_path)
    sink = ListSink()
    service = AuthService(db, settings, sink, clock=clock)
    make_person(db, password_hasher(settings.auth))
    return AuthWorld(db, settings, sink, clock, service)
