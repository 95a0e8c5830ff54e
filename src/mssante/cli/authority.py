"""`mssante authority`: (to be written)."""

from __future__ import annotations

import click


@click.group(name="authority")
def group() -> None:
    """(to be written)"""
