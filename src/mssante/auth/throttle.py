"""Growing delays after failed logins, per account and per client address.

After n recent failures for a key the next attempt waits ``base * 2**(n-1)`` seconds (capped),
whatever its outcome, so guessing is slowed without locking the real user out for long. A
success clears the account's count. Failures older than ``window`` are forgotten.

The counts live in this process: with several stateless nodes behind a load balancer, each node
slows an attacker on its own (a shared store is future work, noted in docs/auth.md).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class LoginThrottle:
    base: float = 0.5
    cap: float = 30.0
    window: float = 900.0
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def delay(self, *keys: str) -> float:
        """Seconds the next attempt for these keys must wait."""
        return max((self._delay_for(k) for k in keys), default=0.0)

    def failed(self, *keys: str) -> None:
        now = self.clock()
        for key in keys:
            self._failures.setdefault(key, deque(maxlen=64)).append(now)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    def _delay_for(self, key: str) -> float:
        recent = self._recent(key)
        if not recent:
            return 0.0
        return float(min(self.cap, self.base * 2.0 ** (recent - 1)))

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
