"""A real mail client as a person uses it: neomutt, in a detached tmux session, opens INBOX over
implicit TLS, lists the messages, opens the first one and quits.

neomutt (GnuTLS) trusts the server through ``ssl_ca_certificates_file`` (the test PKI's CA
bundle) and checks the host name (``ssl_verify_host``), so operator B runs here with a
certificate for ``localhost`` from the same PKI; ``certificate_file`` is an empty file of our
own, so nothing else is trusted and an untrusted server would show a prompt, not the index.
Keys go in with ``tmux send-keys``; the screen is read with ``tmux capture-pane -p``."""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from imap_fixtures import (
    MARTIN,
    PASSWORD,
    Operator,
    Trust,
    localhost_trust,
    message,
    require_binary,
    running_operator,
)

BODY_LINE = "Tension 12/8, a revoir dans un mois."


def _muttrc(op: Operator, trust: Trust, home: Path) -> Path:
    (home / "certificates").write_text("")
    rc = home / "muttrc"
    rc.write_text(
        f"""set folder = "imaps://localhost:{op.imaps_port}/"
set spoolfile = "+INBOX"
set imap_user = "{MARTIN}"
set imap_pass = "{PASSWORD}"
set ssl_ca_certificates_file = "{trust.ca}"
set certificate_file = "{home}/certificates"
set ssl_verify_host = yes
set ssl_force_tls = yes
set header_cache = ""
set message_cachedir = ""
set record = ""
set mail_check = 60
set sort = date
set mark_old = no
set quit = yes
set wait_key = no
set pager_index_lines = 0
set charset = "utf-8"
"""
    )
    return rc


class Tmux:
    """A tmux server of our own (its own socket) with one session running ``command`` in a
    shell that writes the command's exit status to a file when it ends. Neither tmux's record
    of it (tmux/tmux#311: a SIGCHLD lost to libutempter leaves the program a zombie) nor the
    pane's last lines (tmux 3.3 may mark the pane dead before it reads them) are reliable."""

    def __init__(self, tmux: str, home: Path, command: list[str]) -> None:
        self.tmux = tmux
        self.socket = f"mssante-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        conf = home / "tmux.conf"
        conf.write_text("set -g remain-on-exit on\n")  # the pane stays, for the error message
        self.status = home / "exit-status"
        env = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8"}
        env["TERM"] = "xterm-256color"
        done, partial = shlex.quote(str(self.status)), shlex.quote(f"{self.status}.new")
        shell = f'"$@"; echo $? > {partial} && mv {partial} {done}'
        self._run(
            "-f", str(conf), "new-session", "-d", "-s", "mail", "-x", "150", "-y", "40",
            "sh", "-c", shell, "sh", *command, env=env,
        )  # fmt: skip

    def _run(self, *args: str, env: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            [self.tmux, "-L", self.socket, *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
            env=env,
        )
        return result.stdout

    def keys(self, *keys: str) -> None:
        self._run("send-keys", "-t", "mail", *keys)

    def screen(self) -> str:
        return self._run("capture-pane", "-p", "-t", "mail")

    def exit_status(self) -> int | None:
        """None while the program runs."""
        return int(self.status.read_text()) if self.status.exists() else None

    def wait(self, what: str, ready: Callable[[], object], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout} s; the screen:\n{self.screen()}")
            time.sleep(0.05)

    def wait_text(self, *texts: str, timeout: float = 10) -> str:
        what = " and ".join(map(repr, texts))
        self.wait(what, lambda: all(t in self.screen() for t in texts), timeout)
        return self.screen()

    def kill(self) -> None:
        subprocess.run([self.tmux, "-L", self.socket, "kill-server"], check=False, timeout=10)


def _read_first_message(neomutt: str, tmux: str, rc: Path, home: Path) -> dict[str, str | int]:
    session = Tmux(tmux, home, [neomutt, "-n", "-F", str(rc)])
    try:
        index = session.wait_text("Compte rendu", "Résultats")  # INBOX is open, both listed
        session.keys("Enter")  # the first message (sort = date: the older one)
        pager = session.wait_text(BODY_LINE)
        session.keys("q")  # back to the index
        session.wait_text("Résultats")
        session.keys("q")  # quit (quit = yes: no question), the mailbox synced first
        session.wait("neomutt to exit", lambda: session.exit_status() is not None)
        status = session.exit_status()
        assert status is not None
        return {"index": index, "pager": pager, "status": status}
    finally:
        session.kill()


async def test_neomutt_opens_inbox_and_reads_a_message(
    trust: Trust, tmp_path: Path, b_database: dict[str, str]
) -> None:
    neomutt = require_binary("neomutt", "neomutt")
    tmux = require_binary("tmux", "tmux")
    local_trust = localhost_trust(trust)
    async with running_operator(local_trust, tmp_path / "b", b_database) as op:
        first = message("Compte rendu", f"Bonjour,\r\n{BODY_LINE}\r\n")
        second = message("Résultats", Date="Thu, 26 Nov 2026 09:00:00 +0100")
        for raw in (first, second):
            await asyncio.to_thread(op.deliver, raw)
        home = tmp_path / "home"
        home.mkdir()
        rc = _muttrc(op, local_trust, home)

        seen = await asyncio.to_thread(_read_first_message, neomutt, tmux, rc, home)

        stored = {m.subject: m.flags for m in op.rt.store.list_messages(MARTIN)}
    assert "+INBOX [Msgs:2 New:2" in str(seen["index"])  # the status line of the index
    assert "Subject: Compte rendu" in str(seen["pager"])
    assert "From: Dr Paul Durand <dr.durand@b.mssante.test>" in str(seen["pager"])
    assert seen["status"] == 0
    # neomutt fetched with BODY.PEEK and marked the message read on quit (STORE +FLAGS \Seen)
    assert stored == {"Compte rendu": ("\\Seen",), "Résultats": ()}
