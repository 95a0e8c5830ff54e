"""The two IMAP servers under test, each loaded with the same users and messages.

Both have the same shape (:class:`ImapServer`): ``build(users)`` writes the configuration and
creates the users, ``load(address, messages)`` stores messages before the server starts,
``start()``, ``endpoint()`` (implicit TLS, like port 993), ``server_pids()`` (the processes whose
memory counts), ``deliverer(kind)`` (how a new message reaches a mailbox while the server runs),
``logs()`` and ``stop()`` (also after a failure; safe to call twice).

- :class:`MssanteServer`: ``mssante demo``'s trust space (test PKI, authority publishing the
  whitelist, operators ``hopital-nord`` (A) and ``cabinet-sud`` (B), each a ``mssante serve``
  process on SQLite); the IMAP server under test is B's. Messages are loaded through the store
  code SMTP delivery runs (``MailStore.deliver_in`` plus the ``smtp.message_accepted`` audit
  entry, many messages per transaction like the group commit), from this process, before B
  starts.
- :class:`DovecotServer`: Debian's Dovecot with its own configuration file, ``base_dir``,
  ``state_dir`` and log under the work folder, a passwd-file of the same users, Maildirs
  written here directly (files named as Dovecot's LDA names them, with ``S=`` and ``W=``
  sizes) and indexed with ``doveadm`` once it runs. It presents B's certificate and key, so
  that both servers do the same TLS work.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiosmtplib

DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"
DOVECOT_LDA = "/usr/lib/dovecot/dovecot-lda"
MAIL_USER, MAIL_GROUP = "nobody", "nogroup"  # Dovecot's mail processes run as this user
INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
BATCH = 250  # messages per transaction when loading mssante


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    server_name: str  # the name in the server certificate
    cafile: Path  # the PKI bundle that verifies it
    leaf: Path  # the server certificate alone (isync trusts a certificate listed as it is)


@dataclass(frozen=True)
class LoadStats:
    messages: int
    bytes: int
    seconds: float


class Deliverer(Protocol):
    """Delivers one message to a mailbox; ``deliver`` returns when the server has it stored."""

    description: str

    async def open(self) -> None: ...

    async def deliver(self, raw: bytes, address: str) -> None: ...

    async def close(self) -> None: ...


class ImapServer(Protocol):
    name: str

    @property
    def domain(self) -> str: ...

    def describe(self) -> str: ...

    def build(self, users: dict[str, str]) -> None: ...

    def load(self, address: str, messages: Iterable[bytes]) -> LoadStats: ...

    def start(self, connections: int) -> None: ...

    def endpoint(self) -> Endpoint: ...

    def server_pids(self) -> list[int]: ...

    def deliverers(self) -> list[Deliverer]: ...

    def logs(self) -> str: ...

    def stop(self) -> None: ...


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_block(size: int) -> int:
    """A base port whose next ``size`` ports are free on 127.0.0.1 right now."""
    for _ in range(50):
        base = free_port()
        if base + size >= 65000:
            continue
        if all(_port_free(base + i) for i in range(size)):
            return base
    raise RuntimeError("no free block of ports on 127.0.0.1")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for_port(port: int, timeout: float, alive: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if alive is not None and not alive():
            raise RuntimeError(f"the server stopped before listening on port {port}")
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def _client_context(
    cafile: Path, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.check_hostname = False  # 127.0.0.1; the chain is still verified against the PKI
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


# -- mssante -----------------------------------------------------------------------------------


@dataclass
class MssanteServer:
    workdir: Path
    name: str = "mssante"
    layout: Any = field(default=None, init=False)
    info: dict[str, Any] = field(default_factory=dict, init=False)
    _node: Any = field(default=None, init=False)

    @property
    def domain(self) -> str:
        return str(self._operator(1)["domain"])

    def describe(self) -> str:
        return "mssante serve (operator cabinet-sud of mssante demo's trust space), SQLite"

    def _operator(self, index: int) -> dict[str, Any]:
        if not self.info:
            from mssante import demo  # noqa: PLC0415

            return {"domain": demo.OPERATORS[index].domain}
        return self.info["operators"][index]  # type: ignore[no-any-return]

    def _settings(self, index: int) -> Any:
        from mssante.config import load_settings  # noqa: PLC0415

        return load_settings(Path(self._operator(index)["config"]))

    def build(self, users: dict[str, str]) -> None:
        from mssante import demo  # noqa: PLC0415
        from mssante.audit.events import Actor  # noqa: PLC0415
        from mssante.ops.accounts import Accounts, NewPerson  # noqa: PLC0415
        from mssante.pki.ids import luhn_key  # noqa: PLC0415

        self.layout = demo.DemoLayout(root=self.workdir, base_port=free_port_block(40))
        self.info = demo.build(self.layout)
        accounts = Accounts(self.node().db)
        for i, (address, password) in enumerate(users.items()):
            rpps = f"{1000400000 + i}"
            accounts.create_person(
                NewPerson(
                    address,
                    password,
                    "8" + rpps + luhn_key(rpps),
                    "Banc",
                    address.split("@")[0],
                    profession_code="10",
                    profession_label="Médecin",
                ),
                Actor("bench", {"via": "bench/imap"}),
            )

    def node(self) -> Any:
        """Operator B's node (database, blobs, audit), opened in this process."""
        if self._node is None:
            from mssante.runtime import open_node  # noqa: PLC0415

            self._node = open_node(self._settings(1), migrate=False)
        return self._node

    def load(self, address: str, messages: Iterable[bytes]) -> LoadStats:
        """As inbound SMTP stores a message (``InboundHandler._store``): the blob (fsynced),
        then the entry and the ``smtp.message_accepted`` audit record in one transaction;
        ``BATCH`` messages share a transaction, as the group commit lets them."""
        from corpus import PEER_DN  # noqa: PLC0415

        from mssante.audit.events import AuditEvent, AuditRecord  # noqa: PLC0415
        from mssante.audit.log import append  # noqa: PLC0415
        from mssante.ops.mailstore import Headers, MailStore  # noqa: PLC0415

        node = self.node()
        store = MailStore(node.db, node.blobs)
        started = time.monotonic()
        count = size = 0
        batch: list[bytes] = []

        def flush() -> None:
            digests = [node.blobs.put(raw) for raw in batch]
            with node.db.session() as session:
                for raw, digest in zip(batch, digests, strict=True):
                    headers = Headers.parse(raw)
                    store.deliver_in(session, digest, len(raw), headers, [address])
                    record = AuditRecord(
                        AuditEvent.SMTP_MESSAGE_ACCEPTED,
                        actor=PEER_DN,
                        target=address,
                        context={
                            "queue_id": secrets.token_hex(8).upper(),
                            "from": "bench@hopital-nord.mssante.test",
                            "message_id": headers.message_id,
                            "peer": "127.0.0.1",
                            "size": len(raw),
                            "duplicates": [],
                        },
                    )
                    append(session, record)
            batch.clear()

        for raw in messages:
            batch.append(raw)
            count += 1
            size += len(raw)
            if len(batch) >= BATCH:
                flush()
        if batch:
            flush()
        return LoadStats(count, size, time.monotonic() - started)

    def start(self, connections: int) -> None:
        from mssante import demo  # noqa: PLC0415

        demo.start(self.layout, self.info, log_dir=self.workdir / "logs")
        demo.wait_until_operators_hold_the_list(self.info, self.layout)
        wait_for_port(self.endpoint().port, 60, alive=lambda: bool(self.server_pids()))

    def endpoint(self) -> Endpoint:
        op = self._operator(1)
        port = int(op["endpoints"]["imaps"].rsplit(":", 1)[1])
        return Endpoint(
            "127.0.0.1",
            port,
            f"smtp.{op['domain']}",
            Path(self.info["pki"]["dir"]) / "ca" / "bundle.pem",
            Path(op["certificate"]),
        )

    def certificate(self) -> tuple[Path, Path]:
        """B's certificate (full chain) and key: Dovecot presents the same."""
        tls = self._settings(1).tls
        return Path(tls.certificate), Path(tls.key)

    def server_pids(self) -> list[int]:
        """The ``mssante serve`` process of operator B (one process: threads included)."""
        if self.layout is None:
            return []
        config = self._operator(1)["config"]
        return [
            p.pid
            for p in self.layout.processes
            if p.poll() is None and config in " ".join(map(str, p.args))
        ]

    def deliverers(self) -> list[Deliverer]:
        a = self._settings(0)
        b = self._operator(1)
        smtp_port = int(b["endpoints"]["smtp"].rsplit(":", 1)[1])
        return [
            SmtpDeliverer(
                smtp_port,
                sender=f"bench@{self._operator(0)['domain']}",
                helo=a.smtp.hostname,
                cafile=self.endpoint().cafile,
                cert=Path(a.tls.certificate),
                key=Path(a.tls.key),
            ),
            StoreDeliverer(self),
        ]

    def logs(self) -> str:
        return str(self.workdir / "logs")

    def stop(self) -> None:
        if self._node is not None:
            self._node.close()
            self._node = None
        if self.layout is not None:
            from mssante import demo  # noqa: PLC0415

            demo.stop(self.layout)


class SmtpDeliverer:
    """Operator A relaying to B: mutual TLS with A's certificate (on the whitelist) to B's
    inbound port, one connection kept open; ``deliver`` returns at B's 250 (stored, committed).
    B's own SMTP listener stores the message, so its IDLE sessions are woken in-process."""

    description = "SMTP inbound (mutual TLS, A's certificate) into the operator's process"

    def __init__(
        self, port: int, *, sender: str, helo: str, cafile: Path, cert: Path, key: Path
    ) -> None:
        self.port = port
        self.sender = sender
        self.helo = helo
        self.tls = _client_context(cafile, cert, key)
        self.client: aiosmtplib.SMTP | None = None

    async def open(self) -> None:
        self.client = aiosmtplib.SMTP(
            hostname="127.0.0.1",
            port=self.port,
            local_hostname=self.helo,
            start_tls=False,
            timeout=30,
        )
        await self.client.connect()
        await self.client.starttls(tls_context=self.tls)

    async def deliver(self, raw: bytes, address: str) -> None:
        assert self.client is not None
        await self.client.mail(self.sender)
        await self.client.rcpt(address)
        code, text = await self.client.data(raw)
        if code != 250:
            raise RuntimeError(f"SMTP delivery refused: {code} {text}")

    async def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await self.client.quit()
            self.client = None


class StoreDeliverer:
    """``MailStore.deliver`` called from this (another) process: the operator's IDLE sessions
    see it through their poll of the database (``imap.poll_interval``)."""

    description = "store API from another process (seen by the IDLE poll)"

    def __init__(self, server: MssanteServer) -> None:
        self.server = server

    async def open(self) -> None:
        return None

    async def deliver(self, raw: bytes, address: str) -> None:
        from mssante.ops.mailstore import MailStore  # noqa: PLC0415

        node = self.server.node()
        await asyncio.to_thread(MailStore(node.db, node.blobs).deliver, raw, [address])

    async def close(self) -> None:
        return None


# -- Dovecot -----------------------------------------------------------------------------------


def dovecot_missing() -> str | None:
    """Why Dovecot cannot run here (None: it can), after installing it if needed."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return "Dovecot needs Linux and root (its master runs as root, mail as nobody)"
    if not Path(DOVECOT).exists() or not Path(DOVECOT_LDA).exists():
        install_debian_packages(["dovecot-imapd"])
    if not Path(DOVECOT).exists():
        return "dovecot-imapd could not be installed (apt-get install dovecot-imapd)"
    return None


def install_debian_packages(packages: list[str]) -> None:
    """apt-get install, without letting the package start the system's own instance."""
    print(f"installing {' '.join(packages)} with apt-get", file=sys.stderr, flush=True)
    policy = Path("/usr/sbin/policy-rc.d")
    created = False
    if not policy.exists():  # invoke-rc.d asks it; 101 = do not start services
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        created = True
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=False, env=env, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
            check=False,
            env=env,
            capture_output=True,
        )
    finally:
        if created:
            policy.unlink(missing_ok=True)


def dovecot_version() -> str | None:
    if not Path(DOVECOT).exists():
        return None
    out = subprocess.run([DOVECOT, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or None


@dataclass
class DovecotServer:
    workdir: Path
    cert: Path
    key: Path
    ca: Endpoint  # server name, PKI bundle and leaf of the shared certificate (port unused)
    domain: str
    name: str = "dovecot"
    port: int = 0
    users: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _inotify_before: int | None = field(default=None, init=False)
    _seen: set[int] = field(default_factory=set, init=False)

    def describe(self) -> str:
        return (
            f"Dovecot {dovecot_version()} (Debian defaults; own dovecot.conf, base_dir and "
            "state_dir; Maildir; passwd-file)"
        )

    @property
    def conf(self) -> Path:
        return self.workdir / "dovecot.conf"

    def home(self, address: str) -> Path:
        local, domain = address.split("@")
        return self.workdir / "home" / domain / local

    def build(self, users: dict[str, str]) -> None:
        self.users = dict(users)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o711)
        self.port = free_port()
        lines = [f"{address}:{{PLAIN}}{password}::::::" for address, password in users.items()]
        passwd = self.workdir / "users"
        passwd.write_text("\n".join(lines) + "\n")
        passwd.chmod(0o600)
        internal = pwd.getpwnam("dovecot")  # the auth process reads it as Dovecot's own user
        os.chown(passwd, internal.pw_uid, internal.pw_gid)
        for address in users:
            for sub in ("cur", "new", "tmp"):
                (self.home(address) / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("run", "state"):
            (self.workdir / sub).mkdir(exist_ok=True)

    def write_config(self, connections: int) -> None:
        limit = connections + 200
        dh = "/usr/share/dovecot/dh.pem"
        self.conf.write_text(
            f"""# Written by bench/imap/systems.py: a private instance, not the system's.
instance_name = mssante-bench-imap
base_dir = {self.workdir / "run"}
state_dir = {self.workdir / "state"}
log_path = {self.workdir / "dovecot.log"}
listen = 127.0.0.1
protocols = imap
ssl = required
ssl_cert = <{self.cert}
ssl_key = <{self.key}
ssl_min_protocol = TLSv1.2
{f"ssl_dh = <{dh}" if Path(dh).exists() else ""}
disable_plaintext_auth = yes
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.workdir / "users"}
}}
userdb {{
  driver = static
  args = uid={MAIL_USER} gid={MAIL_GROUP} home={self.workdir / "home"}/%d/%n
}}
# The IDLE memory run opens --connections sessions of one user from one address.
default_process_limit = {limit}
default_client_limit = {3 * limit}
protocol imap {{
  mail_max_userip_connections = {limit}
}}
protocol lda {{
  postmaster_address = postmaster@{self.domain}
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.port}
    ssl = yes
  }}
  process_limit = {limit}
}}
service imap {{
  process_limit = {limit}
}}
"""
        )

    def load(self, address: str, messages: Iterable[bytes]) -> LoadStats:
        """Maildir files as Dovecot's LDA writes them: LF line ends, ``S=`` (file size) and
        ``W=`` (size with CRLF, what IMAP sends) in the name; owned by the mail user."""
        folder = self.home(address) / "Maildir" / "cur"
        started = time.monotonic()
        count = size = 0
        stamp = int(time.time()) - 86400
        for raw in messages:
            data = raw.replace(b"\r\n", b"\n")
            name = f"{stamp + count}.M{count}P{os.getpid()}.bench,S={len(data)},W={len(raw)}:2,"
            (folder / name).write_bytes(data)
            count += 1
            size += len(raw)
        return LoadStats(count, size, time.monotonic() - started)

    def start(self, connections: int) -> None:
        self.write_config(connections)
        user = pwd.getpwnam(MAIL_USER)
        for path in [self.workdir / "home", *(self.workdir / "home").rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)
        self._raise_inotify(connections + 512)
        log = (self.workdir / "dovecot.out").open("ab")
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port(
            self.port, 30, alive=lambda: self.process is not None and self.process.poll() is None
        )
        for address in self.users:  # build each mailbox's index, as deliveries would have
            self.doveadm("mailbox", "status", "-u", address, "messages", "INBOX")

    def doveadm(self, *args: str) -> str:
        out = subprocess.run(
            [DOVEADM, "-c", str(self.conf), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if out.returncode != 0:
            raise RuntimeError(f"doveadm {' '.join(args)}: {out.stderr.strip()[:500]}")
        return out.stdout

    def _raise_inotify(self, wanted: int) -> None:
        """Each imap process in IDLE holds an inotify instance (128 per user by default)."""
        current = int(INOTIFY_INSTANCES.read_text())
        if current < wanted:
            self._inotify_before = current
            INOTIFY_INSTANCES.write_text(str(wanted))

    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port, self.ca.server_name, self.ca.cafile, self.ca.leaf)

    def server_pids(self) -> list[int]:
        """The master and every process it started (imap-login, imap, auth, anvil, log…)."""
        if self.process is None or self.process.poll() is not None:
            return []
        pids = [self.process.pid, *children_of(self.process.pid)]
        self._seen.update(pids)
        return pids

    def deliverers(self) -> list[Deliverer]:
        return [LdaDeliverer(self)]

    def logs(self) -> str:
        return str(self.workdir / "dovecot.log")

    def stop(self) -> None:
        if self.process is not None:
            pids = self.server_pids()
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            for pid in {*pids, *self._seen} - {self.process.pid}:
                _kill_if_dovecot(pid)
            self.process = None
        if self._inotify_before is not None:
            INOTIFY_INSTANCES.write_text(str(self._inotify_before))
            self._inotify_before = None


def _kill_if_dovecot(pid: int) -> None:
    """A process of the stopped instance still alive (it should not be): kill it by pid."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return
    if comm in {"imap", "imap-login", "auth", "anvil", "log", "config", "stats", "dovecot"}:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class LdaDeliverer:
    """``dovecot-lda -d USER``, the message on its standard input (as an MTA pipes it);
    ``deliver`` returns when it exits (stored)."""

    description = "dovecot-lda (a new process per message, as an MTA runs it)"

    def __init__(self, server: DovecotServer) -> None:
        self.server = server

    async def open(self) -> None:
        return None

    async def deliver(self, raw: bytes, address: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            DOVECOT_LDA,
            "-c",
            str(self.server.conf),
            "-d",
            address,
            "-f",
            "bench@hopital-nord.mssante.test",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate(raw.replace(b"\r\n", b"\n"))
        if proc.returncode != 0:
            raise RuntimeError(f"dovecot-lda exit {proc.returncode}: {out.decode()[:300]}")

    async def close(self) -> None:
        return None


def children_of(root: int) -> list[int]:
    """Every descendant of ``root`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
