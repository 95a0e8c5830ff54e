from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mssante.errors import ImmutableFieldError
from mssante.store.db import Database
from mssante.store.migrate import current
from mssante.store.models import Base, Folder, Mailbox, MailboxEntry, MailboxType, Message


def test_migrations_reach_head_and_match_the_models(db: Database) -> None:
    assert current(db) is not None
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_migrate_twice_is_harmless(db: Database) -> None:
    db.migrate()
    assert current(db) == "0008"


def test_mailbox_address_and_type_are_immutable(db: Database) -> None:
    with db.session() as s:
        s.add(Mailbox(address="Secretariat@CH-Nord.mssante.fr", type=MailboxType.ORG))
    with db.session() as s:
        box = s.execute(select(Mailbox)).scalar_one()
        assert box.address == "secretariat@ch-nord.mssante.fr"
        with pytest.raises(ImmutableFieldError, match="address cannot change"):
            box.address = "autre@ch-nord.mssante.fr"
        with pytest.raises(ImmutableFieldError, match="type cannot change"):
            box.type = MailboxType.PER
        box.liste_rouge = True  # other fields may change
    with db.session() as s:
        box = s.execute(select(Mailbox)).scalar_one()
        assert (box.address, box.type, box.liste_rouge) == (
            "secretariat@ch-nord.mssante.fr",
            MailboxType.ORG,
            True,
        )


def test_mailbox_address_is_unique(db: Database) -> None:
    with db.session() as s:
        s.add(Mailbox(address="a@x.mssante.fr", type=MailboxType.PER))
    with pytest.raises(IntegrityError), db.session() as s:
        s.add(Mailbox(address="A@x.mssante.fr", type=MailboxType.APP))
    with db.session() as s:
        assert s.execute(select(Mailbox.type)).scalars().all() == [MailboxType.PER]


def test_uid_is_unique_within_a_folder(db: Database) -> None:
    with db.session() as s:
        box = Mailbox(address="a@x.mssante.fr", type=MailboxType.PER)
        folder = Folder(mailbox=box, name="INBOX", uid_validity=1)
        msg = Message(blob_sha256="0" * 64, size=1)
        s.add_all([box, folder, msg])
        s.flush()
        s.add(MailboxEntry(folder_id=folder.id, uid=1, message_pk=msg.id))
    with pytest.raises(IntegrityError), db.session() as s:
        s.add(MailboxEntry(folder_id=folder.id, uid=1, message_pk=msg.id))


def test_naive_datetimes_are_refused(db: Database) -> None:
    from datetime import datetime

    with pytest.raises(Exception, match="naive datetime"), db.session() as s:
        s.add(Message(blob_sha256="0" * 64, size=1, date=datetime(2026, 1, 1)))
        s.flush()
