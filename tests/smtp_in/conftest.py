"""Fixtures of the SMTP listener tests; the code lives in operator_fixtures.py so that other test
folders can import it by a unique module name (a module named ``conftest`` is ambiguous)."""

from operator_fixtures import b_database, operator_b, space

__all__ = ["b_database", "operator_b", "space"]
