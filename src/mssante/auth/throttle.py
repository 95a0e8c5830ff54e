"""Growing delays after failed logins, per account and per client address (docs/auth.md).

After n recent failures for an **account** the next attempt on it waits ``base * 2**(n-1)``
seconds (capped), whatever its outcome, so guessing is slowed without locking the real user out
for long. A client **address** may fail ``address_allowance`` times first (many users behind one
hospital NAT): after n > allowance failures the next attempt from it waits
``base * 2**(n-allowance-1)``. An attempt waits the longer of its two delays. Failures older than
``window`` are forgotten.

Atomic: an attempt *reserves* its place before it waits, in the same locked step that computes
its delay, and an attempt still in flight counts as a failure for the delay of the next ones. So
the k-th of k concurrent attempts on a key waits as if the k-1 before it had already failed,
instead of all of them reading "no failure yet". When the attempt is decided the reservation is
settled: a failure becomes a recorded failure of each key; a success withdraws it and clears the
account's count (not the address's: docs/auth.md says why); an attempt abandoned before its
check (the client left during the wait) is withdrawn and counts for nothing.

:class:`Throttle` is what the login paths use (passwords at every door through
:class:`~mssante.auth.service.AuthService`, certificates through
:class:`~mssante.auth.certificates.CertificateLogins`): one instance per process, built by the
operator runtime and handed to both. :class:`LoginThrottle` keeps the counts in this process; a
store shared by the nodes (issue 18) would be another implementation of the same protocol.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from mssante.config import AuthSettings

_HEADROOM = 64  # failures kept per key beyond the address allowance (the cap comes far sooner)


class Outcome(StrEnum):
    """How a reserved attempt ended."""

    FAILED = "failed"  # recorded as a failure of each of its keys
    SUCCEEDED = "succeeded"  # withdrawn; the account's count is cleared
    ABANDONED = "abandoned"  # withdrawn: no credential was checked (the client left)


@dataclass(frozen=True)
class Reservation:
    """An attempt's place, taken before it waits; settle it exactly once."""

    id: int
    account: str | None  # the login typed, or None (certificates: the address only)
    address: str | None  # the client's address or IPv6 /64
    delay: float  # seconds to wait before checking the credential


class Throttle(Protocol):
    """Login slowing shared by every door; implementations must make :meth:`reserve` atomic
    (the delay read and the place taken in one step) and :meth:`settle` idempotent."""

    def reserve(self, *, account: str | None, address: str | None) -> Reservation:
        """Take a place for one attempt and say how long it must wait first."""
        ...

    def settle(self, reservation: Reservation, outcome: Outcome) -> None:
        """End the attempt; a second call for the same reservation does nothing."""
        ...


@dataclass
class LoginThrottle:
    """:class:`Throttle` in this process's memory, safe across threads (one lock)."""

    base: float = 0.5
    cap: float = 30.0
    window: float = 900.0
    address_allowance: int = 20
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict, repr=False)
    _pending: Counter[str] = field(default_factory=Counter, repr=False)
    _open: dict[int, Reservation] = field(default_factory=dict, repr=False)
    _ids: itertools.count[int] = field(default_factory=itertools.count, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_settings(
        cls, settings: AuthSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> LoginThrottle:
        """``[auth] throttle_base``, ``throttle_cap``, ``throttle_window``,
        ``throttle_address_allowance``."""
        return cls(
            base=settings.throttle_base,
            cap=settings.throttle_cap,
            window=settings.throttle_window,
            address_allowance=settings.throttle_address_allowance,
            clock=clock,
        )

    # -- the protocol ------------------------------------------------------------------------------
    def reserve(self, *, account: str | None, address: str | None) -> Reservation:
        with self._lock:
            delay = self._delay(account, address)
            reservation = Reservation(next(self._ids), account, address, delay)
            self._open[reservation.id] = reservation
            for key in _keys(account, address):
                self._pending[key] += 1
            return reservation

    def settle(self, reservation: Reservation, outcome: Outcome) -> None:
        with self._lock:
            if self._open.pop(reservation.id, None) is None:
                return  # settled already
            keys = _keys(reservation.account, reservation.address)
            for key in keys:
                self._pending[key] -= 1
                if self._pending[key] <= 0:
                    del self._pending[key]
            if outcome is Outcome.FAILED:
                now = self.clock()
                for key in keys:
                    self._failures.setdefault(key, deque(maxlen=self._kept(key))).append(now)
            elif outcome is Outcome.SUCCEEDED and reservation.account is not None:
                self._failures.pop(_account_key(reservation.account), None)

    # -- reading (tests, diagnostics) -------------------------------------------------------------
    def delay(self, *, account: str | None = None, address: str | None = None) -> float:
        """The delay an attempt reserved now would get (nothing is reserved)."""
        with self._lock:
            return self._delay(account, address)

    def in_flight(self) -> int:
        """Reservations not settled yet."""
        with self._lock:
            return len(self._open)

    # -- inside the lock ---------------------------------------------------------------------------
    def _delay(self, account: str | None, address: str | None) -> float:
        delays = [0.0]
        if account is not None:
            delays.append(self._after(self._count(_account_key(account)), 0))
        if address is not None:
            delays.append(self._after(self._count(_address_key(address)), self.address_allowance))
        return max(delays)

    def _after(self, failures: int, allowance: int) -> float:
        """The wait after ``failures`` (recorded or in flight) for a key allowing ``allowance``."""
        beyond = failures - allowance
        if beyond <= 0:
            return 0.0
        return float(min(self.cap, self.base * 2.0 ** min(beyond - 1, 64)))

    def _count(self, key: str) -> int:
        """Recorded failures, and the attempts in flight once there is one: a mail client
        opening several connections at once is not slowed, while guesses after a failure
        wait as if each one in flight before them had failed."""
        recent = self._recent(key)
        return recent + self._pending.get(key, 0) if recent else 0

    def _recent(self, key: str) -> int:
        times = self._failures.get(key)
        if not times:
            return 0
        horizon = self.clock() - self.window
        while times and times[0] < horizon:
            times.popleft()
        if not times:
            del self._failures[key]
            return 0
        return len(times)

    def _kept(self, key: str) -> int:
        return _HEADROOM + (self.address_allowance if key.startswith("address:") else 0)


def _account_key(account: str) -> str:
    return f"account:{account}"


def _address_key(address: str) -> str:
    return f"address:{address}"


def _keys(account: str | None, address: str | None) -> tuple[str, ...]:
    keys = []
    if account is not None:
        keys.append(_account_key(account))
    if address is not None:
        keys.append(_address_key(address))
    return tuple(keys)


__all__ = ["LoginThrottle", "Outcome", "Reservation", "Throttle"]
