"""The login throttle is atomic (issue 12): concurrent attempts cannot all read "no failure yet".

Nothing here depends on the machine's speed: the throttle's clock and the service's sleeps are
injected, and the tests assert on the delays handed out, not on the time things took.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from auth_helpers import LOGIN, PASSWORD, FakeClock, fast_auth, make_person, make_settings

from mssante.audit.events import ListSink
from mssante.auth.certificates import CertificateLogins
from mssante.auth.service import AuthService, password_hasher
from mssante.auth.throttle import LoginThrottle, Outcome, Throttle
from mssante.pki import TestPki, TrustStore
from mssante.store.db import Database

BASE, CAP, WINDOW = 0.5, 30.0, 900.0  # the defaults
PEER = "203.0.113.5"
# What 30 attempts on one account get, one after the other or all at once: 0, then doubling from
# 0.5 s, capped at 30 s.
EXPECTED_30 = [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0] + [CAP] * 23
# Attempts in flight count once a failure is recorded: 30 at once after one failure.
AFTER_ONE_30 = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0] + [CAP] * 24


def _throttle(clock: FakeClock, allowance: int = 20) -> LoginThrottle:
    return LoginThrottle(
        base=BASE, cap=CAP, window=WINDOW, address_allowance=allowance, clock=clock
    )


class Sleeps:
    """Records the waits handed out instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, seconds: float) -> None:
        with self.lock:
            self.delays.append(seconds)

    async def async_sleep(self, seconds: float) -> None:
        self(seconds)


def _fail_once(throttle: LoginThrottle, account: str | None = LOGIN) -> None:
    throttle.settle(throttle.reserve(account=account, address=PEER), Outcome.FAILED)


def _service(
    db: Database,
    tmp_path: Path,
    throttle: Throttle,
    sleeps: Sleeps,
    async_sleep: Callable[[float], Awaitable[None]] | None = None,
) -> AuthService:
    settings = make_settings(tmp_path, fast_auth(throttle_base=BASE, throttle_cap=CAP))
    make_person(db, password_hasher(settings.auth))
    return AuthService(
        db,
        settings,
        ListSink(),
        throttle=throttle,
        sleep=sleeps,
        async_sleep=async_sleep or sleeps.async_sleep,
    )


# -- the throttle's reservations ------------------------------------------------------------------
def test_reservations_in_flight_count_as_failures() -> None:
    throttle = _throttle(FakeClock())
    _fail_once(throttle)
    reservations = [throttle.reserve(account=LOGIN, address=f"192.0.2.{i}") for i in range(30)]
    assert [r.delay for r in reservations] == AFTER_ONE_30
    assert throttle.in_flight() == 30
    for reservation in reservations:
        throttle.settle(reservation, Outcome.FAILED)
    assert throttle.in_flight() == 0
    assert throttle.delay(account=LOGIN) == CAP  # the reservations became 30 failures


def test_parallel_logins_with_no_failure_are_not_slowed() -> None:
    """A mail client opens several connections at once (Thunderbird, mbsync, software)."""
    throttle = _throttle(FakeClock())
    reservations = [throttle.reserve(account=LOGIN, address=PEER) for _ in range(50)]
    assert {r.delay for r in reservations} == {0.0}
    for reservation in reservations:
        throttle.settle(reservation, Outcome.SUCCEEDED)
    assert throttle.in_flight() == 0


def test_sequential_attempts_get_the_same_delays() -> None:
    throttle = _throttle(FakeClock())
    delays = []
    for _ in range(30):
        reservation = throttle.reserve(account=LOGIN, address=PEER)
        delays.append(reservation.delay)
        throttle.settle(reservation, Outcome.FAILED)
    assert delays == EXPECTED_30


def test_concurrent_threads_each_get_their_own_place() -> None:
    throttle = _throttle(FakeClock())
    _fail_once(throttle)
    barrier = threading.Barrier(30)
    delays: list[float] = []
    lock = threading.Lock()

    def attempt() -> None:
        barrier.wait()
        reservation = throttle.reserve(account=LOGIN, address=PEER)
        with lock:
            delays.append(reservation.delay)

    threads = [threading.Thread(target=attempt) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(delays) == AFTER_ONE_30


def test_success_withdraws_the_reservation_and_clears_the_account() -> None:
    throttle = _throttle(FakeClock(), allowance=0)
    wrong = throttle.reserve(account=LOGIN, address=PEER)
    right = throttle.reserve(account=LOGIN, address=PEER)
    assert (wrong.delay, right.delay) == (0.0, 0.0)  # no failure yet: not slowed
    throttle.settle(wrong, Outcome.FAILED)
    throttle.settle(right, Outcome.SUCCEEDED)
    assert throttle.in_flight() == 0
    assert throttle.delay(account=LOGIN) == 0.0  # cleared by the success
    assert throttle.delay(address=PEER) == BASE  # the address keeps its one failure


def test_a_success_withdraws_only_itself() -> None:
    throttle = _throttle(FakeClock())
    first = throttle.reserve(account=LOGIN, address=PEER)
    second = throttle.reserve(account=LOGIN, address=PEER)
    throttle.settle(first, Outcome.SUCCEEDED)
    assert throttle.delay(account=LOGIN) == 0.0  # no failure: the second in flight is not one
    throttle.settle(second, Outcome.FAILED)
    assert throttle.delay(account=LOGIN) == BASE


def test_an_abandoned_attempt_counts_for_nothing() -> None:
    throttle = _throttle(FakeClock(), allowance=0)
    _fail_once(throttle)
    reservation = throttle.reserve(account=LOGIN, address=PEER)
    assert throttle.delay(account=LOGIN, address=PEER) == 2 * BASE
    throttle.settle(reservation, Outcome.ABANDONED)
    assert throttle.delay(account=LOGIN, address=PEER) == BASE  # the one failure, no more
    assert throttle.in_flight() == 0


def test_settling_twice_changes_nothing() -> None:
    throttle = _throttle(FakeClock())
    reservation = throttle.reserve(account=LOGIN, address=PEER)
    throttle.settle(reservation, Outcome.FAILED)
    throttle.settle(reservation, Outcome.FAILED)
    throttle.settle(reservation, Outcome.SUCCEEDED)  # too late: the failure stays
    assert throttle.delay(account=LOGIN) == BASE


def test_failures_are_forgotten_after_the_window() -> None:
    clock = FakeClock()
    throttle = _throttle(clock)
    for _ in range(3):
        throttle.settle(throttle.reserve(account=LOGIN, address=PEER), Outcome.FAILED)
    assert throttle.delay(account=LOGIN) == 4 * BASE  # 0.5 * 2**(3-1)
    clock.advance(WINDOW - 1)
    assert throttle.delay(account=LOGIN) == 4 * BASE
    clock.advance(2)
    assert throttle.delay(account=LOGIN) == 0.0


def test_an_address_may_fail_its_allowance_first() -> None:
    throttle = _throttle(FakeClock(), allowance=20)
    delays = []
    for i in range(23):  # a new account each time: only the address's count grows
        reservation = throttle.reserve(account=f"user{i}@hopital-nord.mssante.test", address=PEER)
        delays.append(reservation.delay)
        throttle.settle(reservation, Outcome.FAILED)
    assert delays == [0.0] * 21 + [BASE, 2 * BASE]  # after the 21st failure, it waits
    assert throttle.delay(address="203.0.113.6") == 0.0


def test_a_large_allowance_still_reaches_the_delay() -> None:
    throttle = _throttle(FakeClock(), allowance=200)
    for i in range(201):
        throttle.settle(throttle.reserve(account=f"u{i}", address=PEER), Outcome.FAILED)
    assert throttle.delay(address=PEER) == BASE  # the failures kept are not cut at 64


def test_the_throttle_is_built_from_the_settings() -> None:
    clock = FakeClock()
    throttle = LoginThrottle.from_settings(
        fast_auth(
            throttle_base=1.0,
            throttle_cap=4.0,
            throttle_window=60.0,
            throttle_address_allowance=3,
        ),
        clock=clock,
    )
    assert (throttle.base, throttle.cap, throttle.window) == (1.0, 4.0, 60.0)
    assert throttle.address_allowance == 3
    assert throttle.clock is clock


# -- through the authentication service ----------------------------------------------------------
async def test_concurrent_wrong_passwords_wait_longer_and_longer(
    db: Database, tmp_path: Path
) -> None:
    throttle = _throttle(FakeClock())
    _fail_once(throttle)
    sleeps = Sleeps()
    service = _service(db, tmp_path, throttle, sleeps)
    results = await asyncio.gather(
        *(
            service.check_password_async(LOGIN, f"guess number {i}", peer=PEER, protocol=protocol)
            for i, protocol in enumerate(["submission", "imap", "web"] * 10)
        )
    )
    assert results == [None] * 30
    # Before: 30 delays of the one failure's 0.5 s. Now the k-th waits as if the k-1 before it
    # had failed: strictly growing up to the cap.
    assert sleeps.delays == AFTER_ONE_30
    assert throttle.in_flight() == 0
    assert throttle.delay(account=LOGIN) == CAP


async def test_concurrent_totp_logins_are_throttled_too(db: Database, tmp_path: Path) -> None:
    throttle = _throttle(FakeClock())
    _fail_once(throttle)
    sleeps = Sleeps()
    service = _service(db, tmp_path, throttle, sleeps)
    await asyncio.gather(
        *(service.check_password_totp_async(LOGIN, "wrong", "000000", PEER) for _ in range(5))
    )
    assert sleeps.delays == AFTER_ONE_30[:5]


async def test_the_right_password_amid_wrong_ones_waits_then_clears(
    db: Database, tmp_path: Path
) -> None:
    throttle = _throttle(FakeClock())
    _fail_once(throttle)
    sleeps = Sleeps()
    passwords = ["wrong one", "wrong two", PASSWORD, "wrong three"]
    everyone_reserved = asyncio.Event()

    async def gate(seconds: float) -> None:  # no check starts before all four have their place
        sleeps(seconds)
        if len(sleeps.delays) == len(passwords):
            everyone_reserved.set()
        await everyone_reserved.wait()

    service = _service(db, tmp_path, throttle, sleeps, async_sleep=gate)
    results = await asyncio.gather(
        *(service.check_password_async(LOGIN, p, peer=PEER, protocol="imap") for p in passwords)
    )
    assert [r is not None for r in results] == [False, False, True, False]
    assert sleeps.delays == [BASE, 2 * BASE, 4 * BASE, 8 * BASE]
    assert throttle.in_flight() == 0
    # The success cleared the failures recorded before it; the wrong attempts settled after it
    # (other threads, any order) are recorded since: at most the three of them.
    assert throttle.delay(account=LOGIN) in {0.0, BASE, 2 * BASE, 4 * BASE}


async def test_sequential_success_clears_the_account(db: Database, tmp_path: Path) -> None:
    throttle = _throttle(FakeClock())
    sleeps = Sleeps()
    service = _service(db, tmp_path, throttle, sleeps)
    for _ in range(3):
        assert await service.check_password_async(LOGIN, "nope", peer=PEER, protocol="imap") is None
    assert await service.check_password_async(LOGIN, PASSWORD, peer=PEER, protocol="imap")
    assert await service.check_password_async(LOGIN, PASSWORD, peer=PEER, protocol="imap")
    assert sleeps.delays == [0.0, BASE, 2 * BASE, 4 * BASE, 0.0]
    assert throttle.in_flight() == 0


async def test_one_address_behind_nat_keeps_logging_users_in(db: Database, tmp_path: Path) -> None:
    throttle = _throttle(FakeClock(), allowance=20)
    sleeps = Sleeps()
    service = _service(db, tmp_path, throttle, sleeps)

    async def fail(i: int) -> None:
        login = f"collegue{i}@hopital-nord.mssante.test"  # distinct accounts, one hospital NAT
        assert await service.check_password_async(login, "typo", peer=PEER, protocol="imap") is None

    for i in range(19):
        await fail(i)
    assert await service.check_password_async(LOGIN, PASSWORD, peer=PEER, protocol="imap")
    assert sleeps.delays[-1] == 0.0  # a good user, at once
    await fail(19)
    await fail(20)  # the 21st failure from the address
    assert sleeps.delays[-2:] == [0.0, 0.0]
    assert await service.check_password_async(LOGIN, PASSWORD, peer=PEER, protocol="imap")
    assert sleeps.delays[-1] == BASE  # now the address waits, the good user too
    # the success did not relieve the address (docs/auth.md): the next one waits as long
    assert throttle.delay(address=PEER) == BASE


def test_sync_entry_points_use_the_injected_sleep(db: Database, tmp_path: Path) -> None:
    throttle = _throttle(FakeClock())
    sleeps = Sleeps()
    service = _service(db, tmp_path, throttle, sleeps)
    service.check_password(LOGIN, "wrong", peer=PEER, protocol="web")
    service.check_password_totp(LOGIN, "wrong", "123456", PEER)
    assert service.check_password(LOGIN, PASSWORD, peer=PEER, protocol="imap") is not None
    assert sleeps.delays == [0.0, BASE, 2 * BASE]


async def test_a_client_leaving_during_the_wait_is_withdrawn(db: Database, tmp_path: Path) -> None:
    throttle = _throttle(FakeClock(), allowance=0)
    waiting = asyncio.Event()

    async def forever(seconds: float) -> None:
        waiting.set()
        await asyncio.Event().wait()

    settings = make_settings(tmp_path, fast_auth())
    service = AuthService(db, settings, ListSink(), throttle=throttle, async_sleep=forever)
    task = asyncio.create_task(
        service.check_password_async(LOGIN, "whatever", peer=PEER, protocol="imap")
    )
    await waiting.wait()
    assert throttle.in_flight() == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert throttle.in_flight() == 0
    assert throttle.delay(account=LOGIN, address=PEER) == 0.0  # nothing was checked


def test_a_check_that_raises_counts_as_a_failure(db: Database, tmp_path: Path) -> None:
    throttle = _throttle(FakeClock())
    sleeps = Sleeps()
    service = _service(db, tmp_path, throttle, sleeps)

    def broken(login: str) -> None:
        raise RuntimeError("database gone")

    service._load = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        service.check_password(LOGIN, PASSWORD, peer=PEER, protocol="imap")
    assert throttle.in_flight() == 0
    assert throttle.delay(account=LOGIN) == BASE


# -- one throttle for passwords and certificates --------------------------------------------------
async def test_certificate_and_password_logins_share_one_throttle(
    db: Database, tmp_path: Path
) -> None:
    throttle = _throttle(FakeClock(), allowance=2)
    sleeps = Sleeps()
    service = _service(db, tmp_path, throttle, sleeps)
    paths = TestPki.init(tmp_path / "pki").paths()
    trust = TrustStore.from_pem_files([paths.root], [paths.intermediates])
    logins = CertificateLogins(
        db, trust, None, ListSink(), throttle=throttle, sleep=sleeps.async_sleep
    )
    for _ in range(3):  # no certificate: refused, counted against the address
        assert await logins.authenticate(None, LOGIN, peer=PEER, protocol="submission") is None
    assert throttle.delay(address=PEER) == BASE  # 3 failures, 2 allowed
    assert throttle.delay(account=LOGIN) == 0.0  # the authzid is not counted
    assert await service.check_password_async(LOGIN, PASSWORD, peer=PEER, protocol="imap")
    assert sleeps.delays == [0.0, 0.0, 0.0, BASE]  # the password login waited for them


async def test_concurrent_certificate_attempts_wait_longer_and_longer(
    db: Database, tmp_path: Path
) -> None:
    throttle = _throttle(FakeClock(), allowance=0)
    _fail_once(throttle, account=None)
    sleeps = Sleeps()
    paths = TestPki.init(tmp_path / "pki").paths()
    trust = TrustStore.from_pem_files([paths.root], [paths.intermediates])
    logins = CertificateLogins(
        db, trust, None, ListSink(), throttle=throttle, sleep=sleeps.async_sleep
    )
    await asyncio.gather(
        *(logins.authenticate(None, None, peer=PEER, protocol="imap") for _ in range(10))
    )
    assert sleeps.delays == AFTER_ONE_30[:10]
    assert throttle.in_flight() == 0
