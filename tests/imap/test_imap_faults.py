"""Faults: many clients left in IDLE past imap.idle_timeout, and IDLE sessions kept for the
equivalent of hours of polling.

The server runs in the test's event loop and its memory is measured with tracemalloc, in this
process only: the clients run in a child process (asyncio, raw TLS sockets), so none of their
buffers are counted. Logins re-hash the password with cheap argon2 parameters first (see
``_cheap_logins``), else 100 logins would take 15 s of argon2.

Not here: a client that announces a literal and never sends it, and a single IDLE past
imap.idle_timeout: test_imap_protocol.py's test_stalled_clients_time_out."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import sys
import time
import tracemalloc
from asyncio.sslproto import SSLProtocol
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from imap_fixtures import MARTIN, PASSWORD, Operator, Trust, message, running_operator
from mssante.imap import backend
from mssante.ops.folders import Caller, FlagMode, Folders
from mssante.store.models import Account

# The child process. Warm-up first (the server's first TLS handshake, login, SELECT, IDLE, DONE
# and LOGOUT fill caches once), then on "go" N sessions log in and SELECT INBOX, and all start
# IDLE at once. Mode "timeout": each waits for what the server says (its BYE), then for the end
# of the stream. Mode "cycle": each ends its IDLE every CYCLE seconds with DONE and starts
# another, until "stop". Mode "step": each ends its IDLE and starts another when told ("cycle",
# answered "cycled" once all did), until "stop": restarts counted, not timed. One JSON line per
# phase on stdout.
_CLIENTS = r"""
import asyncio, json, ssl, sys, time

PORT, CA, N, LOGIN, PASSWORD, MODE, CYCLE = sys.argv[1:]
N, CYCLE = int(N), float(CYCLE)
CTX = ssl.create_default_context(cafile=CA)
CTX.check_hostname = False  # 127.0.0.1; the certificate names smtp.b.mssante.test


def say(phase, **data):
    print(json.dumps({"phase": phase, **data}), flush=True)


async def command(reader, writer, tag, text):
    writer.write(f"{tag} {text}\r\n".encode())
    while True:
        line = await reader.readline()
        if line.startswith(tag.encode() + b" "):
            assert line.startswith(tag.encode() + b" OK"), line
            return
        assert line, f"closed during {text}"


async def idle(reader, writer):
    writer.write(b"i IDLE\r\n")
    assert (await reader.readline()).startswith(b"+"), "no IDLE continuation"
    return time.monotonic()


async def done(reader, writer):
    writer.write(b"DONE\r\n")
    while not (line := await reader.readline()).startswith(b"i "):
        assert line, "closed in IDLE"
    assert line.startswith(b"i OK"), line


async def session():
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT, ssl=CTX)
    assert (await reader.readline()).startswith(b"* OK")
    await command(reader, writer, "l", f'LOGIN "{LOGIN}" "{PASSWORD}"')
    await command(reader, writer, "s", "SELECT INBOX")
    return reader, writer


async def until_bye(reader, writer, started):
    line = await reader.readline()
    waited = time.monotonic() - started
    try:
        rest = (await reader.read()).decode()  # then the end of the stream
    except (ConnectionError, ssl.SSLError) as exc:
        rest = repr(exc)
    writer.close()
    return {"line": line.decode(), "waited": waited, "rest": rest}


async def cycling(reader, writer, started, stop):
    cycles = 0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), CYCLE)
        except asyncio.TimeoutError:
            pass
        await done(reader, writer)
        cycles += 1
        if not stop.is_set():
            await idle(reader, writer)
    await command(reader, writer, "o", "LOGOUT")
    writer.close()
    return cycles


async def restart(reader, writer):
    await done(reader, writer)
    await idle(reader, writer)


async def finish(reader, writer):
    await done(reader, writer)
    await command(reader, writer, "o", "LOGOUT")
    writer.close()


async def stepping(loop, sessions):
    cycles = 0
    while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "cycle":
        await asyncio.gather(*(restart(*s) for s in sessions))
        cycles += 1
        say("cycled", cycles=cycles)
    await asyncio.gather(*(finish(*s) for s in sessions))
    return [cycles] * len(sessions)


async def main():
    loop = asyncio.get_running_loop()
    for _ in range(3):
        reader, writer = await session()
        await idle(reader, writer)
        await done(reader, writer)
        await command(reader, writer, "o", "LOGOUT")
        writer.close()
    say("warm")
    await loop.run_in_executor(None, sys.stdin.readline)
    opening, stop = asyncio.Semaphore(16), asyncio.Event()

    async def opened():
        async with opening:
            return await session()

    sessions = await asyncio.gather(*(opened() for _ in range(N)))
    started = await asyncio.gather(*(idle(*s) for s in sessions))  # all IDLE at once
    say("idling", spread=max(started) - min(started))
    if MODE == "step":
        say("ended", results=await stepping(loop, sessions))
        return
    watch = until_bye if MODE == "timeout" else lambda *s: cycling(*s, stop)
    watchers = [asyncio.create_task(watch(*s, t)) for s, t in zip(sessions, started)]
    if MODE == "cycle":
        await loop.run_in_executor(None, sys.stdin.readline)
        stop.set()
    say("ended", results=await asyncio.gather(*watchers))


# Only against a child left behind by a parent that died: the parent kills it when done, and
# never fails for a slow child (a loaded machine takes minutes for its polls).
asyncio.run(asyncio.wait_for(main(), 1800))
"""


class Clients:
    """The child process, driven through its standard input and output."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, op: Operator, count: int, mode: str, cycle: float = 0) -> Clients:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CLIENTS,
            *(str(op.imaps_port), str(op.ca), str(count), MARTIN, PASSWORD, mode, str(cycle)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def next(self, phase: str, timeout: float = 30) -> dict[str, Any]:
        assert self.process.stdout is not None and self.process.stderr is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise AssertionError((await self.process.stderr.read()).decode())
        answer: dict[str, Any] = json.loads(line)
        assert answer["phase"] == phase, answer
        return answer

    def tell(self, word: str = "go") -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(word.encode() + b"\n")

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


# These tests open many sessions of one account from 127.0.0.1 at once: above the caps a real
# operator keeps (docs/security.md), which tests/imap/test_imap_hostile.py tests.
_ONE_CLIENT_MANY_SESSIONS = {
    "max_connections_per_address": 500,
    "max_sessions_per_user_address": 500,
}


def _cheap_logins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The account's password is re-hashed with these parameters at its first login
    (auth/passwords.py, needs_rehash), so the next logins cost milliseconds."""
    monkeypatch.setenv("MSSANTE_AUTH__ARGON2_TIME_COST", "1")
    monkeypatch.setenv("MSSANTE_AUTH__ARGON2_MEMORY_KIB", "8")


_SERVER_CODE = [tracemalloc.Filter(True, "*/mssante/*"), tracemalloc.Filter(True, "*/pymap/*")]


def _allocated(only: list[tracemalloc.Filter] | None = None) -> int:
    """Bytes allocated by Python in this process (by the server's own code and pymap only,
    with ``only``), after a garbage collection."""
    gc.collect()
    if only is None:
        return tracemalloc.get_traced_memory()[0]
    return sum(
        s.size for s in tracemalloc.take_snapshot().filter_traces(only).statistics("filename")
    )


def _growth(snapshot: tracemalloc.Snapshot, since: tracemalloc.Snapshot) -> str:
    """The 12 lines that allocated the most since ``since``: printed, for when a bound fails."""
    return "\n".join(str(s) for s in snapshot.compare_to(since, "lineno")[:12])


async def test_many_idle_sessions_have_bounded_memory_and_end_at_idle_timeout(
    trust: Trust, tmp_path: Path, b_database: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """100 sessions in IDLE: each costs at most a TLS buffer, a command line and its objects;
    at imap.idle_timeout each gets BYE and is closed, with an audit entry; afterwards nothing
    the server's code allocated for them is left."""
    count, idle_timeout = 100, 4.0
    _cheap_logins(monkeypatch)
    limits = {"idle_timeout": idle_timeout, "poll_interval": 0.25, **_ONE_CLIENT_MANY_SESSIONS}
    async with running_operator(trust, tmp_path / "b", b_database, **limits) as op:
        await asyncio.to_thread(op.deliver, message("Compte rendu"))
        tracemalloc.start()
        clients = await Clients.start(op, count, "timeout")
        try:
            await clients.next("warm")
            base, base_code = _allocated(), _allocated(_SERVER_CODE)
            base_snapshot = tracemalloc.take_snapshot()
            clients.tell()
            await clients.next("idling")
            await asyncio.sleep(0.5)
            during = _allocated()
            during_snapshot = tracemalloc.take_snapshot()
            ended = await clients.next("ended")
            await asyncio.sleep(0.2)  # the server's side of the last connections is torn down
            after_code, after = _allocated(_SERVER_CODE), _allocated()
        finally:
            tracemalloc.stop()
            await clients.stop()
        events = op.audit_events()
    per_session = (during - base) / count
    print(
        f"\n{count} IDLE sessions, server memory (tracemalloc): {per_session / 1024:.0f} KiB "
        f"each; once closed: {(after - base) / 1024:+.0f} KiB in all, "
        f"{(after_code - base_code) / 1024:+.1f} KiB allocated by mssante and pymap\n"
        + _growth(during_snapshot, base_snapshot)
    )
    results = ended["results"]
    assert len(results) == count
    for result in results:  # BYE at imap.idle_timeout, then the server closes the connection
        assert result["line"] == "* BYE Autologout; idle for too long.\r\n", result
        assert idle_timeout - 0.1 < result["waited"] < idle_timeout + 2, result
        assert result["rest"] == "", result
    timeouts = [c for e, _, c in events if e == "imap.timeout"]
    assert timeouts == [{"peer": "127.0.0.1", "waiting_for": "idle"}] * count
    # A session in IDLE holds asyncio's TLS read buffer (SSLProtocol.max_size, 256 KiB, made for
    # every TLS connection), at most one command line (imap.max_line_bytes, 64 KiB) and its
    # objects (reader, writer, pymap's session, the selected folder, timers: tens of KiB).
    assert per_session < SSLProtocol.max_size + op.rt.settings.imap.max_line_bytes + 32 * 1024
    # Once closed, nothing the server's code or pymap allocated is kept (1 KiB per session
    # would be one dict or a few small objects left behind). What asyncio keeps of a closed
    # connection is not counted here: its transport, pinned by the contextvars copy of the
    # cancelled timers (wait_for, TLS shutdown) that the loop keeps until their due time
    # unless more than half its timers are cancelled (base_events._run_once).
    assert after_code - base_code < count * 1024


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# Two hours of the watch's polls at the default imap.poll_interval (1 s, 3,600 polls an hour),
# whatever time they take here; the sessions restart IDLE ten times meanwhile (clients do every
# 29 minutes: four times in two hours), one sample of the memory every POLLS / SAMPLES polls.
POLLS, RESTARTS, SAMPLES, WARM_POLLS = 7200, 10, 40, 500


async def test_idle_for_hours_of_polls_does_not_grow(
    trust: Trust, tmp_path: Path, b_database: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sessions idling for the equivalent of hours: ten sessions whose database poll (the
    process's FolderWatch, every imap.poll_interval, 1 s by default) is sped up, and whose
    clients end and restart IDLE as they do every 29 minutes. The server's memory does not
    grow with them. Measured without tracemalloc, which would slow the polls fourfold: the
    number of small blocks Python has allocated (every object's header is one) and the RSS.

    Driven by counts, never by the clock: the test waits for POLLS polls (counted at
    Folders.probe_many) and tells the clients when to restart, so a slow machine takes longer
    and reaches the same verdict."""
    count, poll = 10, 0.002
    _cheap_logins(monkeypatch)
    calls = {"probe_many": 0, "select": 0}

    def counting(name: str) -> Callable[..., Any]:
        original = getattr(Folders, name)

        def counted(self: Folders, *args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return original(self, *args, **kwargs)

        return counted

    def sample() -> tuple[int, int, int]:
        gc.collect()
        return calls["probe_many"], sys.getallocatedblocks(), _rss()

    async def restart_all() -> None:
        clients.tell("cycle")
        await clients.next("cycled", timeout=600)

    for name in calls:
        monkeypatch.setattr(Folders, name, counting(name))
    async with running_operator(
        trust, tmp_path / "b", b_database, poll_interval=poll, **_ONE_CLIENT_MANY_SESSIONS
    ) as op:
        await asyncio.to_thread(op.deliver, message("Compte rendu"))
        clients = await Clients.start(op, count, "step")
        try:
            await clients.next("warm")
            clients.tell()
            await clients.next("idling")
            # every cache filled, every session in its IDLE loop and through one restart
            await _polls_reached(calls, calls["probe_many"] + WARM_POLLS)
            await restart_all()
            samples = [sample()]
            for step in range(1, SAMPLES + 1):
                await _polls_reached(calls, samples[0][0] + step * POLLS // SAMPLES)
                if step % (SAMPLES // RESTARTS) == 0:
                    await restart_all()
                samples.append(sample())
            clients.tell("stop")
            ended = await clients.next("ended", timeout=600)
        finally:
            await clients.stop()
    polls = samples[-1][0] - samples[0][0]
    # the median of the first and of the last five samples: what is in flight varies
    blocks = statistics.median(s[1] for s in samples[-5:]) - statistics.median(
        s[1] for s in samples[:5]
    )
    rss = samples[-1][2] - samples[0][2]
    print(
        f"\n{polls} polls ({polls / 3600:.1f} hours at 1 s), {calls['select']} folder listings, "
        f"{sum(ended['results'])} IDLE restarts: {blocks:+.0f} Python blocks, "
        f"RSS {rss / 1024:+.0f} KiB"
    )
    assert polls >= POLLS
    assert ended["results"] == [RESTARTS + 1] * count  # the warm-up's restart, then RESTARTS
    # Anything kept at each poll is at least one object, one block: a quarter of a block a poll
    # is above the noise (what is in flight at a sample, some hundreds of blocks) and below any
    # leak per poll.
    assert blocks < POLLS / 4
    # Large buffers are not blocks: the RSS must not grow by 1 KiB a poll either.
    assert rss < POLLS * 1024


async def _polls_reached(calls: dict[str, int], target: int, stalled_after: int = 2400) -> None:
    """Wait until the watch has polled ``target`` times in all, however long that takes. Fails
    only if it stops polling: no poll in ``stalled_after`` naps of 50 ms in a row (two minutes
    or more: a poll is due every imap.poll_interval, 2 ms here)."""
    seen, naps = calls["probe_many"], 0
    while calls["probe_many"] < target:
        await asyncio.sleep(0.05)
        naps = 0 if calls["probe_many"] != seen else naps + 1
        seen = calls["probe_many"]
        assert naps < stalled_after, f"the watch stopped polling at {seen} polls"


async def test_idle_sessions_share_one_poll_and_one_periodic_listing(
    trust: Trust, tmp_path: Path, b_database: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty sessions idling on one folder: the process polls the database once per
    imap.poll_interval for all of them (one folder in one query), never once per session; and
    when their listings are due again (FULL_REFRESH_SECONDS, shortened here) one session lists
    the folder and the others adopt that listing. Per session, 20 sessions made 20 probes an
    interval and 20 listings a period. A flag set by another process (no bus) still reaches
    an idling client through the periodic listing."""
    count, poll, period, window = 20, 0.05, 0.5, 3.0
    _cheap_logins(monkeypatch)
    monkeypatch.setattr(backend, "FULL_REFRESH_SECONDS", period)
    calls: dict[str, list[int]] = {"probe": [], "probe_many": [], "select": []}

    def counting(name: str) -> Callable[..., Any]:
        original = getattr(Folders, name)

        def counted(self: Folders, *args: Any, **kwargs: Any) -> Any:
            calls[name].append(len(args[0]) if name == "probe_many" else 1)
            return original(self, *args, **kwargs)

        return counted

    for name in calls:
        monkeypatch.setattr(Folders, name, counting(name))
    async with running_operator(
        trust, tmp_path / "b", b_database, poll_interval=poll, **_ONE_CLIENT_MANY_SESSIONS
    ) as op:
        await asyncio.to_thread(op.deliver, message("Compte rendu"))
        clients = await Clients.start(op, count, "cycle", cycle=600)
        try:
            await clients.next("warm")
            clients.tell()
            await clients.next("idling")
            await asyncio.sleep(1.0)  # every session in its IDLE loop
            for seen in calls.values():
                seen.clear()
            await asyncio.sleep(window)
            during = {name: list(seen) for name, seen in calls.items()}
            flagged = await asyncio.to_thread(_flag_elsewhere_and_wait, op, period)
            clients.tell()
            await clients.next("ended")
        finally:
            await clients.stop()
    polls, listings = during["probe_many"], len(during["select"])
    print(f"\n{count} sessions, {window} s: {len(polls)} polls, {listings} listings")
    # No session polls on its own each interval (that would be count * window / poll = 1,200
    # probes); each probes once a period, when it adopts another's listing (its rights again).
    assert len(during["probe"]) <= count * (window / period + 1), len(during["probe"])
    assert polls and set(polls) == {1}  # one folder per poll, all sessions waiting on it
    assert len(polls) <= window / poll + 2
    # Per session: count * window / period = 120 listings. Shared: about one a period (the
    # session holding the newest listing when its turn comes lists again); 5-9 measured.
    assert listings <= count * window / period / 4, listings
    assert flagged, "a flag set by another process never reached the idling client"


def _flag_elsewhere_and_wait(op: Operator, period: float) -> bool:
    """Flag the message \\Flagged from another process's point of view (folder operations
    that publish nothing on this process's bus) while one more client idles: True if that
    client receives the FETCH FLAGS within a few periods."""
    with op.client() as client:
        client.select_folder("INBOX")
        client.idle()
        elsewhere = Folders(op.rt.node.db, op.rt.node.blobs)
        with op.rt.node.db.session() as session:
            account = session.execute(select(Account).where(Account.login == MARTIN)).scalar_one()
            caller = Caller(account.id, account.login)
        elsewhere.store_flags(caller, MARTIN, "INBOX", [1], flags=["\\Flagged"], mode=FlagMode.ADD)
        deadline = time.monotonic() + 6 * period + 3  # an adopted listing: two periods at most
        while time.monotonic() < deadline:
            for response in client.idle_check(timeout=deadline - time.monotonic()):
                if b"\\Flagged" in repr(response).encode():
                    client.idle_done()
                    return True
        client.idle_done()
        return False
