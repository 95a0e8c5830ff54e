"""Helpers of the command-line tests: an operator's configuration file on the test database
(SQLite or PostgreSQL, ``MSSANTE_TEST_DATABASE``), messages put in its outbound queue the way
the submission path does, and delivery attempts settled by the queue's own policy."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from mssante.cli.main import cli
from mssante.config import Settings, load_settings
from mssante.queue.store import Reply, RetryPolicy, apply, claim_due, enqueue
from mssante.store.blobs import FileBlobStore
from mssante.store.db import Database, open_database
from support import is_postgres

DOMAIN = "hopital-nord.mssante.test"
PEER = "cabinet-sud.mssante.test"
OTHER_PEER = "clinique-est.mssante.test"
SENDER = f"helene.martin@{DOMAIN}"
SENDER_ID_NAT = "810002909371"  # 8 + an RPPS number with a valid Luhn key
PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def run(*args: str, input_text: str | None = None) -> Result:
    """``mssante ARGS`` through click, in this process."""
    result = CliRunner().invoke(cli, list(args), input=input_text)
    return Result(result.exit_code, result.stdout, result.stderr)


def write_config(
    path: Path, data_dir: Path, database: tuple[str, str] | None, domains: Sequence[str]
) -> Path:
    """An operator's configuration file: its data folder, its domains and, on PostgreSQL (or
    when given), its database."""
    lines = [f'data_dir = "{data_dir}"', "[operator]", 'name = "HOPITAL NORD"']
    lines.append("domains = [" + ", ".join(f'"{d}"' for d in domains) + "]")
    lines += ["[auth]", "argon2_time_cost = 1", "argon2_memory_kib = 8"]
    if database is not None:
        url, schema = database
        lines += ["[database]", f'url = "{url}"', f'schema_name = "{schema}"']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class OperatorNode:
    """An operator's configuration file and its (created, migrated) database."""

    config: Path
    settings: Settings
    db: Database
    blobs: FileBlobStore

    def submit(
        self,
        recipients: Sequence[str],
        *,
        sender: str = SENDER,
        subject: str = "Compte rendu",
        now: datetime | None = None,
    ) -> int:
        """Queue a message as the submission path does: body in the blob store, rows and
        their audit entry committed together. Returns the queue id."""
        message_id = f"<{uuid.uuid4().hex}@{DOMAIN}>"
        raw = make_message(sender, recipients, subject, message_id)
        digest = self.blobs.put(raw)
        with self.db.session() as session:
            return enqueue(
                session,
                digest=digest,
                size=len(raw),
                sender=sender,
                recipients=recipients,
                message_id=message_id,
                account=sender,
                now=now or datetime.now(UTC),
            )

    def attempt(self, replies: Mapping[str, Reply], now: datetime | None = None) -> None:
        """One delivery round as the workers do it: every due recipient is claimed, and those
        named in ``replies`` get that reply (settled by the queue's retry policy, written
        with their audit entries). The others stay in flight, as with a worker mid-DATA."""
        moment = now or datetime.now(UTC)
        batches = claim_due(self.db, worker_id="test-worker", limit=1000, now=moment)
        policy = RetryPolicy.from_settings(self.settings.smtp)
        settled = [
            policy.settle(claim, replies[claim.address], moment)
            for batch in batches
            for claim in batch.claims
            if claim.address in replies
        ]
        with self.db.session() as session:
            apply(session, settled, moment)


def make_operator(tmp_path: Path, database_settings: tuple[str, str]) -> OperatorNode:
    """An operator on the test database: on SQLite, in data_dir's default mssante.db."""
    url, schema = database_settings
    data_dir = tmp_path / "data"
    if not is_postgres():
        url = f"sqlite:///{data_dir / 'mssante.db'}"
    config = write_config(
        tmp_path / "op.toml", data_dir, (url, schema) if is_postgres() else None, [DOMAIN]
    )
    db = open_database(url, schema=schema)
    settings = load_settings(config)
    return OperatorNode(config, settings, db, FileBlobStore(settings.blob_dir()))


def make_message(sender: str, recipients: Sequence[str], subject: str, message_id: str) -> bytes:
    head = (
        f"From: Hélène Martin <{sender}>\r\n"
        f"To: {', '.join(recipients)}\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: {message_id}\r\n"
        "Date: Wed, 25 Nov 2026 10:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
    )
    return (head + "\r\nBonjour,\r\nvoici le compte rendu.\r\n").encode("utf-8")
