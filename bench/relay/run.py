"""Relay benchmark: operator A's submission -> mutual TLS -> durably stored at operator B.

For each system (a Postfix pair with default settings, the same with TLS connection reuse, and
the mssante pair) and each message size: ``--messages`` messages as fast as ``--connections``
SMTP sessions submit them (throughput, p50/p99 latency from submission to stored), then
``--rate-messages`` at a fixed ``--rate`` (p50/p99 latency). See bench/relay/README.md.

    .venv/bin/python bench/relay/run.py --messages 1000 --only postfix
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(HERE), str(REPO / "tests"), str(REPO / "src")]

from loadgen import InjectionFailed, Run, RunResult, RunSpec, Stalled, run_label  # noqa: E402
from mssante_pair import MssantePair  # noqa: E402
from pairs import BenchPki, PostfixPair, RelayPair  # noqa: E402
from report import Figures, SystemReport, as_json, ratios, table  # noqa: E402

from peers.postfix import PostfixError, peer_workdir, postfix_skip_reason  # noqa: E402


def parse_size(text: str) -> int:
    """``10k`` -> 10240 bytes, ``1m`` -> 1048576, ``500`` -> 500."""
    units = {"k": 1024, "m": 1024 * 1024}
    text = text.strip().lower()
    if text[-1:] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/relay/run.py",
        description="A -> (mutual TLS) -> B relaying, throughput and latency: mssante vs Postfix.",
    )
    parser.add_argument("--messages", type=int, default=5000, help="messages per run (5000)")
    parser.add_argument(
        "--rate-messages",
        type=int,
        default=None,
        help="messages of the fixed-rate run (default: --messages)",
    )
    parser.add_argument("--sizes", default="10k,100k", help="message sizes (10k,100k)")
    parser.add_argument("--only", choices=["postfix", "mssante", "all"], default="all")
    parser.add_argument(
        "--rate", type=float, default=100.0, help="fixed rate, messages/s (100; 0: skip)"
    )
    parser.add_argument(
        "--connections", type=int, default=8, help="concurrent SMTP sessions into A (8)"
    )
    parser.add_argument(
        "--rate-connections",
        type=int,
        default=32,
        help="sessions available to the fixed-rate run (32): enough that a slow submission "
        "does not hold back the schedule",
    )
    parser.add_argument(
        "--stall", type=float, default=60.0, help="give up after this many seconds without progress"
    )
    parser.add_argument("--workdir", type=Path, help="keep the instances here (default: temporary)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser.parse_args(argv)


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- systems -----------------------------------------------------------------------------------


PairFactory = Callable[[Path, BenchPki], RelayPair]


def systems(only: str) -> list[tuple[str, PairFactory]]:
    postfix: list[tuple[str, PairFactory]] = [
        ("postfix", lambda d, p: PostfixPair(d, p, connection_reuse=False, name="postfix")),
        (
            "postfix+reuse",
            lambda d, p: PostfixPair(d, p, connection_reuse=True, name="postfix+reuse"),
        ),
    ]
    mssante: list[tuple[str, PairFactory]] = [("mssante", MssantePair)]
    return {"postfix": postfix, "mssante": mssante, "all": mssante + postfix}[only]


def plan(args: argparse.Namespace) -> list[RunSpec]:
    """For each size: a run at full speed, then (unless --rate 0) a run at the fixed rate."""
    specs = []
    for token in args.sizes.split(","):
        size = parse_size(token)
        specs.append(
            RunSpec(
                run_label(token, "max"),
                size,
                args.messages,
                "max",
                connections=args.connections,
                stall_seconds=args.stall,
            )
        )
        if args.rate > 0:
            specs.append(
                RunSpec(
                    run_label(token, "rate"),
                    size,
                    args.rate_messages or args.messages,
                    "rate",
                    rate=args.rate,
                    connections=args.rate_connections,
                    stall_seconds=args.stall,
                )
            )
    return specs


# -- running -----------------------------------------------------------------------------------


def measure(pair: RelayPair, spec: RunSpec) -> RunResult:
    started = time.monotonic()
    what = f"{pair.name} {spec.label}: {spec.count} messages"
    progress(f"== {what}" + (f" at {spec.rate:g}/s" if spec.mode == "rate" else " (max)"))

    def tick(result: RunResult) -> None:
        progress(f"   {len(result.stored)}/{spec.count} stored")

    run = Run(spec, pair.injection(), pair.recipient(spec.label), pair.probe(spec.label))
    result = asyncio.run(run.execute(tick))
    pair.wait_idle(spec.stall_seconds)
    figures = Figures.of(result)
    progress(
        f"   done in {time.monotonic() - started:.1f} s: {figures.throughput:.1f} msg/s, "
        f"p50 {figures.p50_ms:.0f} ms, p99 {figures.p99_ms:.0f} ms, "
        f"{figures.failures} submission failures"
    )
    for failure in result.failures[:5]:
        progress(f"   failure: {failure}")
    return result


def run_system(
    name: str, factory: PairFactory, workdir: Path, pki: BenchPki, specs: list[RunSpec]
) -> SystemReport:
    pair = factory(workdir / name.replace("+", "-"), pki)
    report = SystemReport(name, pair.describe())
    try:
        pair.start([s.label for s in specs])
        for spec in specs:
            size = spec.label.rsplit("-", 1)[0]
            report.runs[(size, spec.mode)] = Figures.of(measure(pair, spec))
    except NotImplementedError as error:
        report.error = f"not measured: {error}"
    except (Stalled, InjectionFailed, PostfixError, TimeoutError) as error:
        report.error = f"FAILED: {error} (logs: {pair.logs()})"
    finally:
        pair.stop()
    if report.error:
        progress(f"== {name}: {report.error}")
    return report


def environment() -> dict[str, object]:
    version = subprocess.run(
        ["/usr/sbin/postconf", "-d", "-h", "mail_version"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "postfix": version or None,
    }


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    if (reason := postfix_skip_reason()) is not None and args.only != "mssante":
        progress(f"cannot run the Postfix pairs: {reason}")
        return 2
    specs = plan(args)
    with ExitStack() as stack:
        workdir = args.workdir or stack.enter_context(peer_workdir("mssante-bench-relay-"))
        if args.workdir is not None:
            if workdir.exists() and any(workdir.iterdir()):
                progress(f"--workdir {workdir} must be a new or empty folder")
                return 2
            workdir.mkdir(parents=True, exist_ok=True)
            workdir.chmod(0o711)
        pki = BenchPki.create(workdir / "pki")
        reports = [run_system(n, f, workdir, pki, specs) for n, f in systems(args.only)]
    sizes = [s.strip() for s in args.sizes.split(",")]
    settings = {
        "messages": args.messages,
        "rate_messages": args.rate_messages or args.messages,
        "sizes": sizes,
        "rate": args.rate,
        "connections": args.connections,
        "rate_connections": args.rate_connections,
        **environment(),
    }
    if args.json:
        print(json.dumps(as_json(reports, settings), indent=2))
    else:
        print(_header(settings))
        print(table(reports, sizes, args.rate))
        print(
            "\n".join(ratios(reports, sizes))
            or "(no ratio: it needs both the mssante pair and a Postfix pair measured)"
        )
    return 1 if any(r.error and r.error.startswith("FAILED") for r in reports) else 0


def _header(settings: dict[str, object]) -> str:
    fixed = f"{settings['rate_messages']} at {settings['rate']:g}/s" if settings["rate"] else "no"
    return (
        f"relay benchmark: {settings['messages']} messages per run "
        f"({fixed} fixed-rate run); {settings['connections']} sessions into A at full speed, "
        f"up to {settings['rate_connections']} at the fixed rate; {settings['cpus']} CPUs, "
        f"Postfix {settings['postfix']}, "
        f"Python {settings['python']}\n"
        "latency: submission started -> stored at B (ms); lag: worst injector delay at the "
        "fixed rate; lost: accepted by A but never stored at B\n"
    )


if __name__ == "__main__":
    sys.exit(main())
