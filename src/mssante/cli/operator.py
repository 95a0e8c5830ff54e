"""`mssante operator`: (to be written)."""

from __future__ import annotations

import click


@click.group(name="operator")
def group() -> None:
    """(to be written)"""
