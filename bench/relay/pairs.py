"""What the benchmark drives: a *pair* of operators, A (submission, relay) and B (storage).

A pair is anything with the :class:`RelayPair` shape. The benchmark only:

1. calls ``start(mailboxes)`` once, naming every mailbox at B it will use (one per run);
2. submits messages to ``injection()`` (SMTP, optionally TLS and AUTH) for ``recipient(box)``;
3. calls ``probe(box).poll()`` often: each call returns the messages newly stored *durably* at
   B, as ``Stored(bench_id, stored_at)`` with ``stored_at`` on the wall clock (``time.time()``);
4. calls ``wait_idle()`` between runs and ``stop()`` at the end (also after a failure).

Every message carries ``X-Bench-Id: <run>/<n>`` (also in its ``Message-ID``,
``<n.<run>@bench.invalid>``) so that B's side can tell which message was stored.
:class:`PostfixPair` is one implementation; ``mssante_pair.MssantePair`` is the other.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mssante.pki.ca import TestPki
from peers.postfix import PostfixInstance, Route

DOMAIN_A, HOST_A = "a.mssante.test", "mta.a.mssante.test"
DOMAIN_B, HOST_B = "b.mssante.test", "mta.b.mssante.test"
BENCH_ID = re.compile(rb"^X-Bench-Id:\s*(\S+)\s*$", re.MULTILINE | re.IGNORECASE)


@dataclass(frozen=True)
class Injection:
    """Where and how the benchmark submits messages to operator A."""

    host: str
    port: int
    sender: str
    tls: str = "none"  # "none", "starttls" or "implicit"
    cafile: str | None = None  # to verify A's certificate when tls is not "none"
    server_name: str | None = None  # the name A's certificate must carry (None: not checked)
    username: str | None = None  # AUTH, when set
    password: str | None = None


@dataclass(frozen=True)
class Stored:
    """One message found stored at B: its bench id and when (wall clock, seconds)."""

    bench_id: str
    stored_at: float


class StoreProbe(Protocol):
    def poll(self) -> list[Stored]:
        """The messages stored at B since the previous call (each reported once)."""
        ...


class RelayPair(Protocol):
    name: str  # short, for the table: "postfix", "postfix+reuse", "mssante"

    def describe(self) -> str: ...

    def start(self, mailboxes: Sequence[str]) -> None: ...

    def injection(self) -> Injection: ...

    def recipient(self, mailbox: str) -> str: ...

    def probe(self, mailbox: str) -> StoreProbe: ...

    def wait_idle(self, timeout: float) -> None: ...

    def logs(self) -> str:
        """Where to look when something stalls (paths, or the end of the logs)."""
        ...

    def stop(self) -> None: ...


# -- shared material ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchPki:
    """A test PKI with one operator certificate for A and one for B."""

    bundle: Path
    a_cert: Path
    a_key: Path
    b_cert: Path
    b_key: Path

    @classmethod
    def create(cls, folder: Path) -> BenchPki:
        pki = TestPki.init(folder)
        a = pki.issue_server(HOST_A, "341459958900028", "OPERATEUR A", "33")
        b = pki.issue_server(HOST_B, "2123456782", "OPERATEUR B", "75")
        return cls(pki.paths().bundle, a.fullchain, a.key, b.fullchain, b.key)


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


# -- Postfix -----------------------------------------------------------------------------------


class MaildirProbe:
    """Watches a Maildir's ``new/``; a message's storage time is its file's ctime.

    virtual(8) writes to ``tmp/``, fsyncs, links into ``new/`` and unlinks the ``tmp/`` name: the
    inode's ctime is the moment the message became durably visible, whatever the poll interval.
    Seen files are moved to ``cur/`` (as a mail client would), which keeps each scan short.
    """

    def __init__(self, maildir: Path, run: str) -> None:
        self.maildir = maildir
        self.run = run

    def poll(self) -> list[Stored]:
        new = self.maildir / "new"
        if not new.is_dir():
            return []
        found = []
        with os.scandir(new) as entries:
            for entry in entries:
                stored = self._take(Path(entry.path))
                if stored is not None:
                    found.append(stored)
        return found

    def _take(self, path: Path) -> Stored | None:
        try:
            ctime = path.stat().st_ctime_ns / 1e9
            with path.open("rb") as f:
                head = f.read(16384)
            path.rename(self.maildir / "cur" / f"{path.name}:2,S")
        except FileNotFoundError:
            return None
        match = BENCH_ID.search(head.split(b"\n\n", 1)[0].replace(b"\r\n", b"\n"))
        if match is None or not match.group(1).decode().startswith(self.run + "/"):
            return None
        return Stored(match.group(1).decode(), ctime)


@dataclass
class PostfixPair:
    """Two real Postfix instances: A relays to B over mutual TLS, B delivers to Maildirs."""

    workdir: Path
    pki: BenchPki
    connection_reuse: bool = False
    name: str = "postfix"
    a: PostfixInstance | None = field(default=None, init=False)
    b: PostfixInstance | None = field(default=None, init=False)
    _run_of: dict[str, str] = field(default_factory=dict, init=False)

    def describe(self) -> str:
        reuse = "yes" if self.connection_reuse else "no"
        return f"Postfix pair, smtp_tls_connection_reuse={reuse}, otherwise default settings"

    def start(self, mailboxes: Sequence[str]) -> None:
        a_port, a_inject, b_port = free_ports(3)
        self.b = PostfixInstance(
            self.workdir / "b",
            hostname=HOST_B,
            domain=DOMAIN_B,
            listen_port=b_port,
            cert=self.pki.b_cert,
            key=self.pki.b_key,
            ca_bundle=self.pki.bundle,
            routes={DOMAIN_A: Route("127.0.0.1", a_port, HOST_A)},
            users=mailboxes,
        )
        self.a = PostfixInstance(
            self.workdir / "a",
            hostname=HOST_A,
            domain=DOMAIN_A,
            listen_port=a_port,
            inject_port=a_inject,
            cert=self.pki.a_cert,
            key=self.pki.a_key,
            ca_bundle=self.pki.bundle,
            routes={DOMAIN_B: Route("127.0.0.1", b_port, HOST_B)},
            connection_reuse=self.connection_reuse,
        )
        self.b.start()
        self.a.start()

    def injection(self) -> Injection:
        assert self.a is not None and self.a.inject_port is not None
        return Injection("127.0.0.1", self.a.inject_port, f"bench@{DOMAIN_A}")

    def recipient(self, mailbox: str) -> str:
        return f"{mailbox}@{DOMAIN_B}"

    def probe(self, mailbox: str) -> MaildirProbe:
        assert self.b is not None
        return MaildirProbe(self.b.maildir(mailbox), run=mailbox)

    def wait_idle(self, timeout: float) -> None:
        for instance in (self.a, self.b):
            if instance is not None:
                instance.wait_queue_empty(timeout)

    def logs(self) -> str:
        return ", ".join(str(i.layout.log) for i in (self.a, self.b) if i is not None)

    def stop(self) -> None:
        for instance in (self.a, self.b):
            if instance is not None:
                instance.stop()
