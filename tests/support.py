"""Helpers shared by test modules (importable as ``support``; tests/ is on pytest's path)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import text

from mssante.store.db import Database


def selected_database_url() -> str:
    return os.environ.get("MSSANTE_TEST_DATABASE", "sqlite")


def is_postgres() -> bool:
    return selected_database_url().startswith("postgresql")


def new_schema_name() -> str:
    return f"t_{os.getpid()}_{uuid.uuid4().hex[:10]}"


def drop_schema(schema: str) -> None:
    admin = Database(selected_database_url())
    try:
        with admin.engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        admin.dispose()


def free_port_block(size: int = 40) -> int:
    """A base port whose next ``size`` ports are free on 127.0.0.1 right now.

    The block is drawn below the kernel's ephemeral range: a port the kernel handed out for
    ``bind(0)`` may be given again to any outgoing connection before the server binds it
    (a webmail fixture lost port 56307 that way in CI). A block is not handed out twice in
    one test process."""
    low, high = _ports_below_ephemeral()
    for _ in range(200):
        base = _RANDOM.randrange(low, high - size)
        block = range(base, base + size)
        if _HANDED_OUT.isdisjoint(block) and all(_free(port) for port in block):
            _HANDED_OUT.update(block)
            return base
    raise RuntimeError("no free block of ports")


# Test-process bookkeeping only (the product keeps no module-level state).
_RANDOM = random.Random(os.getpid() ^ time.time_ns())
_HANDED_OUT: set[int] = set()


def _ports_below_ephemeral() -> tuple[int, int]:
    try:
        first = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first = 32768
    return 10000, max(first, 12000)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def run_mssante(
    *args: str, check: bool = False, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The real command, as a user would run it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mssante", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
        env=env,
    )


async def wait_started(
    started: asyncio.Event, task: asyncio.Task[None], timeout: float = 60
) -> None:
    """Wait until a runtime says it started; if its task ends first (a port already taken, a
    bad setting), raise what ended it instead of waiting for ever."""
    waiter = asyncio.create_task(started.wait())
    done, _ = await asyncio.wait(
        {waiter, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
    )
    if waiter not in done:
        waiter.cancel()
        if task in done:
            task.result()  # raises the start-up failure
            raise RuntimeError("the runtime stopped before it started")
        raise TimeoutError(f"the runtime did not start within {timeout} s")


@contextlib.contextmanager
def serving(config: Any) -> Iterator[int]:
    """An ASGI app served by uvicorn (``config``: a ``uvicorn.Config`` on port 0) in a thread
    of this process, for as long as the block runs: its port."""
    import uvicorn

    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def output_folder(name: str) -> Path:
    """A folder kept after the run for a test's artefacts (screenshots): ``$MSSANTE_TEST_OUTPUT``
    or ``test-output/`` at the repository's root, then ``name``."""
    root = os.environ.get("MSSANTE_TEST_OUTPUT") or str(Path(__file__).parents[1] / "test-output")
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder
