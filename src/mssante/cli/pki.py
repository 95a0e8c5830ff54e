"""`mssante pki`: (to be written)."""

from __future__ import annotations

import click


@click.group(name="pki")
def group() -> None:
    """(to be written)"""
