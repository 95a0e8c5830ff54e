"""IMAP benchmark: mssante's IMAP server (pymap behind our adapter) against Dovecot.

For each system, loaded with the same messages and users: (1) the wall time of a first
``mbsync`` sync of a ``--messages`` mailbox; (2) the memory (PSS) per connection with
``--connections`` clients in IDLE, and the server's CPU meanwhile; (3) the time from the start
of a delivery to the ``* N EXISTS`` an IDLE client receives. Each figure also as a ratio
mssante / Dovecot measured in the same run. See bench/imap/README.md.

    .venv/bin/python bench/imap/run.py --messages 1000 --connections 200 --only all
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(HERE), str(REPO / "src")]

from corpus import corpus, small_message, stats_of  # noqa: E402
from measure import (  # noqa: E402
    LatencyFigures,
    MemoryFigures,
    SyncFigures,
    idle_latency,
    idle_memory,
    mbsync_sync,
    progress,
)
from systems import (  # noqa: E402
    DovecotServer,
    ImapServer,
    MssanteServer,
    dovecot_missing,
    dovecot_version,
    install_debian_packages,
)

# The users both servers hold (at operator B's domain); passwords drawn per run.
SYNC, IDLE, LATENCY, POLL = "bench.sync", "bench.idle", "bench.latency", "bench.poll"


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/imap/run.py",
        description="mbsync first sync, memory per IDLE connection, delivery -> IDLE "
        "notification: mssante vs Dovecot.",
    )
    parser.add_argument("--messages", type=int, default=10000, help="mailbox to sync (10000)")
    parser.add_argument("--connections", type=int, default=2000, help="connections in IDLE (2000)")
    parser.add_argument(
        "--idle-messages",
        type=int,
        default=100,
        help="messages in the INBOX the IDLE connections select (100)",
    )
    parser.add_argument(
        "--deliveries", type=int, default=50, help="deliveries timed to EXISTS (50)"
    )
    parser.add_argument(
        "--poll-deliveries",
        type=int,
        default=20,
        help="mssante only: deliveries from another process, seen by the poll (20; 0: skip)",
    )
    parser.add_argument("--only", choices=["mssante", "dovecot", "all"], default="all")
    parser.add_argument(
        "--measures",
        default="sync,idle,latency",
        help="which measurements, comma-separated: sync, idle, latency (all three)",
    )
    parser.add_argument("--seed", type=int, default=20261125, help="corpus seed")
    parser.add_argument(
        "--sync-timeout",
        type=float,
        default=7200.0,
        help="stop mbsync after S seconds (7200); the figure is then a lower bound",
    )
    parser.add_argument("--workdir", type=Path, help="keep the instances here (default: temporary)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser.parse_args(argv)


@dataclass
class SystemReport:
    name: str
    description: str = ""
    load_seconds: float = math.nan
    sync: SyncFigures | None = None
    memory: MemoryFigures | None = None
    latency: list[LatencyFigures] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "load_seconds": self.load_seconds,
            "sync": {**asdict(self.sync), "ok": self.sync.ok} if self.sync else None,
            "memory": self.memory.as_dict() if self.memory else None,
            "latency": [figures.summary() for figures in self.latency],
            "error": self.error,
        }


# -- running one system ------------------------------------------------------------------------


def users_of(domain: str) -> dict[str, str]:
    return {f"{name}@{domain}": secrets.token_urlsafe(18) for name in (SYNC, IDLE, LATENCY, POLL)}


def run_system(server: ImapServer, args: argparse.Namespace) -> SystemReport:
    report = SystemReport(server.name)
    domain = server.domain
    users = users_of(domain)
    address = {name: f"{name}@{domain}" for name in (SYNC, IDLE, LATENCY, POLL)}
    try:
        report.description = server.describe()
        progress(f"== {server.name}: {report.description}")
        server.build(users)
        measures = {m.strip() for m in args.measures.split(",")}
        started = time.monotonic()
        to_sync = args.messages if "sync" in measures else 0
        loaded = server.load(address[SYNC], corpus(to_sync, address[SYNC], seed=args.seed))
        server.load(
            address[IDLE], corpus(args.idle_messages, address[IDLE], seed=args.seed, tag="i")
        )
        report.load_seconds = time.monotonic() - started
        progress(
            f"   loaded {loaded.messages} messages ({loaded.bytes / 2**20:.1f} MiB) "
            f"in {loaded.seconds:.1f} s"
        )
        server.start(args.connections)
        progress(f"   started; IMAP (implicit TLS) on 127.0.0.1:{server.endpoint().port}")
        if "idle" in measures:
            report.memory = measure_memory(server, args, address, users)
        if "latency" in measures:
            report.latency = measure_latency(server, args, address, users)
        if "sync" in measures:
            report.sync = measure_sync(server, args, address, users)
            if not report.sync.ok:
                report.error = f"mbsync got {report.sync.messages} of {args.messages} messages" + (
                    f" in {args.sync_timeout:.0f} s, then was stopped: the time is a lower bound"
                    if report.sync.timed_out
                    else ""
                )
    except (RuntimeError, OSError, TimeoutError, subprocess.SubprocessError) as error:
        report.error = f"FAILED: {type(error).__name__}: {error} (logs: {server.logs()})"
        progress(f"== {server.name}: {report.error}")
        progress(traceback.format_exc(limit=4))
    finally:
        server.stop()
    return report


def measure_memory(
    server: ImapServer,
    args: argparse.Namespace,
    address: dict[str, str],
    users: dict[str, str],
) -> MemoryFigures:
    progress(f"-- {server.name}: {args.connections} connections in IDLE")
    memory = idle_memory(server, address[IDLE], users[address[IDLE]], args.connections)
    progress(
        f"   {memory.opened} in IDLE in {memory.setup_seconds:.0f} s, "
        f"{memory.per_connection_kib:.1f} KiB PSS per connection, "
        f"server CPU while idle {memory.idle_cpu_percent:.1f} %"
    )
    return memory


def measure_sync(
    server: ImapServer,
    args: argparse.Namespace,
    address: dict[str, str],
    users: dict[str, str],
) -> SyncFigures:
    progress(f"-- {server.name}: mbsync first sync of {args.messages} messages")
    sync = mbsync_sync(
        server.endpoint(),
        address[SYNC],
        users[address[SYNC]],
        Path(args.workdir_now) / f"mbsync-{server.name}",
        args.messages,
        args.sync_timeout,
    )
    progress(
        f"   {sync.seconds:.1f} s, {sync.messages} messages "
        f"({sync.bytes / 2**20:.1f} MiB on disk)" + (" - TIMED OUT" if sync.timed_out else "")
    )
    return sync


def measure_latency(
    server: ImapServer,
    args: argparse.Namespace,
    address: dict[str, str],
    users: dict[str, str],
) -> list[LatencyFigures]:
    results = []
    for i, deliverer in enumerate(server.deliverers()):
        user = address[LATENCY] if i == 0 else address[POLL]
        count = args.deliveries if i == 0 else args.poll_deliveries
        if count <= 0:
            continue
        progress(f"-- {server.name}: {count} deliveries, {deliverer.description}")
        messages = [small_message(n, user, f"lat{i}") for n in range(count)]
        figures = asyncio.run(
            idle_latency(server.endpoint(), user, users[user], deliverer, messages)
        )
        summary = figures.summary()
        progress(
            f"   to EXISTS p50 {summary['p50_ms']:.0f} ms, p95 {summary['p95_ms']:.0f} ms, "
            f"max {summary['max_ms']:.0f} ms; delivery p50 {summary['delivery_p50_ms']:.0f} ms; "
            f"{figures.notified}/{figures.deliveries} notified"
        )
        results.append(figures)
    return results


# -- report ------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 1) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return math.nan
    return a / b


Row = tuple[str, float | None, float | None]


def rows(reports: dict[str, SystemReport]) -> list[Row]:
    """(label, mssante, dovecot) for each figure of the table."""
    both = (reports.get("mssante"), reports.get("dovecot"))

    def sync(label: str, get: Callable[[SyncFigures], float]) -> Row:
        a, b = (get(r.sync) if r and r.sync else None for r in both)
        return label, a, b

    def memory(label: str, get: Callable[[MemoryFigures], float]) -> Row:
        a, b = (get(r.memory) if r and r.memory else None for r in both)
        return label, a, b

    def latency(label: str, key: str) -> Row:
        a, b = (float(r.latency[0].summary()[key]) if r and r.latency else None for r in both)
        return label, a, b

    return [
        sync("mbsync first sync, s", lambda s: s.seconds),
        sync("  messages/s", lambda s: s.messages / s.seconds),
        memory("IDLE: PSS per connection, KiB", lambda m: m.per_connection_kib),
        memory("  server PSS before, MiB", lambda m: m.pss_before_kib / 1024),
        memory("  server PSS in IDLE, MiB", lambda m: m.pss_after_kib / 1024),
        memory("  server PSS after close, MiB", lambda m: m.pss_after_close_kib / 1024),
        memory("  server CPU while idle, %", lambda m: m.idle_cpu_percent),
        memory("  set-up of all connections, s", lambda m: m.setup_seconds),
        latency("delivery -> EXISTS p50, ms", "p50_ms"),
        latency("delivery -> EXISTS p95, ms", "p95_ms"),
        latency("delivery -> EXISTS max, ms", "max_ms"),
        latency("  delivery itself p50, ms", "delivery_p50_ms"),
    ]


def table(reports: dict[str, SystemReport], settings: dict[str, Any]) -> str:
    parts = []
    if "sync" in settings["measures"]:
        parts.append(
            f"{settings['messages']} messages to sync ({settings['corpus_mib']:.1f} MiB, "
            f"{settings['attachments']} with attachments)"
        )
    if "idle" in settings["measures"]:
        parts.append(
            f"{settings['connections']} IDLE connections on a "
            f"{settings['idle_messages']}-message INBOX"
        )
    if "latency" in settings["measures"]:
        parts.append(f"{settings['deliveries']} deliveries")
    lines = [
        f"imap benchmark: {', '.join(parts)}; {settings['cpus']} CPUs, {settings['dovecot']}, "
        f"isync {settings['isync']}, Python {settings['python']}, mssante {settings['commit']}",
        "",
        f"{'figure':<34}{'mssante':>12}{'dovecot':>12}{'mssante/dovecot':>18}",
        "-" * 76,
    ]
    for label, a, b in rows(reports):
        ratio = _ratio(a, b)
        lines.append(
            f"{label:<34}{_num(a):>12}{_num(b):>12}"
            f"{(_num(ratio, 2 if ratio >= 0.1 else 4) + 'x') if not math.isnan(ratio) else '-':>18}"
        )
    for report in reports.values():
        for figures in report.latency:
            s = figures.summary()
            lines.append(
                f"latency {report.name}, {s['method']}: p50 {_num(s['p50_ms'], 0)} ms, "
                f"p95 {_num(s['p95_ms'], 0)} ms, max {_num(s['max_ms'], 0)} ms, "
                f"delivery p50 {_num(s['delivery_p50_ms'], 0)} ms, "
                f"{s['notified']}/{s['deliveries']} notified"
            )
        if report.memory:
            lines.append(
                f"memory {report.name}: {report.memory.opened}/{report.memory.connections} in "
                f"IDLE, {report.memory.processes_before} -> {report.memory.processes_after} "
                f"server processes"
            )
        if report.error:
            lines.append(f"{report.name}: {report.error}")
    return "\n".join(lines)


def as_json(reports: dict[str, SystemReport], settings: dict[str, Any]) -> dict[str, Any]:
    ratios = {
        label.strip(): _ratio(a, b) for label, a, b in rows(reports) if not math.isnan(_ratio(a, b))
    }
    return {
        "settings": settings,
        "systems": {name: report.as_dict() for name, report in reports.items()},
        "ratios_mssante_over_dovecot": ratios,
    }


# -- main --------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    isync = subprocess.run(["mbsync", "--version"], capture_output=True, text=True, check=False)
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "dovecot": f"Dovecot {dovecot_version()}",
        "isync": isync.stdout.split()[-1] if isync.stdout else None,
        "commit": (commit.stdout.strip() + (" + uncommitted changes in src/" if dirty else ""))
        or None,
    }


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def raise_nofile() -> None:
    """The servers and clients inherit it: room for every connection."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def prepare(args: argparse.Namespace) -> str | None:
    """Install what is missing; the reason a run cannot happen, or None."""
    if shutil.which("mbsync") is None:
        install_debian_packages(["isync"])
        if shutil.which("mbsync") is None:
            return "mbsync (Debian package isync) is missing and could not be installed"
    if args.only != "mssante" and (reason := dovecot_missing()) is not None:
        return reason
    if args.connections + 300 > resource.getrlimit(resource.RLIMIT_NOFILE)[1]:
        return f"RLIMIT_NOFILE hard limit too low for {args.connections} connections"
    return None


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    unknown = {m.strip() for m in args.measures.split(",")} - {"sync", "idle", "latency"}
    if unknown:
        progress(f"--measures: unknown {', '.join(sorted(unknown))} (sync, idle, latency)")
        return 2
    if (reason := prepare(args)) is not None:
        progress(f"cannot run: {reason}")
        return 2
    raise_nofile()
    context = environment()  # before the run: the tree the servers start from
    if args.workdir is not None:
        if args.workdir.exists() and any(args.workdir.iterdir()):
            progress(f"--workdir {args.workdir} must be a new or empty folder")
            return 2
        args.workdir.mkdir(parents=True, exist_ok=True)
        workdir = args.workdir.resolve()
    else:
        workdir = Path(tempfile.mkdtemp(prefix="mssante-bench-imap-")).resolve()
    workdir.chmod(0o711)  # Dovecot's mail processes run as nobody
    args.workdir_now = str(workdir)
    reports: dict[str, SystemReport] = {}
    try:
        if args.only in ("mssante", "all"):
            mssante = MssanteServer(workdir / "mssante")
            reports["mssante"] = run_system(mssante, args)
        if args.only in ("dovecot", "all"):
            reports["dovecot"] = run_system(_dovecot(workdir), args)
    except KeyboardInterrupt:
        progress("interrupted: everything started was stopped")
        return 130
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    measures = [m.strip() for m in args.measures.split(",")]
    domain = MssanteServer(workdir).domain  # both servers hold the users at B's domain
    messages = args.messages if "sync" in measures else 0
    stats = stats_of(corpus(messages, f"{SYNC}@{domain}", seed=args.seed))
    settings = {
        "measures": measures,
        "messages": args.messages,
        "corpus_mib": stats.bytes / 2**20,
        "attachments": stats.attachments,
        "connections": args.connections,
        "idle_messages": args.idle_messages,
        "deliveries": args.deliveries,
        "poll_deliveries": args.poll_deliveries,
        "seed": args.seed,
        **context,
    }
    if args.json:
        print(json.dumps(as_json(reports, settings), indent=2))
    else:
        print(table(reports, settings))
    return 1 if any(r.error for r in reports.values()) else 0


def _dovecot(workdir: Path) -> DovecotServer:
    """Dovecot presents an operator certificate of a demo PKI (built the same way as the
    mssante run's, never started), so both servers do the same TLS work."""
    pki = MssanteServer(workdir / "dovecot-pki")
    try:
        pki.build({})
        cert, key = pki.certificate()
        return DovecotServer(workdir / "dovecot", cert, key, pki.endpoint(), pki.domain)
    finally:
        pki.stop()


if __name__ == "__main__":
    sys.exit(main())
