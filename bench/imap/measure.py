"""The three measurements, each against one running server (``systems.ImapServer``).

- :func:`mbsync_sync`: wall time of ``mbsync -a`` pulling a whole INBOX into an empty Maildir.
- :func:`idle_memory`: PSS of the server's processes before and after ``count`` connections are
  in IDLE (clients in another process: ``idle_clients.py``), per connection; and the server's
  CPU while they sit idle.
- :func:`idle_latency`: from the start of a delivery to the ``* N EXISTS`` an IDLE client gets.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import shutil
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from systems import Deliverer, Endpoint, ImapServer

HERE = Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


# -- /proc -------------------------------------------------------------------------------------


def pss_kib(pids: list[int]) -> int:
    """Sum of the processes' proportional set size (kB, /proc/PID/smaps_rollup)."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue  # gone meanwhile
        for line in text.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
                break
    return total


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes (their own, not their children's)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / TICKS


def steady_pss(pids: Callable[[], list[int]], samples: int = 3, pause: float = 1.0) -> int:
    values = []
    for i in range(samples):
        if i:
            time.sleep(pause)
        values.append(pss_kib(pids()))
    return int(statistics.median(values))


# -- 1. mbsync ---------------------------------------------------------------------------------


@dataclass
class SyncFigures:
    seconds: float
    messages: int  # files in the local Maildir afterwards
    bytes: int
    expected: int
    timed_out: bool = False  # stopped after the timeout: ``seconds`` is a lower bound

    @property
    def ok(self) -> bool:
        return self.messages == self.expected and not self.timed_out


def mbsync_sync(
    endpoint: Endpoint, user: str, password: str, folder: Path, expected: int, timeout: float
) -> SyncFigures:
    """A first sync (pull) of INBOX into an empty Maildir; ``FSync no`` so that the client's
    disk flushes do not weigh on a comparison of servers."""
    if folder.exists():
        shutil.rmtree(folder)
    maildir = folder / "mail"
    maildir.mkdir(parents=True)
    leaf = folder / "server.pem"  # isync trusts a certificate listed here as it is
    leaf.write_bytes(endpoint.leaf.read_bytes())
    config = folder / "mbsyncrc"
    config.touch(mode=0o600)
    config.write_text(
        f"""FSync no

IMAPAccount bench
Host {endpoint.host}
Port {endpoint.port}
User {user}
Pass {password}
SSLType IMAPS
CertificateFile {leaf}
AuthMechs LOGIN

IMAPStore bench-remote
Account bench

MaildirStore bench-local
Path {maildir}/
Inbox {maildir}/INBOX

Channel bench
Far :bench-remote:
Near :bench-local:
Patterns INBOX
Create Near
Sync Pull
SyncState *
"""
    )
    started = time.monotonic()
    proc = subprocess.Popen(
        ["mbsync", "-q", "-c", str(config), "-a"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    timed_out = False
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out, out = True, b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    seconds = time.monotonic() - started
    if proc.returncode != 0 and not timed_out:
        raise RuntimeError(f"mbsync exit {proc.returncode}: {out.decode(errors='replace')[-800:]}")
    inbox = maildir / "INBOX"
    files = [p for sub in ("cur", "new") if (inbox / sub).is_dir() for p in (inbox / sub).iterdir()]
    size = sum(p.stat().st_size for p in files)
    return SyncFigures(seconds, len(files), size, expected, timed_out)


# -- 2. memory per IDLE connection -------------------------------------------------------------


@dataclass
class MemoryFigures:
    connections: int  # asked for
    opened: int  # in IDLE at the measurement
    failed: int
    setup_seconds: float
    pss_before_kib: int
    pss_after_kib: int
    pss_after_close_kib: int
    processes_before: int
    processes_after: int
    idle_cpu_percent: float  # the server's CPU while the connections sit in IDLE (% of one CPU)
    errors: list[str] = field(default_factory=list)

    @property
    def per_connection_kib(self) -> float:
        if not self.opened:
            return math.nan
        return (self.pss_after_kib - self.pss_before_kib) / self.opened

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "per_connection_kib": self.per_connection_kib}


class IdleClients:
    """``idle_clients.py`` running in its own process."""

    def __init__(self, endpoint: Endpoint, user: str, password: str, count: int) -> None:
        self.count = count
        self.errors: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "idle_clients.py"),
                "--port",
                str(endpoint.port),
                "--count",
                str(count),
                "--user",
                user,
                "--cafile",
                str(endpoint.cafile),
                "--server-name",
                endpoint.server_name,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "BENCH_IMAP_PASSWORD": password},
            text=True,
            start_new_session=True,
        )

    def _stdout(self) -> IO[str]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def wait_ready(self, echo: bool) -> tuple[int, int, float]:
        """(opened, failed, seconds) once every connection is set up or has failed."""
        for line in self._stdout():
            words = line.split()
            if not words:
                continue
            if words[0] == "ready":
                return int(words[1]), int(words[2]), float(words[3])
            if words[0] == "error":
                self.errors.append(line.strip()[6:])
                progress(f"   client {line.strip()}")
            elif words[0] == "progress" and echo:
                progress(f"   {words[1]}/{self.count} in IDLE ({words[2]} failed)")
        raise RuntimeError(f"idle_clients.py ended early (exit {self.proc.wait()})")

    def alive(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write("status\n")
        self.proc.stdin.flush()
        for line in self._stdout():
            if line.startswith("alive"):
                return int(line.split()[1])
        return 0

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("close\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def idle_memory(
    server: ImapServer, user: str, password: str, count: int, settle: float = 5.0
) -> MemoryFigures:
    endpoint = server.endpoint()
    warm = IdleClients(endpoint, user, password, min(20, count))  # first-use costs
    try:
        opened, _, _ = warm.wait_ready(echo=False)
        if not opened:
            raise RuntimeError(f"no IDLE connection could be opened: {warm.errors[:3]}")
    finally:
        warm.close()
    time.sleep(3)
    before = steady_pss(server.server_pids)
    processes_before = len(server.server_pids())
    clients = IdleClients(endpoint, user, password, count)
    try:
        opened, failed, setup = clients.wait_ready(echo=True)
        time.sleep(settle)
        after = steady_pss(server.server_pids)
        processes_after = len(server.server_pids())
        cpu_start, wall_start = cpu_seconds(server.server_pids()), time.monotonic()
        time.sleep(10)
        pids = server.server_pids()
        idle_cpu = (cpu_seconds(pids) - cpu_start) / (time.monotonic() - wall_start) * 100
        alive = clients.alive()
    finally:
        clients.close()
    time.sleep(3)
    after_close = steady_pss(server.server_pids)
    return MemoryFigures(
        count,
        alive,
        failed + (opened - alive),
        setup,
        before,
        after,
        after_close,
        processes_before,
        processes_after,
        idle_cpu,
        clients.errors[:5],
    )


# -- 3. delivery -> EXISTS ---------------------------------------------------------------------


@dataclass
class LatencyFigures:
    method: str
    deliveries: int
    notified: int  # deliveries whose EXISTS arrived within the timeout
    exists_ms: list[float]  # delivery start -> EXISTS, sorted
    delivery_ms: list[float]  # delivery start -> stored (250 / LDA exit), sorted

    def summary(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "deliveries": self.deliveries,
            "notified": self.notified,
            "p50_ms": percentile(self.exists_ms, 50),
            "p95_ms": percentile(self.exists_ms, 95),
            "max_ms": self.exists_ms[-1] if self.exists_ms else math.nan,
            "delivery_p50_ms": percentile(self.delivery_ms, 50),
        }


class IdleWatcher:
    """One IMAP session in IDLE; records when each ``* N EXISTS`` arrives."""

    def __init__(self) -> None:
        self.exists: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None

    async def open(self, endpoint: Endpoint, user: str, password: str) -> int:
        """Logged in, INBOX selected, in IDLE; returns the message count SELECT gave."""
        tls = ssl.create_default_context(cafile=str(endpoint.cafile))
        self.reader, self.writer = await asyncio.open_connection(
            endpoint.host, endpoint.port, ssl=tls, server_hostname=endpoint.server_name
        )
        await self._until(b"* OK")
        self.writer.write(f'a LOGIN "{user}" "{password}"\r\n'.encode())
        if not (await self._until(b"a ")).startswith(b"a OK"):
            raise RuntimeError("LOGIN refused")
        self.writer.write(b"b SELECT INBOX\r\n")
        count = 0
        while True:
            line = await self._line()
            if line.endswith(b"EXISTS\r\n"):
                count = int(line.split()[1])
            if line.startswith(b"b "):
                break
        self.writer.write(b"c IDLE\r\n")
        await self._until(b"+")
        self.task = asyncio.create_task(self._watch())
        return count

    async def _line(self) -> bytes:
        assert self.reader is not None
        line = await self.reader.readline()
        if not line:
            raise ConnectionError("the server closed the connection")
        return line

    async def _until(self, prefix: bytes) -> bytes:
        while True:
            line = await self._line()
            if line.startswith(prefix):
                return line

    async def _watch(self) -> None:
        while True:
            line = await self._line()
            words = line.split()
            if len(words) == 3 and words[0] == b"*" and words[2].upper() == b"EXISTS":
                self.exists.put_nowait((int(words[1]), time.perf_counter()))

    async def next_count_at_least(self, wanted: int, timeout: float) -> float | None:
        """When an EXISTS count reached ``wanted`` (None: not within ``timeout``)."""
        deadline = time.perf_counter() + timeout
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                return None
            try:
                count, at = await asyncio.wait_for(self.exists.get(), left)
            except TimeoutError:
                return None
            if count >= wanted:
                return at

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.writer is not None:
            try:
                self.writer.write(b"DONE\r\nd LOGOUT\r\n")
                await asyncio.wait_for(self.writer.drain(), 5)
            except (OSError, TimeoutError):
                pass
            self.writer.close()


async def idle_latency(
    endpoint: Endpoint,
    user: str,
    password: str,
    deliverer: Deliverer,
    messages: list[bytes],
    *,
    timeout: float = 35.0,
    seed: int = 1,
) -> LatencyFigures:
    """Deliver ``messages`` one by one to ``user`` while a session of ``user`` is in IDLE:
    a random pause (100-300 ms), then the clock starts, the delivery runs (until stored), and
    the clock stops when the session gets the EXISTS that counts the new message."""
    rng = random.Random(seed)
    watcher = IdleWatcher()
    exists_ms, delivery_ms = [], []
    try:
        count = await watcher.open(endpoint, user, password)
        await deliverer.open()
        for raw in messages:
            await asyncio.sleep(rng.uniform(0.1, 0.3))
            while not watcher.exists.empty():  # anything late from the previous delivery
                watcher.exists.get_nowait()
            started = time.perf_counter()
            await deliverer.deliver(raw, user)
            stored = time.perf_counter()
            delivery_ms.append((stored - started) * 1000)
            count += 1
            at = await watcher.next_count_at_least(count, timeout)
            if at is not None:
                exists_ms.append((at - started) * 1000)
    finally:
        await deliverer.close()
        await watcher.close()
    return LatencyFigures(
        deliverer.description, len(messages), len(exists_ms), sorted(exists_ms), sorted(delivery_ms)
    )
