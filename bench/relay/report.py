"""Figures of the runs, as a table and ratio lines, or as JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from loadgen import RunResult


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class Figures:
    sent: int
    accepted: int
    stored: int
    failures: int
    throughput: float  # stored messages per second
    p50_ms: float
    p99_ms: float
    max_ms: float
    injector_lag_max_ms: float

    @classmethod
    def of(cls, result: RunResult) -> Figures:
        latencies = result.latencies()
        return cls(
            sent=result.spec.count,
            accepted=len(result.accepted),
            stored=len(result.stored),
            failures=len(result.failures),
            throughput=result.throughput(),
            p50_ms=percentile(latencies, 50) * 1000,
            p99_ms=percentile(latencies, 99) * 1000,
            max_ms=(latencies[-1] * 1000) if latencies else math.nan,
            injector_lag_max_ms=result.injector_lag_max * 1000,
        )


@dataclass
class SystemReport:
    name: str
    description: str
    runs: dict[tuple[str, str], Figures] = field(default_factory=dict)  # (size, mode) -> figures
    error: str | None = None


def _cell(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def table(systems: list[SystemReport], sizes: list[str], rate: float) -> str:
    head = f"{'system':<15} {'size':>5} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8}"
    if rate:
        head += f" | {f'@{rate:g}/s got/s':>13} {'p50 ms':>8} {'p99 ms':>8} {'lag ms':>7}"
    lines = [head + f" {'lost':>5}", "-" * len(head + "      ")]
    for system in systems:
        if system.error:
            lines.append(f"{system.name:<15} {system.error}")
            continue
        lines += [_row(system, size, rate) for size in sizes]
    return "\n".join(lines)


def _row(system: SystemReport, size: str, rate: float) -> str:
    top = system.runs.get((size, "max"))
    line = f"{system.name:<15} {size:>5}"
    lost = 0
    if top:
        line += f" {top.throughput:>8.1f} {_cell(top.p50_ms):>8} {_cell(top.p99_ms):>8}"
        lost += top.accepted - top.stored
    else:
        line += f" {'-':>8} {'-':>8} {'-':>8}"
    fixed = system.runs.get((size, "rate"))
    if rate and fixed:
        lag = _cell(fixed.injector_lag_max_ms, 0)
        got = f"{fixed.throughput:.1f}"
        line += f" | {got:>13} {_cell(fixed.p50_ms):>8} {_cell(fixed.p99_ms):>8} {lag:>7}"
        lost += fixed.accepted - fixed.stored
    return line + f" {lost:>5}"


def ratios(systems: list[SystemReport], sizes: list[str]) -> list[str]:
    """``mssante / <postfix variant>`` throughput ratios, when both were measured."""
    ours = next((s for s in systems if s.name == "mssante" and not s.error), None)
    if ours is None:
        return []
    lines = []
    for other in systems:
        if other is ours or other.error:
            continue
        for size in sizes:
            a, b = ours.runs.get((size, "max")), other.runs.get((size, "max"))
            if a and b and b.throughput > 0:
                lines.append(
                    f"ratio mssante / {other.name:<14} {size:>5}: "
                    f"{a.throughput / b.throughput:.2f}x throughput"
                )
    return lines


def as_json(systems: list[SystemReport], settings: dict[str, Any]) -> dict[str, Any]:
    def clean(value: float) -> float | None:
        return None if math.isnan(value) else round(value, 3)

    return {
        "settings": settings,
        "systems": [
            {
                "name": s.name,
                "description": s.description,
                "error": s.error,
                "runs": [
                    {"size": size, "mode": mode, **{k: clean(v) for k, v in vars(f).items()}}
                    for (size, mode), f in s.runs.items()
                ],
            }
            for s in systems
        ],
        "ratios": ratios(systems, settings["sizes"]),
    }
