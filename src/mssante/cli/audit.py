"""`mssante audit`: (to be written)."""

from __future__ import annotations

import click


@click.group(name="audit")
def group() -> None:
    """(to be written)"""
