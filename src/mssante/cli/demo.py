"""`mssante demo`: a whole local trust space (to be written)."""

from __future__ import annotations

import click


@click.command()
def demo() -> None:
    """Start a local trust space: an authority and two operators."""
