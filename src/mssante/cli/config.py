"""`mssante config`: (to be written)."""

from __future__ import annotations

import click


@click.group(name="config")
def group() -> None:
    """(to be written)"""
