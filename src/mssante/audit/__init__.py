"""Typed audit events and their append-only, hash-chained log."""
