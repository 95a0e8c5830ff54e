"""`mssante trust`: (to be written)."""

from __future__ import annotations

import click


@click.group(name="trust")
def group() -> None:
    """(to be written)"""
