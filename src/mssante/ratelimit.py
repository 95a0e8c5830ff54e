"""Requests per client address: a token bucket each (written here: a few lines, and the
libraries for it bring a store and a framework of their own).

A client may make ``burst`` requests at once, then ``rate`` a second. Buckets live in this
process, at most ``max_clients`` of them (the least recently seen is forgotten first): with
several nodes, each limits on its own, as the login throttle does (docs/auth.md).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class TokenBuckets:
    rate: float  # tokens a second
    burst: float  # the bucket's size
    max_clients: int = 10_000
    clock: Callable[[], float] = time.monotonic
    _buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)

    def take(self, key: str) -> float:
        """Spend a token of ``key``'s bucket: 0 if there was one, else the seconds until
        there is (nothing is spent then)."""
        now = self.clock()
        tokens, seen = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - seen) * self.rate)
        if tokens >= 1:
            self._remember(key, tokens - 1, now)
            return 0.0
        self._remember(key, tokens, now)
        return (1 - tokens) / self.rate

    def _remember(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
