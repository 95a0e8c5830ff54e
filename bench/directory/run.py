"""Directory benchmark: import an extraction of N lines, then type-ahead over HTTPS, against the
naive peer (``grep -i`` over the same file). See bench/directory/README.md.

    .venv/bin/python bench/directory/run.py                        # 1.5 M lines, SQLite
    .venv/bin/python bench/directory/run.py --database postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/directory/run.py --lines 100000 --queries 200 --json

Everything listens on 127.0.0.1 only; the authority it starts is stopped at the end, also on a
failure or Ctrl-C; its folder is removed unless ``--workdir`` names one to keep.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(HERE), str(REPO / "src")]

import httpx  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402
from queries import make_queries, sample_rows  # noqa: E402

from mssante.directory.synth import write_synthetic  # noqa: E402

PYTHON = sys.executable


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/directory/run.py", description=__doc__)
    parser.add_argument("--lines", type=int, default=1_500_000, help="extraction lines (1.5 M)")
    parser.add_argument("--queries", type=int, default=1000, help="type-ahead queries (1000)")
    parser.add_argument("--grep-queries", type=int, default=100, help="of them, run with grep too")
    parser.add_argument("--seed", type=int, default=42, help="synthesis and query seed")
    parser.add_argument("--database", default="", help="PostgreSQL URL (default: SQLite)")
    parser.add_argument("--workdir", type=Path, help="keep files here (default: temporary)")
    parser.add_argument("--file", type=Path, help="an existing extraction instead of synthesis")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser.parse_args(argv)


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- setting up --------------------------------------------------------------------------------


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost (TLS and the whitelist signer alike)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench authority")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress  # noqa: PLC0415

    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(workdir: Path, database: str, schema: str, port: int) -> Path:
    cert, key = self_signed(workdir)
    config = workdir / "authority.toml"
    db_lines = f'url = "{database}"\nschema_name = "{schema}"\n' if database else ""
    config.write_text(
        f'role = "authority"\ndata_dir = "{workdir / "data"}"\n'
        f"[database]\n{db_lines}"
        f'[tls]\ncertificate = "{cert}"\nkey = "{key}"\n'
        f'[authority]\nlisten_port = {port}\nsigning_certificate = "{cert}"\n'
        f'signing_key = "{key}"\n[log]\nlevel = "WARNING"\n'
    )
    return config


# -- measuring ---------------------------------------------------------------------------------


def synthesize(path: Path, lines: int, seed: int) -> float:
    started = time.monotonic()
    write_synthetic(path, lines, seed)
    return time.monotonic() - started


def timed_child(command: list[str]) -> tuple[float, int, float, str]:
    """Run ``command``; its wall time, peak RSS (KiB, from wait4) and CPU seconds, stdout."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        out.seek(0)
        text = out.read().decode()
    if child.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed ({child.returncode}): {text[-500:]}")
    return wall, usage.ru_maxrss, usage.ru_utime + usage.ru_stime, text


def import_file(config: Path, path: Path) -> dict[str, Any]:
    command = [PYTHON, "-m", "mssante", "directory", "import", str(path), "--config", str(config), "--json"]  # fmt: skip
    wall, rss_kib, cpu, out = timed_child(command)
    summary = json.loads(out)
    lines = summary["lines"]
    return {
        "seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "lines_per_second": round(lines / wall),
        "peak_rss_mib": round(rss_kib / 1024),
        "added": summary["added"],
        "updated": summary["updated"],
        "removed": summary["removed"],
        "bad_lines": summary["bad_lines"],
    }


@contextmanager
def authority(config: Path, port: int, log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        child = subprocess.Popen(
            [PYTHON, "-m", "mssante", "authority", "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the authority did not start; see {log}") from None
                time.sleep(0.1)
        yield
    finally:
        os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def type_ahead(port: int, cafile: Path, queries: list[str]) -> tuple[list[float], list[int]]:
    """Each query over one kept-alive HTTPS connection, one after the other: (ms, results)."""
    url = f"https://127.0.0.1:{port}/directory/search"
    times, counts = [], []
    with httpx.Client(verify=str(cafile), timeout=30) as client:
        for q in queries[:50]:  # warm-up: connection, caches
            client.get(url, params={"q": q})
        for q in queries:
            started = time.perf_counter()
            response = client.get(url, params={"q": q, "limit": "10"})
            times.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            counts.append(len(response.json()["results"]))
    return times, counts


def in_process(database: str, schema: str, data_dir: Path, queries: list[str]) -> list[float]:
    """The same queries called in this process (no HTTP, no TLS): the search's own cost."""
    from mssante.config import DirectorySettings  # noqa: PLC0415
    from mssante.directory.search import DirectorySearch  # noqa: PLC0415
    from mssante.store.db import open_database  # noqa: PLC0415

    url = database or f"sqlite:///{data_dir / 'mssante.db'}"
    db = open_database(url, schema=schema, migrate=False)
    search = DirectorySearch(db, DirectorySettings())
    for q in queries[:50]:
        search.search(q, 10)
    times = []
    for q in queries:
        started = time.perf_counter()
        search.search(q, 10)
        times.append((time.perf_counter() - started) * 1000)
    db.dispose()
    return times


def grep_peer(path: Path, queries: list[str]) -> list[float]:
    """The naive peer: ``grep -i -F`` for each word in turn over the file, first 10 lines."""
    times = []
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    for q in queries:
        words = q.split()
        pipeline = " | ".join(
            [f"grep -i -F -- {shlex.quote(words[0])} {shlex.quote(str(path))}"]
            + [f"grep -i -F -- {shlex.quote(w)}" for w in words[1:]]
            + ["head -n 10"]
        )
        started = time.perf_counter()
        subprocess.run(["bash", "-c", pipeline], stdout=subprocess.DEVNULL, env=env, check=False)
        times.append((time.perf_counter() - started) * 1000)
    return times


def percentiles(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p * len(ordered)) - 1))]

    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(rank(0.95), 2),
        "p99_ms": round(rank(0.99), 2),
        "max_ms": round(ordered[-1], 2),
    }


# -- the run -----------------------------------------------------------------------------------


@contextmanager
def postgres_schema(database: str) -> Iterator[str]:
    if not database:
        yield ""
        return
    from mssante.store.db import Database  # noqa: PLC0415

    schema = f"bench_dir_{uuid.uuid4().hex[:8]}"
    try:
        yield schema
    finally:
        admin = Database(database)
        with admin.engine.begin() as conn:
            from sqlalchemy import text  # noqa: PLC0415

            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {"environment": environment(args)}
    source = args.file or workdir / "Extraction_Correspondance_MSSante_bench.txt"
    if args.file is None:
        progress(f"== synthesising {args.lines} lines")
        figures["synth_seconds"] = round(synthesize(source, args.lines, args.seed), 1)
    figures["file_mib"] = round(source.stat().st_size / 2**20)
    port = free_port()
    with postgres_schema(args.database) as schema:
        config = write_config(workdir, args.database, schema, port)
        progress("== importing")
        figures["import"] = import_file(config, source)
        progress(f"   {figures['import']}")
        progress("== re-importing the same file (nothing changes)")
        figures["reimport"] = import_file(config, source)
        progress(f"   {figures['reimport']}")
        queries = make_queries(sample_rows(source, 5000, args.seed), args.queries, args.seed)
        with authority(config, port, workdir / "authority.log"):
            progress(f"== {len(queries)} type-ahead queries over HTTPS")
            times, counts = type_ahead(port, workdir / "cert.pem", queries)
        progress("== the same queries in process (no HTTP)")
        local = in_process(args.database, schema, workdir / "data", queries)
    figures["type_ahead"] = {**percentiles(times), "queries": len(times), "empty": counts.count(0)}
    figures["in_process"] = percentiles(local)
    progress(f"== grep -i over the file, {args.grep_queries} of the queries")
    grep_times = grep_peer(source, queries[: args.grep_queries])
    figures["grep"] = {**percentiles(grep_times), "queries": len(grep_times)}
    same = percentiles(times[: args.grep_queries])
    figures["ratio_grep_over_mssante"] = {
        "p50": round(figures["grep"]["p50_ms"] / same["p50_ms"], 1),
        "p95": round(figures["grep"]["p95_ms"] / same["p95_ms"], 1),
    }
    return figures


def environment(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "database": "postgresql" if args.database else "sqlite",
        "lines": args.lines if args.file is None else str(args.file),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def table(figures: dict[str, Any]) -> str:
    imp, again, ta, grep = (
        figures["import"], figures["reimport"], figures["type_ahead"], figures["grep"],
    )  # fmt: skip
    ratio = figures["ratio_grep_over_mssante"]
    return "\n".join(
        [
            f"environment: {figures['environment']}",
            f"synthesis: {figures.get('synth_seconds', '-')} s, file {figures['file_mib']} MiB",
            f"import:    {imp['seconds']} s ({imp['cpu_seconds']} s CPU), "
            f"{imp['lines_per_second']} lines/s, peak RSS {imp['peak_rss_mib']} MiB, "
            f"{imp['added']} added, {imp['bad_lines']} bad",
            f"re-import: {again['seconds']} s ({again['cpu_seconds']} s CPU), peak RSS "
            f"{again['peak_rss_mib']} MiB, {again['added']} added / {again['updated']} updated",
            f"type-ahead over HTTPS ({ta['queries']} queries, {ta['empty']} empty): "
            f"p50 {ta['p50_ms']} ms, p95 {ta['p95_ms']} ms, p99 {ta['p99_ms']} ms, max {ta['max_ms']} ms",
            f"the same in process: p50 {figures['in_process']['p50_ms']} ms, "
            f"p95 {figures['in_process']['p95_ms']} ms, p99 {figures['in_process']['p99_ms']} ms",
            f"grep -i ({grep['queries']} queries): p50 {grep['p50_ms']} ms, "
            f"p95 {grep['p95_ms']} ms, max {grep['max_ms']} ms",
            f"ratio grep / mssante on the same queries: p50 {ratio['p50']}x, p95 {ratio['p95']}x",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        figures = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="mssante-bench-directory-") as folder:
            figures = run(args, Path(folder))
    print(json.dumps(figures, indent=2) if args.json else table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
