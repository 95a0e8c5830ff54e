"""Fixtures of the IMAP tests; the code lives in imap_fixtures.py, a module name no other test
folder uses (a module named ``conftest`` is ambiguous across folders)."""

from imap_fixtures import b_database, operator, trust

__all__ = ["b_database", "operator", "trust"]
