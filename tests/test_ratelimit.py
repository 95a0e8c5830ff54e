"""TokenBuckets: a burst, then a steady rate, per client; a refused request spends nothing."""

from __future__ import annotations

from mssante.ratelimit import TokenBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_rate_per_client() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=2.0, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == 0.5  # one token in half a second
    assert buckets.take("b") == 0.0  # another client has its own bucket
    assert buckets.take("a") == 0.5  # the refusal spent nothing
    clock.now += 0.5
    assert buckets.take("a") == 0.0
    clock.now += 60
    assert [buckets.take("a") for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]  # never above burst


def test_clients_kept_are_bounded() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1, max_clients=100, clock=Clock())
    for n in range(1000):
        buckets.take(f"10.0.{n // 256}.{n % 256}")
    assert len(buckets._buckets) == 100
