"""Fixtures of the fuzz tests (the operator of tests/imap, listeners on free ports)."""

from imap_fixtures import b_database, trust

__all__ = ["b_database", "trust"]
