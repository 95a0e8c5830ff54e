"""`mssante db`: (to be written)."""

from __future__ import annotations

import click


@click.group(name="db")
def group() -> None:
    """(to be written)"""
