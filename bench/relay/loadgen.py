"""Load generation and measurement of one run: submit N messages to A, wait until B stored them.

Two modes:

- ``max``: ``connections`` SMTP sessions each send the next message as soon as the previous one
  is accepted (several messages per session). Throughput = stored / (last stored - first
  submission started).
- ``rate``: messages are due at a fixed rate (``t0 + n / rate``); a pool of sessions takes them
  in order. Latency counts from the *due* time, so a slow injector or a slow A shows up in the
  figures instead of silently lowering the rate (no coordinated omission).

Latency of a message = its storage time at B (as the pair's probe reports it) - its start.
A run stops with :class:`Stalled` when nothing progresses (no submission accepted, nothing
stored) for ``stall_seconds``.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate

import aiosmtplib
from pairs import Injection, Stored, StoreProbe

LINE = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor\r\n"


class Stalled(RuntimeError):
    """No progress for too long: the run is abandoned."""


class InjectionFailed(RuntimeError):
    """The benchmark could not open its SMTP sessions to A."""


@dataclass(frozen=True)
class RunSpec:
    label: str  # also the mailbox at B, and the run id in X-Bench-Id
    size: int  # bytes, approximate total message size
    count: int
    mode: str  # "max" or "rate"
    rate: float = 100.0
    connections: int = 8
    stall_seconds: float = 60.0


@dataclass
class RunResult:
    spec: RunSpec
    started: dict[int, float] = field(default_factory=dict)  # n -> start (wall clock)
    stored: dict[int, float] = field(default_factory=dict)  # n -> stored at B (wall clock)
    accepted: set[int] = field(default_factory=set)  # submissions A answered 250 to
    failures: list[str] = field(default_factory=list)
    injector_lag_max: float = 0.0  # rate mode: worst delay between due time and actual send

    def latencies(self) -> list[float]:
        return sorted(self.stored[n] - self.started[n] for n in self.stored if n in self.started)

    def throughput(self) -> float:
        if not self.stored or not self.started:
            return 0.0
        elapsed = max(self.stored.values()) - min(self.started.values())
        return len(self.stored) / elapsed if elapsed > 0 else 0.0


def body_of(size: int) -> bytes:
    """A plain-text body so that the whole message is about ``size`` bytes."""
    lines = max(1, (size - 400) // len(LINE))
    return LINE * lines


def message(run: str, n: int, sender: str, recipient: str, body: bytes) -> bytes:
    headers = (
        f"From: <{sender}>\r\n"
        f"To: <{recipient}>\r\n"
        f"Subject: bench {run} {n}\r\n"
        f"Date: {formatdate(localtime=False)}\r\n"
        f"Message-ID: <{n}.{run}@bench.invalid>\r\n"
        f"X-Bench-Id: {run}/{n}\r\n"
        f"X-Bench-Sent: {time.time():.6f}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
    )
    return headers.encode() + body


# -- SMTP sessions -----------------------------------------------------------------------------


def _tls_context(injection: Injection, *, check_name: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=injection.cafile)
    context.check_hostname = check_name and injection.server_name is not None
    return context


async def open_session(injection: Injection) -> aiosmtplib.SMTP:
    """A logged-in session to A. With implicit TLS the chain is verified, not the name."""
    implicit = injection.tls == "implicit"
    client = aiosmtplib.SMTP(
        hostname=injection.host,
        port=injection.port,
        use_tls=implicit,
        start_tls=False,
        tls_context=_tls_context(injection, check_name=False) if implicit else None,
        timeout=60,
    )
    await client.connect()
    if injection.tls == "starttls":
        await client.starttls(
            server_hostname=injection.server_name,
            tls_context=_tls_context(injection, check_name=True),
        )
    if injection.username is not None:
        await client.login(injection.username, injection.password or "")
    return client


class Sender:
    """One SMTP session that reconnects after an error."""

    def __init__(self, injection: Injection, recipient: str, spec: RunSpec) -> None:
        self.injection = injection
        self.recipient = recipient
        self.spec = spec
        self.body = body_of(spec.size)
        self.client: aiosmtplib.SMTP | None = None

    async def open(self) -> None:
        """Connect (and log in) now; :class:`InjectionFailed` if A cannot be reached."""
        try:
            self.client = await open_session(self.injection)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            raise InjectionFailed(
                f"cannot open a session to A at {self.injection.host}:{self.injection.port}: "
                f"{error}"
            ) from error

    async def send(self, n: int) -> str | None:
        """Submit message ``n``; None when accepted, else the error."""
        raw = message(self.spec.label, n, self.injection.sender, self.recipient, self.body)
        try:
            if self.client is None:
                self.client = await open_session(self.injection)
            await self.client.sendmail(self.injection.sender, [self.recipient], raw)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            await self.close()
            return f"message {n}: {error}"
        return None

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()


# -- one run -----------------------------------------------------------------------------------


@dataclass
class _Progress:
    last: float = field(default_factory=time.monotonic)

    def touch(self) -> None:
        self.last = time.monotonic()


class Run:
    def __init__(
        self, spec: RunSpec, injection: Injection, recipient: str, probe: StoreProbe
    ) -> None:
        self.spec = spec
        self.injection = injection
        self.recipient = recipient
        self.probe = probe
        self.result = RunResult(spec)
        self.progress = _Progress()
        self.accepted = self.result.accepted

    async def execute(self, on_tick: Callable[[RunResult], None] | None = None) -> RunResult:
        inject = asyncio.create_task(self._inject())
        try:
            await self._watch(inject, on_tick)
        finally:
            if not inject.done():
                inject.cancel()
            await asyncio.gather(inject, return_exceptions=True)
        return self.result

    # -- injection -----------------------------------------------------------------------------
    async def _inject(self) -> None:
        """Open every session first (TLS, AUTH: not part of any message's latency), then send."""
        senders = [
            Sender(self.injection, self.recipient, self.spec) for _ in range(self.spec.connections)
        ]
        try:
            await asyncio.gather(*(s.open() for s in senders))
            self.progress.touch()
            if self.spec.mode == "rate":
                await self._inject_at_rate(senders)
            else:
                await self._inject_max(senders)
        finally:
            await asyncio.gather(*(s.close() for s in senders))

    async def _inject_max(self, senders: list[Sender]) -> None:
        numbers = iter(range(self.spec.count))

        async def session(sender: Sender) -> None:
            for n in numbers:
                await self._send(sender, n, time.time())

        await asyncio.gather(*(session(s) for s in senders))

    async def _inject_at_rate(self, senders: list[Sender]) -> None:
        due: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
        workers = [asyncio.create_task(self._rate_worker(s, due)) for s in senders]
        start = time.time() + 0.1
        for n in range(self.spec.count):
            at = start + n / self.spec.rate
            await asyncio.sleep(max(0.0, at - time.time()))
            due.put_nowait((n, at))
        for _ in workers:
            due.put_nowait(None)
        await asyncio.gather(*workers)

    async def _rate_worker(
        self, sender: Sender, due: asyncio.Queue[tuple[int, float] | None]
    ) -> None:
        while (job := await due.get()) is not None:
            n, at = job
            lag = time.time() - at
            self.result.injector_lag_max = max(self.result.injector_lag_max, lag)
            await self._send(sender, n, at)

    async def _send(self, sender: Sender, n: int, start: float) -> None:
        self.result.started[n] = start
        error = await sender.send(n)
        if error is None:
            self.accepted.add(n)
            self.progress.touch()
        else:
            self.result.failures.append(error)

    # -- watching ------------------------------------------------------------------------------
    async def _watch(
        self, inject: asyncio.Task[None], on_tick: Callable[[RunResult], None] | None
    ) -> None:
        ticks = 0
        while not (inject.done() and self.accepted <= self.result.stored.keys()):
            self._collect(await asyncio.to_thread(self.probe.poll))
            self._check_stall()
            ticks += 1
            if on_tick is not None and ticks % 50 == 0:
                on_tick(self.result)
            await asyncio.sleep(0.02)
        inject.result()  # the injector's own failure, if any

    def _collect(self, stored: list[Stored]) -> None:
        prefix = self.spec.label + "/"
        for item in stored:
            if item.bench_id.startswith(prefix):
                self.result.stored[int(item.bench_id[len(prefix) :])] = item.stored_at
                self.progress.touch()

    def _check_stall(self) -> None:
        idle = time.monotonic() - self.progress.last
        if idle > self.spec.stall_seconds:
            raise Stalled(
                f"run {self.spec.label}: no progress for {idle:.0f} s "
                f"({len(self.accepted)} accepted by A, {len(self.result.stored)} stored at B, "
                f"{len(self.result.failures)} submission failures)"
            )


def run_label(size: str, mode: str) -> str:
    """The run's label, mailbox at B and id prefix: ``10k-max``, ``100k-rate``."""
    return f"{size.strip().lower()}-{mode}"
