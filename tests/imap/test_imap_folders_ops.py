"""ops/folders without a socket: authorization everywhere (a hypothesis property over many
caller/target pairs and operations), folder management, UIDs, flags and search criteria."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from mssante.audit.log import iter_entries
from mssante.ops.folders import (
    AccessDenied,
    All,
    And,
    Caller,
    DateIs,
    FlagMode,
    FolderExists,
    FolderNotFound,
    FolderRefused,
    Folders,
    HasFlag,
    HeaderHas,
    InUids,
    Not,
    Or,
    SizeIs,
    TextHas,
    UidRange,
)
from mssante.ops.mailstore import MailStore
from mssante.ops.rights import Operation, authorize
from mssante.store.blobs import FileBlobStore
from mssante.store.db import Database
from mssante.store.models import (
    Account,
    AccountKind,
    Folder,
    Mailbox,
    MailboxEntry,
    MailboxType,
    Message,
)


@dataclass
class World:
    folders: Folders
    store: MailStore
    db: Database
    blobs: Path
    callers: dict[str, Caller]
    owners: dict[str, str | None]  # mailbox address -> owning caller name (None: nobody)
    closed: frozenset[str]


def _account(session: object, login: str) -> Account:
    account = Account(login=login, kind=AccountKind.PERSON)
    session.add(account)  # type: ignore[attr-defined]
    return account


@pytest.fixture
def world(db: Database, tmp_path: Path) -> World:
    blobs = FileBlobStore(tmp_path / "blobs")
    store = MailStore(db, blobs)
    boxes = {
        "a@x.mssante.test": "alice",
        "a-org@x.mssante.test": "alice",
        "b@x.mssante.test": "bob",
        "closed@x.mssante.test": "alice",
        "nobody@x.mssante.test": None,
    }
    with db.session() as session:
        accounts = {
            name: _account(session, f"{name}@x.mssante.test") for name in ("alice", "bob", "carol")
        }
        for address, owner in boxes.items():
            box = Mailbox(
                address=address,
                type=MailboxType.PER,
                owner_account=accounts[owner] if owner else None,
            )
            MailStore.ensure_folders(session, box)
            session.add(box)
        session.flush()
        callers = {name: Caller(a.id, a.login) for name, a in accounts.items()}
    for address in boxes:
        store.deliver(_raw(f"Pour {address}", f"<{address}@test>"), [address])
    with db.session() as session:
        closed = session.execute(
            select(Mailbox).where(Mailbox.address == "closed@x.mssante.test")
        ).scalar_one()
        closed.closed_at = dt.datetime.now(dt.UTC)
    return World(
        Folders(db, blobs),
        store,
        db,
        tmp_path / "blobs",
        callers,
        boxes,
        frozenset({"closed@x.mssante.test"}),
    )


def _raw(subject: str, message_id: str, body: str = "Bonjour.\r\n", **headers: str) -> bytes:
    fields = {
        "From": "Dr Paul Durand <dr.durand@b.mssante.test>",
        "To": "dr.martin@b.mssante.test",
        "Subject": subject,
        "Message-ID": message_id,
        "Date": "Wed, 25 Nov 2026 10:00:00 +0100",
        **headers,
    }
    return ("".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n" + body).encode()


def _snapshot(w: World) -> tuple[object, ...]:
    with w.db.session() as session:
        entries = session.execute(
            select(MailboxEntry.folder_id, MailboxEntry.uid, MailboxEntry.flags).order_by(
                MailboxEntry.id
            )
        ).all()
        folders = session.execute(
            select(Folder.mailbox_id, Folder.name, Folder.uid_next).order_by(Folder.id)
        ).all()
        messages = session.execute(select(func.count()).select_from(Message)).scalar_one()
    blob_files = sum(1 for p in w.blobs.rglob("*") if p.is_file())
    return tuple(entries), tuple(folders), messages, blob_files


def _own_source(w: World, caller: str) -> str:
    """A mailbox of the caller's own to copy from (someone else's if the caller has none)."""
    owned = [a for a, o in w.owners.items() if o == caller and a not in w.closed]
    return owned[0] if owned else "a@x.mssante.test"


Op = Callable[[World, Caller, str, str], object]
OPS: dict[str, Op] = {
    "list": lambda w, c, t, s: w.folders.list_folders(c, t),
    "status": lambda w, c, t, s: w.folders.status(c, t, "INBOX"),
    "select": lambda w, c, t, s: w.folders.select(c, t, "INBOX"),
    "probe": lambda w, c, t, s: w.folders.probe(c, t, "inbox"),
    "fetch": lambda w, c, t, s: w.folders.fetch(c, t, "INBOX", UidRange()),
    "body": lambda w, c, t, s: w.folders.body(c, t, "INBOX", 1),
    "search": lambda w, c, t, s: w.folders.search(c, t, "INBOX", TextHas("bonjour")),
    "store": lambda w, c, t, s: w.folders.store_flags(
        c, t, "INBOX", [1], flags=["\\Flagged"], mode=FlagMode.ADD
    ),
    "expunge": lambda w, c, t, s: w.folders.expunge(c, t, "INBOX"),
    "append": lambda w, c, t, s: w.folders.append(c, t, "Drafts", _raw("brouillon", "<d@test>")),
    "copy_into": lambda w, c, t, s: w.folders.copy(
        c, s, "INBOX", [1], "Archive", destination_address=t
    ),
    "move_into": lambda w, c, t, s: w.folders.move(
        c, s, "INBOX", [1], "Archive", destination_address=t
    ),
    "copy_from": lambda w, c, t, s: w.folders.copy(
        c, t, "INBOX", [1], "Archive", destination_address=s
    ),
    "create": lambda w, c, t, s: w.folders.create_folder(c, t, "Patients"),
    "rename": lambda w, c, t, s: w.folders.rename_folder(c, t, "Patients", "Dossiers"),
    "delete": lambda w, c, t, s: w.folders.delete_folder(c, t, "Dossiers"),
    "check": lambda w, c, t, s: w.folders.check(c, t, Operation.READ),
}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    caller=st.sampled_from(["alice", "bob", "carol"]),
    target=st.sampled_from(
        [
            "a@x.mssante.test",
            "a-org@x.mssante.test",
            "b@x.mssante.test",
            "closed@x.mssante.test",
            "nobody@x.mssante.test",
            "missing@x.mssante.test",
            "A@X.MSSANTE.TEST",
        ]
    ),
    op=st.sampled_from(sorted(OPS)),
)
def test_nobody_touches_a_mailbox_that_is_not_theirs(
    world: World, caller: str, target: str, op: str
) -> None:
    """The property: an operation on (or copying between) mailboxes succeeds past the access
    check if and only if the caller owns every mailbox involved and each is open; otherwise it
    raises AccessDenied and changes nothing (rows, flags, counters, blob files)."""
    source = _own_source(world, caller)
    involved = {target.lower()} | ({source} if op.endswith(("_into", "_from")) else set())
    allowed = all(world.owners.get(a) == caller and a not in world.closed for a in involved)
    before = _snapshot(world)
    try:
        OPS[op](world, world.callers[caller], target, source)
    except AccessDenied:
        assert not allowed, f"{caller} refused {op} on {target}"
        assert _snapshot(world) == before
        return
    except (FolderNotFound, FolderExists, FolderRefused):
        pass  # past the access check: a folder-level answer
    assert allowed, f"{caller} was let {op} on {target}"


def test_authorize_is_the_owner_of_an_open_mailbox(world: World) -> None:
    with world.db.session() as session:
        boxes = {b.address: b for b in session.execute(select(Mailbox)).scalars()}
        alice, bob = world.callers["alice"], world.callers["bob"]
        for operation in Operation:
            # The owner sends as the mailbox, never "on behalf of" it (RFC 5322 §3.6.2).
            mine = operation is not Operation.SEND_ON_BEHALF
            assert authorize(alice, boxes["a@x.mssante.test"], operation) is mine
            assert not authorize(bob, boxes["a@x.mssante.test"], operation)
            assert not authorize(alice, boxes["closed@x.mssante.test"], operation)
            assert not authorize(alice, boxes["nobody@x.mssante.test"], operation)
    assert world.folders.mailboxes(alice) == ["a-org@x.mssante.test", "a@x.mssante.test"]
    assert world.folders.default_mailbox(world.callers["carol"]) is None


def test_uids_ascend_and_never_come_back(world: World) -> None:
    alice, box = world.callers["alice"], "a@x.mssante.test"
    for i in range(3):
        world.store.deliver(_raw(f"m{i}", f"<m{i}@test>"), [box])
    assert [e.uid for e in world.folders.select(alice, box, "INBOX").entries] == [1, 2, 3, 4]
    world.folders.store_flags(alice, box, "INBOX", [3, 4], flags=["\\deleted"], mode=FlagMode.ADD)
    assert world.folders.expunge(alice, box, "INBOX") == [3, 4]
    world.store.deliver(_raw("m9", "<m9@test>"), [box])
    view = world.folders.select(alice, box, "INBOX")
    assert [e.uid for e in view.entries] == [1, 2, 5]
    assert view.folder.uid_next == 6
    moved = world.folders.move(alice, box, "INBOX", [1, 5], "Archive")
    assert moved.uids == ((1, 1), (5, 2))
    copied = world.folders.copy(alice, box, "Archive", UidRange(), "Archive")
    assert copied.uids == ((1, 3), (2, 4))
    assert world.folders.status(alice, box, "INBOX").messages == 1


def test_flags_are_those_the_webmail_reads(world: World) -> None:
    alice, box = world.callers["alice"], "a@x.mssante.test"
    world.folders.store_flags(
        alice, box, "INBOX", [1], flags=["\\SEEN", "$MDNSent", "\\Recent"], mode=FlagMode.ADD
    )
    assert world.store.list_messages(box)[0].flags == ("$MDNSent", "\\Seen")
    world.folders.store_flags(alice, box, "INBOX", [1], flags=["$MDNSent"], mode=FlagMode.REMOVE)
    assert world.store.list_messages(box)[0].flags == ("\\Seen",)
    world.folders.store_flags(
        alice, box, "INBOX", UidRange(), flags=["\\Flagged"], mode=FlagMode.REPLACE
    )
    assert world.store.list_messages(box)[0].flags == ("\\Flagged",)
    with pytest.raises(FolderRefused):
        world.folders.store_flags(alice, box, "INBOX", [1], flags=["\\Bogus"], mode=FlagMode.ADD)
    with pytest.raises(FolderRefused):
        world.folders.store_flags(alice, box, "INBOX", [1], flags=["bad flag"], mode=FlagMode.ADD)


def test_folder_management(world: World) -> None:
    alice, box = world.callers["alice"], "a@x.mssante.test"
    names = [f.name for f in world.folders.list_folders(alice, box)]
    assert names == ["INBOX", "Archive", "Drafts", "Sent", "Trash"]
    specials = {f.name: f.special_use for f in world.folders.list_folders(alice, box)}
    assert specials["Sent"] == "\\Sent" and specials["Trash"] == "\\Trash"
    first = world.folders.create_folder(alice, box, "Patients/Dupont")
    world.folders.create_folder(alice, box, "Patients")
    with pytest.raises(FolderExists):
        world.folders.create_folder(alice, box, "Patients")
    with pytest.raises(FolderExists):
        world.folders.create_folder(alice, box, "inbox")
    for bad in ("", "/x", "x/", "a//b", "a*", " x", "x\x00"):
        with pytest.raises(FolderRefused):
            world.folders.create_folder(alice, box, bad)
    world.folders.copy(alice, box, "INBOX", [1], "Patients/Dupont")
    world.folders.rename_folder(alice, box, "Patients", "Dossiers")
    names = {f.name: f for f in world.folders.list_folders(alice, box)}
    assert "Dossiers/Dupont" in names and "Patients" not in names
    assert names["Dossiers/Dupont"].uid_validity > first.uid_validity  # clients must resync
    assert world.folders.status(alice, box, "Dossiers/Dupont").messages == 1
    for refused in (
        lambda: world.folders.delete_folder(alice, box, "INBOX"),
        lambda: world.folders.delete_folder(alice, box, "Sent"),
        lambda: world.folders.rename_folder(alice, box, "Trash", "Corbeille"),
        lambda: world.folders.rename_folder(alice, box, "Dossiers", "Sent"),
        lambda: world.folders.rename_folder(alice, box, "Dossiers", "Dossiers/x"),
    ):
        with pytest.raises(FolderRefused):
            refused()
    world.folders.delete_folder(alice, box, "Dossiers/Dupont")
    with pytest.raises(FolderNotFound):
        world.folders.select(alice, box, "Dossiers/Dupont")
    recreated = world.folders.create_folder(alice, box, "Dossiers/Dupont")
    assert recreated.uid_validity > names["Dossiers/Dupont"].uid_validity  # RFC 9051 §2.3.1.1
    events = [e for e in _audit(world) if e.startswith("folder.")]
    assert (
        events.count("folder.created") == 3
        and "folder.renamed" in events
        and "folder.deleted" in events
    )


def _audit(w: World) -> list[str]:
    return [e.event for e in iter_entries(w.db)]


def test_search_criteria(world: World) -> None:
    alice, box = world.callers["alice"], "a@x.mssante.test"
    biology = (
        "From: Laboratoire <labo@ch.test>\r\nTo: a@x.mssante.test\r\n"
        "Subject: =?utf-8?q?R=C3=A9sultats_biologie?=\r\nMessage-ID: <bio@test>\r\n"
        "Date: Wed, 25 Nov 2026 10:00:00 +0100\r\nX-Extra: 1\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        "UsOpc3VsdGF0IGQnaMOpbW9nbG9iaW5lIG5vcm1hbA==\r\n--XX--\r\n"
    )
    world.store.deliver(biology.encode(), [box])
    world.store.deliver(
        _raw("Compte rendu", "<cr@test>", From="Secrétariat <secretariat@ch.test>"), [box]
    )
    world.folders.store_flags(alice, box, "INBOX", [3], flags=["\\Seen"], mode=FlagMode.ADD)

    def search(criterion: object) -> list[int]:
        return world.folders.search(alice, box, "INBOX", criterion)  # type: ignore[arg-type]

    today = dt.datetime.now(dt.UTC).date()
    assert search(All()) == [1, 2, 3]
    assert search(HasFlag("\\Seen")) == [3]
    assert search(HasFlag("\\seen", present=False)) == [1, 2]
    assert search(HeaderHas("Subject", "résultats")) == [2]  # RFC 2047 decoded, case-folded
    assert search(HeaderHas("From", "SECRÉTARIAT")) == [3]
    assert search(HeaderHas("X-Extra", "")) == [2]
    assert search(TextHas("hémoglobine", body_only=True)) == [2]  # base64 text part decoded
    assert search(TextHas("compte rendu")) == [3]  # TEXT includes the header
    assert search(TextHas("compte rendu", body_only=True)) == []
    assert search(DateIs("since", today)) == [1, 2, 3]
    assert search(DateIs("before", today)) == []
    assert search(DateIs("on", dt.date(2026, 11, 25), sent=True)) == [1, 2, 3]
    assert search(InUids(frozenset({2, 3}))) == [2, 3]
    assert search(
        And((Not(HasFlag("\\Seen")), Or(InUids(frozenset({1})), SizeIs("larger", 300))))
    ) == [1, 2]
    assert world.folders.search(alice, box, "INBOX", All(), uids=UidRange(2, 2)) == [2]


def test_unowned_and_closed_mailboxes_are_nobodys(world: World) -> None:
    for caller in world.callers.values():
        assert "nobody@x.mssante.test" not in world.folders.mailboxes(caller)
        assert "closed@x.mssante.test" not in world.folders.mailboxes(caller)
