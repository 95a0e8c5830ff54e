"""Faults with real processes: the receiving operator is down for a while; the sending operator
is killed with SIGKILL while 500 messages are queued or in flight. Nothing answered 250 is lost,
and nothing arrives twice."""

from __future__ import annotations

import os
import signal
import smtplib
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mssante import demo
from mssante.config import load_settings
from mssante.ops.mailstore import MailStore
from mssante.runtime import open_node

Space = tuple[demo.DemoLayout, dict[str, Any]]


def _start(layout: demo.DemoLayout, info: dict[str, Any]) -> None:
    demo.start(layout, info, log_dir=layout.root / "logs")
    demo.wait_until_operators_hold_the_list(info, layout)


def _submit(op: dict[str, Any], account: dict[str, str], to: str, subjects: list[str]) -> None:
    """Submit over one authenticated connection, as a mail client would; each must get 250."""
    host, port = op["endpoints"]["submission"].split(":")
    ctx = ssl.create_default_context(
        cafile=str(load_settings(Path(op["config"])).pki.trust_anchors[0])
    )
    ctx.check_hostname = False
    with smtplib.SMTP(host, int(port), timeout=60) as smtp:
        smtp.starttls(context=ctx)
        smtp.login(account["address"], account["password"])
        for subject in subjects:
            body = (
                f"From: {account['address']}\r\nTo: {to}\r\nSubject: {subject}\r\n"
                f"Message-ID: <{subject}@test.mssante>\r\n\r\nCorps du message {subject}.\r\n"
            )
            smtp.sendmail(account["address"], [to], body.encode())


def _subjects_at(op: dict[str, Any], address: str) -> list[str]:
    node = open_node(load_settings(Path(op["config"])), migrate=False)
    try:
        return [
            m.subject for m in MailStore(node.db, node.blobs).list_messages(address, limit=10_000)
        ]
    finally:
        node.close()


def _wait_count(op: dict[str, Any], address: str, count: int, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    subjects: list[str] = []
    while time.monotonic() < deadline:
        subjects = _subjects_at(op, address)
        if len(subjects) >= count:
            return subjects
        time.sleep(0.5)
    raise AssertionError(f"{len(subjects)} of {count} messages arrived")


def test_messages_wait_while_the_receiver_is_down_and_arrive_when_it_is_back(
    trust_space: Space,
) -> None:
    layout, info = trust_space
    _start(layout, info)
    nord, sud = info["operators"]
    receiver = layout.process_of(sud["config"])
    os.killpg(receiver.pid, signal.SIGTERM)
    receiver.wait(timeout=20)

    subjects = [f"attente-{i}" for i in range(5)]
    _submit(nord, nord["accounts"][0], sud["accounts"][0]["address"], subjects)
    time.sleep(2)  # first attempts fail: the peer is down

    demo._spawn(layout, Path(sud["config"]), layout.root / "logs" / "cabinet-sud-restart.log")
    arrived = _wait_count(sud, sud["accounts"][0]["address"], 5, timeout=60)
    assert sorted(arrived) == subjects


def test_sigkill_of_the_sender_with_500_messages_loses_none_and_doubles_none(
    trust_space: Space,
) -> None:
    layout, info = trust_space
    _start(layout, info)
    nord, sud = info["operators"]
    to = sud["accounts"][0]["address"]
    subjects = [f"crash-{i:03d}" for i in range(500)]
    chunks = [subjects[i::5] for i in range(5)]
    with ThreadPoolExecutor(5) as pool:
        list(pool.map(lambda chunk: _submit(nord, nord["accounts"][0], to, chunk), chunks))

    sender = layout.process_of(nord["config"])
    os.killpg(sender.pid, signal.SIGKILL)  # every message above was answered 250
    sender.wait(timeout=10)
    before = len(_subjects_at(sud, to))

    demo._spawn(layout, Path(nord["config"]), layout.root / "logs" / "hopital-nord-restart.log")
    arrived = _wait_count(sud, to, 500, timeout=180)
    time.sleep(2)  # anything sent twice would show up now
    arrived = _subjects_at(sud, to)
    assert len(arrived) == 500, f"{len(arrived)} messages ({before} had arrived before the kill)"
    assert sorted(arrived) == sorted(subjects)
