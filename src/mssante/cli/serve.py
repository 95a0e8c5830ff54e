"""`mssante serve`: run one node (an operator or the authority) until stopped."""

from __future__ import annotations

import asyncio
import signal
import warnings
from pathlib import Path

import click

from mssante.cli.common import config_option, friendly_errors, settings_from
from mssante.config import Role, Settings


@click.command()
@config_option
@friendly_errors
def serve(config_path: Path | None) -> None:
    """Run this node with all its listeners and workers; stop with Ctrl-C or SIGTERM."""
    settings = settings_from(config_path)
    # aiosmtpd sets its own deprecated Session.login_data on every AUTH; not ours to fix.
    warnings.filterwarnings("ignore", "Session.login_data is deprecated")
    asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> None:
    if settings.role is Role.AUTHORITY:
        from mssante.authority.run import run_authority  # noqa: PLC0415

        await run_authority(settings)
        return
    await _serve_operator(settings)


async def _serve_operator(settings: Settings) -> None:
    from mssante.operator.runtime import run_operator  # noqa: PLC0415

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run_operator(settings, stop, freeze_gc=True)
