"""The mssante side of the benchmark: two ``mssante serve`` operators, A relays to B.

It has the shape of ``pairs.RelayPair`` and is built on ``mssante demo``'s trust space (its own
test PKI, an authority publishing the whitelist, operator A ``hopital-nord`` and operator B
``cabinet-sud``, each with its MTA certificate, A routing B's domain to B's inbound port):

- ``start(mailboxes)``: builds the trust space in the work folder, adds one person (and so one
  open mailbox) at B per name in ``mailboxes``, starts the ``mssante serve`` processes and waits
  until both operators hold the verified whitelist.
- ``injection()``: A's submission port 587 with STARTTLS (A's MTA name checked against the demo
  PKI), AUTH as the demo account ``helene.martin`` of A.
- ``probe(box)``: B answers 250 only once a message is committed, so a committed row in B's
  database is "stored durably". The probe polls B's database for new ``mailbox_entries`` of that
  mailbox; the bench id is read from the ``Message-ID`` (``<n.<run>@bench.invalid>``); the
  storage time is the message row's ``received_at`` (set when B inserts it, a group commit
  before the commit itself, so slightly early: at most the group-commit delay).
- ``wait_idle()``: A's outbound queue holds nothing queued, deferred or in flight.

If the operator cannot be started (its SMTP listeners are still being finished), ``start()``
raises :class:`NotImplementedError` with the reason, and the benchmark reports the mssante
side as not measured.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pairs import BenchPki, Injection, Stored

NOT_READY = (
    "the mssante pair could not start (bench/relay/mssante_pair.py): {reason}; "
    "run with --only postfix meanwhile"
)
BENCH_MESSAGE_ID = re.compile(r"(\d+)\.([A-Za-z0-9._-]+)@bench\.invalid")


class DatabaseProbe:
    """New entries of one mailbox at B, read from B's database."""

    def __init__(self, db: Any, address: str, run: str) -> None:
        self.db = db
        self.address = address
        self.run = run
        self.last_entry = 0

    def poll(self) -> list[Stored]:
        from sqlalchemy import select  # noqa: PLC0415

        from mssante.store.models import Folder, Mailbox, MailboxEntry, Message  # noqa: PLC0415

        query = (
            select(MailboxEntry.id, Message.message_id, Message.received_at)
            .join(Folder, Folder.id == MailboxEntry.folder_id)
            .join(Mailbox, Mailbox.id == Folder.mailbox_id)
            .join(Message, Message.id == MailboxEntry.message_pk)
            .where(Mailbox.address == self.address, MailboxEntry.id > self.last_entry)
            .order_by(MailboxEntry.id)
        )
        with self.db.session() as session:
            rows = session.execute(query).all()
        found = []
        for entry_id, message_id, received_at in rows:
            self.last_entry = max(self.last_entry, entry_id)
            match = BENCH_MESSAGE_ID.search(message_id or "")
            if match and match.group(2) == self.run:
                found.append(Stored(f"{self.run}/{match.group(1)}", received_at.timestamp()))
        return found


@dataclass
class MssantePair:
    workdir: Path
    pki: BenchPki  # unused: the demo trust space has its own PKI
    name: str = "mssante"
    layout: Any = field(default=None, init=False)
    info: dict[str, Any] = field(default_factory=dict, init=False)
    _dbs: list[Any] = field(default_factory=list, init=False)

    def describe(self) -> str:
        return "two mssante operators (submission at A, mutual TLS A -> B, store at B)"

    def start(self, mailboxes: Sequence[str]) -> None:
        try:
            from mssante import demo  # noqa: PLC0415
            from support import free_port_block  # noqa: PLC0415
        except ImportError as error:
            raise NotImplementedError(NOT_READY.format(reason=error)) from error
        self.layout = demo.DemoLayout(root=self.workdir, base_port=free_port_block())
        self.info = demo.build(self.layout)
        self._add_mailboxes(mailboxes)
        try:
            demo.start(self.layout, self.info, log_dir=self.workdir / "logs")
            demo.wait_until_operators_hold_the_list(self.info, self.layout)
        except Exception as error:
            raise NotImplementedError(NOT_READY.format(reason=error)) from error

    def _operator(self, index: int) -> dict[str, Any]:
        return self.info["operators"][index]  # type: ignore[no-any-return]

    def _open_db(self, index: int) -> Any:
        from mssante.config import load_settings  # noqa: PLC0415
        from mssante.store.db import open_database  # noqa: PLC0415

        settings = load_settings(Path(self._operator(index)["config"]))
        db = open_database(
            settings.database_url(), schema=settings.database.schema_name, migrate=False
        )
        self._dbs.append(db)
        return db

    def _add_mailboxes(self, mailboxes: Sequence[str]) -> None:
        from mssante.audit.events import Actor  # noqa: PLC0415
        from mssante.config import load_settings  # noqa: PLC0415
        from mssante.ops.accounts import Accounts, NewPerson  # noqa: PLC0415
        from mssante.pki.ids import luhn_key  # noqa: PLC0415
        from mssante.runtime import open_node  # noqa: PLC0415

        node = open_node(load_settings(Path(self._operator(1)["config"])))
        try:
            accounts = Accounts(node.db)
            for i, box in enumerate(mailboxes):
                rpps = f"{1000300000 + i}"
                person = NewPerson(
                    self.recipient(box),
                    secrets.token_urlsafe(16),
                    "8" + rpps + luhn_key(rpps),
                    "Banc",
                    box,
                    profession_code="10",
                    profession_label="Médecin",
                )
                accounts.create_person(person, Actor("bench", {"via": "bench/relay"}))
        finally:
            node.close()

    def injection(self) -> Injection:
        op = self._operator(0)
        account = op["accounts"][0]
        host, port = op["endpoints"]["submission"].rsplit(":", 1)
        return Injection(
            host,
            int(port),
            account["address"],
            tls="starttls",
            cafile=str(Path(self.info["pki"]["dir"]) / "ca" / "bundle.pem"),
            server_name=f"smtp.{op['domain']}",
            username=account["address"],
            password=account["password"],
        )

    def recipient(self, mailbox: str) -> str:
        return f"{mailbox}@{self._operator(1)['domain']}"

    def probe(self, mailbox: str) -> DatabaseProbe:
        return DatabaseProbe(self._open_db(1), self.recipient(mailbox), run=mailbox)

    def wait_idle(self, timeout: float) -> None:
        from sqlalchemy import func, select  # noqa: PLC0415

        from mssante.store.models import QueueRecipient, QueueStatus  # noqa: PLC0415

        db = self._open_db(0)
        pending = (QueueStatus.QUEUED, QueueStatus.DEFERRED, QueueStatus.IN_FLIGHT)
        query = select(func.count()).where(QueueRecipient.status.in_(pending))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with db.session() as session:
                if session.execute(query).scalar_one() == 0:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"operator A's queue did not empty within {timeout:.0f} s")

    def logs(self) -> str:
        return str(self.workdir / "logs")

    def stop(self) -> None:
        for db in self._dbs:
            db.dispose()
        self._dbs.clear()
        if self.layout is not None:
            from mssante import demo  # noqa: PLC0415

            demo.stop(self.layout)
