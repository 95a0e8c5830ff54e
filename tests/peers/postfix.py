"""A real Postfix, run as an independent instance on 127.0.0.1, as a peer operator.

Each :class:`PostfixInstance` has its own configuration, queue, data, mail and log folders under
one root folder, its own ``master`` process, and never reads or touches the system instance
(``/etc/postfix/main.cf`` need not even exist). It needs Linux, root, and the Debian package
``postfix`` (3.7); ``scripts/test.sh`` installs it. See docs/decisions/0004-postfix-peer.md.

What an instance does::

    inbound   127.0.0.1:<listen_port>   STARTTLS required (TLS >= 1.2), asks for a client
                                        certificate (and requires it unless told otherwise),
                                        verifies it against ``ca_bundle``, records it in the
                                        Received header; accepts mail for ``domain`` only.
    inject    127.0.0.1:<inject_port>   optional, plain SMTP, relays for 127.0.0.0/8 (tests and
                                        benchmarks hand messages to the instance here).
    outbound  routes[domain] = (host, port): delivered to ``smtp:[host]:port`` over TLS with
                                        ``cert``/``key`` as client certificate, level ``secure``,
                                        the peer's certificate must name ``route.peer_name``.
                                        Any other domain bounces (no DNS, no MX).
    local     mail for ``<user>@<domain>``, ``user`` in ``users``, goes to the Maildir
                                        ``<root>/mail/<domain>/<user>/`` (virtual(8), as
                                        ``nobody``); other users of ``domain``: 550 5.1.1.

API::

    with PostfixInstance(
        root, hostname="mta.b.mssante.test", domain="b.mssante.test", listen_port=p,
        cert=issued.fullchain, key=issued.key, ca_bundle=pki.paths().bundle,
        routes={"a.mssante.test": Route("127.0.0.1", pa, "mta.a.mssante.test")},
        require_client_cert=True, connection_reuse=False, inject_port=None,
        users=("user",), extra_main={},              # extra_main: more main.cf parameters
    ) as b:
        b.wait_for_messages("user", 1, timeout=30)   # -> list[bytes], Maildir order
        b.maildir_messages("user")                   # -> list[bytes]
        b.maildir("user")                            # -> Path of the Maildir
        b.queue_is_empty(); b.wait_queue_empty(30); b.flush()   # postqueue -f
        b.log_text(); b.wait_for_log("text", 10)     # the instance's maillog
        b.running(); b.processes()                   # master alive?  live pids
        b.postconf("smtp_tls_connection_reuse")      # effective parameter value
    postfix_skip_reason() -> str | None              # not Linux / not root, else None
    postfix_available() -> bool                      # raises PostfixError if not installed

``start()`` writes the configuration, runs ``postfix check``, starts the master and waits for the
listeners' banners; ``stop()`` stops it, waits for the master to exit and kills any process of
the instance still alive (found by its ``MAIL_CONFIG`` environment; killed by pid). A failed start
stops what was started and raises :class:`PostfixError` with the end of the maillog.

The Maildir is written by ``nobody`` and the master's lock file by ``postfix``, so every
ancestor of the root must be searchable by others (``o+x``). pytest's ``tmp_path`` is not (its
``/tmp/pytest-of-root`` is 0700, and any pytest session may reset it at any time): use
:func:`peer_workdir`, a fresh folder in the system temporary folder, removed on exit (kept when
``MSSANTE_KEEP_PEERS=1``)::

    with peer_workdir() as root, PostfixInstance(root / "b", ...) as b: ...
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
POSTQUEUE = "/usr/sbin/postqueue"
MAILBOX_USER = "nobody"
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")
_START_TIMEOUT = 30.0


class PostfixError(RuntimeError):
    """A Postfix instance could not be configured, started or stopped."""


@dataclass(frozen=True)
class Route:
    """Where mail for a domain goes, and the name the peer's certificate must carry."""

    host: str
    port: int
    peer_name: str


def postfix_skip_reason() -> str | None:
    """Why Postfix peers cannot run here, or None. A missing package is NOT a reason to skip."""
    if not sys.platform.startswith("linux"):
        return "Postfix peers need Linux"
    if os.geteuid() != 0:
        return "Postfix peers need root (each instance runs its own master)"
    return None


def postfix_available() -> bool:
    """True on Linux as root. Raises if Postfix is missing there: scripts/test.sh installs it."""
    if postfix_skip_reason() is not None:
        return False
    if not Path(POSTFIX).is_file():
        raise PostfixError(
            f"{POSTFIX} is missing: install the Debian package 'postfix' (scripts/test.sh does)"
        )
    return True


# -- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "etc"

    @property
    def queue(self) -> Path:
        return self.root / "spool"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def mail(self) -> Path:
        return self.root / "mail"

    @property
    def log(self) -> Path:
        return self.root / "log" / "maillog"


# service, type, private, unprivileged, chroot, wakeup, maxproc, command: all chroot off ("n").
_SERVICES = (
    ("pickup", "unix", "n", "-", "n", "60", "1", "pickup"),
    ("cleanup", "unix", "n", "-", "n", "-", "0", "cleanup"),
    ("qmgr", "unix", "n", "-", "n", "300", "1", "qmgr"),
    ("tlsmgr", "unix", "-", "-", "n", "1000?", "1", "tlsmgr"),
    ("rewrite", "unix", "-", "-", "n", "-", "-", "trivial-rewrite"),
    ("bounce", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("defer", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("trace", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("verify", "unix", "-", "-", "n", "-", "1", "verify"),
    ("flush", "unix", "n", "-", "n", "1000?", "0", "flush"),
    ("proxymap", "unix", "-", "-", "n", "-", "-", "proxymap"),
    ("proxywrite", "unix", "-", "-", "n", "-", "1", "proxymap"),
    ("smtp", "unix", "-", "-", "n", "-", "-", "smtp"),
    ("relay", "unix", "-", "-", "n", "-", "-", "smtp"),
    ("showq", "unix", "n", "-", "n", "-", "-", "showq"),
    ("error", "unix", "-", "-", "n", "-", "-", "error"),
    ("retry", "unix", "-", "-", "n", "-", "-", "error"),
    ("discard", "unix", "-", "-", "n", "-", "-", "discard"),
    ("virtual", "unix", "-", "n", "n", "-", "-", "virtual"),
    ("anvil", "unix", "-", "-", "n", "-", "1", "anvil"),
    ("scache", "unix", "-", "-", "n", "-", "1", "scache"),
    ("postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"),
)
_TLSPROXY = ("tlsproxy", "unix", "-", "-", "n", "-", "0", "tlsproxy")


def _service_line(fields: tuple[str, ...], options: Mapping[str, str] | None = None) -> str:
    line = " ".join(fields)
    for name, value in (options or {}).items():
        line += f"\n  -o {name}={value}"
    return line


def _texthash(entries: Mapping[str, str]) -> str:
    return "".join(f"{key} {value}\n" for key, value in entries.items())


def _check_user(user: str) -> str:
    """A mailbox name that is also a safe folder name."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9._+=-]*", user.lower()):
        raise ValueError(f"unsupported test mailbox name {user!r}")
    return user.lower()


# -- the instance ------------------------------------------------------------------------------


class PostfixInstance:
    """One Postfix instance on loopback (see the module docstring). A context manager."""

    def __init__(
        self,
        root: Path,
        *,
        hostname: str,
        domain: str,
        listen_port: int,
        cert: Path,
        key: Path,
        ca_bundle: Path,
        routes: Mapping[str, Route] | None = None,
        require_client_cert: bool = True,
        connection_reuse: bool = False,
        inject_port: int | None = None,
        users: Iterable[str] = ("user",),
        extra_main: Mapping[str, str] | None = None,
    ) -> None:
        self.layout = _Layout(Path(root).resolve())
        self.hostname = hostname
        self.domain = domain.lower()
        self.listen_port = listen_port
        self.inject_port = inject_port
        self.cert, self.key, self.ca_bundle = Path(cert), Path(key), Path(ca_bundle)
        self.routes = dict(routes or {})
        self.require_client_cert = require_client_cert
        self.connection_reuse = connection_reuse
        self.users = tuple(_check_user(u) for u in users)
        self.extra_main = dict(extra_main or {})
        self._master_pid: int | None = None

    # -- context manager -----------------------------------------------------------------------
    def __enter__(self) -> PostfixInstance:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    # -- configuration -------------------------------------------------------------------------
    def main_cf(self) -> dict[str, str]:
        """The ``main.cf`` parameters of this instance."""
        lay = self.layout
        return {
            "compatibility_level": "3.6",
            "queue_directory": str(lay.queue),
            "data_directory": str(lay.data),
            "myhostname": self.hostname,
            "mydomain": self.domain,
            "myorigin": "$mydomain",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "alias_maps": "",
            "alias_database": "",
            "append_dot_mydomain": "no",
            "biff": "no",
            "maillog_file": str(lay.log),
            "maillog_file_prefixes": str(lay.root),
            "smtpd_relay_restrictions": "reject_unauth_destination",
            **self._local_delivery(),
            **self._routing(),
            **self._inbound_tls(),
            **self._outbound_tls(),
            **self.extra_main,
        }

    def _local_delivery(self) -> dict[str, str]:
        user = pwd.getpwnam(MAILBOX_USER)
        return {
            "virtual_mailbox_domains": self.domain,
            "virtual_mailbox_base": str(self.layout.mail),
            "virtual_mailbox_maps": f"texthash:{self.layout.config / 'mailboxes'}",
            "virtual_uid_maps": f"static:{user.pw_uid}",
            "virtual_gid_maps": f"static:{user.pw_gid}",
        }

    def _routing(self) -> dict[str, str]:
        return {
            "transport_maps": f"texthash:{self.layout.config / 'transport'}",
            "default_transport": "error:5.1.2 no route to that domain from this test instance",
            "smtp_tls_policy_maps": f"texthash:{self.layout.config / 'tls_policy'}",
        }

    def _inbound_tls(self) -> dict[str, str]:
        return {
            "smtpd_tls_cert_file": str(self.cert),
            "smtpd_tls_key_file": str(self.key),
            "smtpd_tls_CAfile": str(self.ca_bundle),
            "smtpd_tls_security_level": "encrypt",
            "smtpd_tls_ask_ccert": "yes",
            "smtpd_tls_req_ccert": "yes" if self.require_client_cert else "no",
            "smtpd_tls_protocols": ">=TLSv1.2",
            "smtpd_tls_mandatory_protocols": ">=TLSv1.2",
            "smtpd_tls_received_header": "yes",
            "smtpd_tls_loglevel": "1",
        }

    def _outbound_tls(self) -> dict[str, str]:
        return {
            "smtp_tls_cert_file": str(self.cert),
            "smtp_tls_key_file": str(self.key),
            "smtp_tls_CAfile": str(self.ca_bundle),
            "smtp_tls_security_level": "secure",
            "smtp_tls_protocols": ">=TLSv1.2",
            "smtp_tls_mandatory_protocols": ">=TLSv1.2",
            "smtp_tls_loglevel": "1",
            "smtp_tls_connection_reuse": "yes" if self.connection_reuse else "no",
        }

    def master_cf(self) -> str:
        """The ``master.cf`` of this instance: every service with chroot off."""
        require = "yes" if self.require_client_cert else "no"
        lines = [
            _service_line(
                (f"127.0.0.1:{self.listen_port}", "inet", "n", "-", "n", "-", "-", "smtpd"),
                {"smtpd_tls_req_ccert": require},
            )
        ]
        if self.inject_port is not None:
            lines.append(self._inject_service())
        lines += [_service_line(s) for s in _SERVICES]
        if self.connection_reuse:
            lines.append(_service_line(_TLSPROXY))
        return "\n".join(lines) + "\n"

    def _inject_service(self) -> str:
        fields = (f"127.0.0.1:{self.inject_port}", "inet", "n", "-", "n", "-", "-", "smtpd")
        return _service_line(
            fields,
            {
                "syslog_name": "postfix/inject",
                "smtpd_tls_security_level": "none",
                "smtpd_tls_ask_ccert": "no",
                "smtpd_tls_req_ccert": "no",
                "smtpd_relay_restrictions": "permit_mynetworks,reject",
            },
        )

    def _tables(self) -> dict[str, str]:
        transport = {d: f"smtp:[{r.host}]:{r.port}" for d, r in self.routes.items()}
        policy = {
            f"[{r.host}]:{r.port}": f"secure match={r.peer_name}" for r in self.routes.values()
        }
        mailboxes = {f"{u}@{self.domain}": f"{self.domain}/{u}/" for u in self.users}
        return {
            "transport": _texthash(transport),
            "tls_policy": _texthash(policy),
            "mailboxes": _texthash(mailboxes),
        }

    def write_config(self) -> None:
        """Create the folders and write main.cf, master.cf and the lookup tables."""
        lay = self.layout
        lay.root.mkdir(parents=True, exist_ok=True)
        _check_reachable(lay.root)
        for folder in (lay.root, lay.config, lay.queue, lay.data, lay.mail, lay.log.parent):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o755)
        nobody = pwd.getpwnam(MAILBOX_USER)
        os.chown(lay.mail, nobody.pw_uid, nobody.pw_gid)
        postfix = pwd.getpwnam("postfix")
        os.chown(lay.data, postfix.pw_uid, postfix.pw_gid)
        os.chmod(lay.data, 0o700)
        main = "".join(f"{k} = {v}\n" for k, v in self.main_cf().items())
        (lay.config / "main.cf").write_text(main)
        (lay.config / "master.cf").write_text(self.master_cf())
        for name, text in self._tables().items():
            (lay.config / name).write_text(text)

    # -- running -------------------------------------------------------------------------------
    def start(self) -> None:
        """Configure, check and start the instance; return once its listeners answer."""
        if not postfix_available():
            raise PostfixError(postfix_skip_reason() or "Postfix peers cannot run here")
        self.write_config()
        self._postfix("check")
        try:
            self._postfix("start")
            self._master_pid = self._read_master_pid()
            for port in self._ports():
                _wait_for_banner(port, _START_TIMEOUT)
        except BaseException as error:
            log = self.log_text()[-3000:]
            self.stop()
            if isinstance(error, PostfixError | OSError | TimeoutError):
                raise PostfixError(f"{self.hostname} did not start: {error}\n{log}") from error
            raise

    def stop(self) -> None:
        """Stop the master, wait for it, and kill whatever of this instance is left."""
        if self._master_pid is None and not (self.layout.queue / "pid" / "master.pid").exists():
            return
        if self.running():
            subprocess.run(
                [POSTFIX, "-c", str(self.layout.config), "stop"],
                capture_output=True,
                timeout=30,
                check=False,
            )
        self._kill_leftovers()
        self._master_pid = None

    def running(self) -> bool:
        pid = self._master_pid or self._read_master_pid(quiet=True)
        return pid is not None and _alive(pid)

    def _ports(self) -> list[int]:
        return [self.listen_port] + ([self.inject_port] if self.inject_port else [])

    def _postfix(self, *args: str) -> str:
        command = [POSTFIX, "-c", str(self.layout.config), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise PostfixError(f"'postfix {' '.join(args)}' failed: {done.stderr.strip()}")
        return done.stderr

    def _read_master_pid(self, *, quiet: bool = False) -> int | None:
        path = self.layout.queue / "pid" / "master.pid"
        try:
            return int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            if quiet:
                return None
            raise PostfixError(f"no master pid in {path}") from None

    def _kill_leftovers(self) -> None:
        deadline = time.monotonic() + 10
        while (pids := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in pids:
            _kill(pid, signal.SIGKILL)

    def processes(self) -> list[int]:
        """Live processes of this instance: every one carries its ``MAIL_CONFIG`` (the master
        too, which ``postfix start`` runs with it), so a recycled pid is never mistaken for one.
        """
        marker = f"MAIL_CONFIG={self.layout.config}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in environ and _alive(int(entry.name)):
                pids.append(int(entry.name))
        return pids

    # -- queue ---------------------------------------------------------------------------------
    def queue_is_empty(self) -> bool:
        for name in QUEUES:
            folder = self.layout.queue / name
            if folder.is_dir() and any(p.is_file() for p in folder.rglob("*")):
                return False
        return True

    def wait_queue_empty(self, timeout: float = 30.0) -> None:
        _wait(self.queue_is_empty, timeout, f"{self.hostname}'s queue did not empty")

    def flush(self) -> None:
        """``postqueue -f``: try every deferred message now."""
        subprocess.run(
            [POSTQUEUE, "-c", str(self.layout.config), "-f"],
            capture_output=True,
            timeout=30,
            check=True,
        )

    # -- mail and logs -------------------------------------------------------------------------
    def maildir(self, user: str) -> Path:
        return self.layout.mail / self.domain / user.lower()

    def maildir_messages(self, user: str) -> list[bytes]:
        """Messages delivered to ``user`` (``new/`` and ``cur/``), oldest first."""
        folder = self.maildir(user)
        files = [
            p for sub in ("new", "cur") if (folder / sub).is_dir() for p in (folder / sub).iterdir()
        ]
        files.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [p.read_bytes() for p in files]

    def wait_for_messages(self, user: str, count: int, timeout: float = 30.0) -> list[bytes]:
        found: list[bytes] = []

        def enough() -> bool:
            nonlocal found
            found = self.maildir_messages(user)
            return len(found) >= count

        _wait(enough, timeout, f"{count} message(s) for {user}@{self.domain} not delivered")
        return found

    def log_text(self) -> str:
        try:
            return self.layout.log.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        _wait(lambda: text in self.log_text(), timeout, f"{text!r} not logged by {self.hostname}")

    def postconf(self, name: str) -> str:
        """The effective value of a parameter, as this instance sees it."""
        done = subprocess.run(
            [POSTCONF, "-c", str(self.layout.config), "-h", name],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout.strip()


# -- helpers -----------------------------------------------------------------------------------


@contextmanager
def peer_workdir(prefix: str = "mssante-peers-") -> Iterator[Path]:
    """A new folder that Postfix's unprivileged daemons can reach; removed on exit."""
    path = Path(tempfile.mkdtemp(prefix=prefix)).resolve()
    try:
        path.chmod(0o711)
        _check_reachable(path)
        yield path
    finally:
        if os.environ.get("MSSANTE_KEEP_PEERS") != "1":
            shutil.rmtree(path, ignore_errors=True)


def _check_reachable(path: Path) -> None:
    """Every ancestor of ``path`` must be searchable by others (see the module docstring)."""
    for folder in path.parents:
        if not folder.stat().st_mode & stat.S_IXOTH:
            raise PostfixError(
                f"{folder} is not searchable by others, so Postfix's unprivileged daemons "
                f"cannot reach {path}: put instances under peer_workdir()"
            )


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _kill(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_for_banner(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                if conn.recv(512).startswith(b"220"):
                    conn.sendall(b"QUIT\r\n")
                    return
        except OSError as error:
            last = error
        time.sleep(0.1)
    raise TimeoutError(f"no SMTP banner on 127.0.0.1:{port} after {timeout:.0f} s ({last})")


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    if not condition():
        raise TimeoutError(f"{what} within {timeout:.0f} s")
