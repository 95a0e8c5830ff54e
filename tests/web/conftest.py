"""Fixtures of the webmail tests: operator B's trust material and database, from the IMAP
tests' module (``imap_fixtures``); the webmail's helpers are in ``webhelpers.py``."""

from imap_fixtures import b_database, trust

__all__ = ["b_database", "trust"]
