"""`mssante demo` as a new user runs it: it comes up, writes demo.json, and Ctrl-C stops it all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support import free_port_block, run_mssante


def test_demo_comes_up_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mssante",
            "demo",
            "--dir",
            str(state),
            "--base-port",
            str(free_port_block()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not (state / "demo.json").exists():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "demo did not come up"
            time.sleep(0.2)
        info = json.loads((state / "demo.json").read_text())
        assert [op["domain"] for op in info["operators"]] == [
            "hopital-nord.mssante.test",
            "cabinet-sud.mssante.test",
        ]
        nord, sud = info["operators"]
        check = run_mssante(
            "trust",
            "check",
            sud["domain"],
            "--dn",
            sud["certificate_dn"],
            "--config",
            nord["config"],
        )
        assert check.returncode == 0, check.stdout + check.stderr
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does in a terminal
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out
    assert "Arrêté. / Stopped." in out
    assert "demo.json" in out


def test_demo_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    result = run_mssante("demo", "--dir", str(tmp_path), "--exit-when-ready")
    assert result.returncode == 1
    assert "is not empty" in result.stderr
