"""Mail over IMAP with a real client (imapclient) on real TLS sockets: what SMTP delivered,
FETCH, SEARCH, STORE, COPY, MOVE, UIDPLUS, APPEND, EXPUNGE, CLOSE, LIST, STATUS, folders."""

from __future__ import annotations

import asyncio
import datetime as dt
import smtplib

import imapclient
import pytest
from imapclient.exceptions import IMAPClientError
from sqlalchemy import select

from imap_fixtures import DURAND, MARTIN, PASSWORD, Operator, Raw, message
from mssante.store.models import Folder, Mailbox


def _submit(op: Operator, raw: bytes, to: str = MARTIN) -> None:
    """Durand sends to Martin through our submission listener (587, STARTTLS, AUTH)."""
    with smtplib.SMTP("127.0.0.1", op.rt.settings.smtp.submission_port, timeout=20) as smtp:
        smtp.starttls(context=op.tls())
        smtp.login(DURAND, PASSWORD)
        smtp.sendmail(DURAND, [to], raw)


async def test_smtp_delivery_is_fetched_over_imap(operator: Operator) -> None:
    raw = message(
        "Compte rendu opératoire",
        body="--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nBonjour.\r\n"
        "--B\r\nContent-Type: application/pdf; name=cr.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        "JVBERi0xLjQK\r\n--B--\r\n",
        **{"MIME-Version": "1.0", "Content-Type": "multipart/mixed; boundary=B"},
    )
    raw = raw.replace(
        b"Subject: Compte rendu op\xc3\xa9ratoire",
        b"Subject: =?utf-8?q?Compte_rendu_op=C3=A9ratoire?=",
    )
    await asyncio.to_thread(_submit, operator, raw)

    def scenario() -> dict[int, dict[bytes, object]]:
        with operator.client() as client:
            client.select_folder("INBOX")
            uids = client.search(["ALL"])
            assert uids == [1]
            items = [
                "UID",
                "FLAGS",
                "INTERNALDATE",
                "RFC822.SIZE",
                "ENVELOPE",
                "BODYSTRUCTURE",
                "BODY.PEEK[]",
            ]
            fetched = client.fetch(uids, items)
            assert client.get_flags(uids)[1] == ()  # .PEEK did not set \Seen
            client.fetch(uids, ["BODY[1]"])  # a body part without .PEEK sets \Seen
            fetched[1][b"flags_after"] = client.get_flags(uids)[1]
            return fetched

    fetched = (await asyncio.to_thread(scenario))[1]
    stored = operator.rt.store.list_messages(MARTIN)[0]
    body = operator.rt.store.read(stored.blob_sha256)
    assert fetched[b"BODY[]"] == body  # the bytes SMTP stored, trace headers included
    assert b"Received:" in body
    assert fetched[b"RFC822.SIZE"] == len(body) == stored.size
    envelope = fetched[b"ENVELOPE"]
    assert envelope.subject.decode() == "Compte rendu opératoire"  # pymap decodes RFC 2047
    assert envelope.from_[0].mailbox == b"dr.durand" and envelope.from_[0].host == b"b.mssante.test"
    structure = fetched[b"BODYSTRUCTURE"]
    assert structure.is_multipart
    assert structure[0][0][:2] == (b"text", b"plain") and structure[0][1][:2] == (
        b"application",
        b"pdf",
    )
    internal = fetched[b"INTERNALDATE"].replace(tzinfo=dt.UTC)
    assert abs(internal - stored.internal_date.replace(microsecond=0)) < dt.timedelta(seconds=2)
    assert fetched[b"flags_after"] == (b"\\Seen",)
    assert operator.rt.store.list_messages(MARTIN)[0].flags == ("\\Seen",)


async def test_store_flags_reach_the_store(operator: Operator) -> None:
    for i in range(3):
        await asyncio.to_thread(operator.deliver, message(f"Message {i}"))

    def scenario() -> None:
        with operator.client() as client:
            client.select_folder("INBOX")
            added = client.add_flags([1, 2], [b"\\Flagged", b"$MDNSent"])
            assert {uid: set(flags) for uid, flags in added.items()} == {
                1: {b"$MDNSent", b"\\Flagged"},
                2: {b"$MDNSent", b"\\Flagged"},
            }
            client.remove_flags([2], [b"$MDNSent"])
            assert client.set_flags([3], [b"\\Seen", b"\\Answered"], silent=True) is None  # .SILENT
            client.add_flags([1], [b"\\Deleted"], silent=True)

    await asyncio.to_thread(scenario)
    flags = {m.uid: m.flags for m in operator.rt.store.list_messages(MARTIN)}
    assert flags == {
        1: ("$MDNSent", "\\Deleted", "\\Flagged"),
        2: ("\\Flagged",),
        3: ("\\Answered", "\\Seen"),
    }


async def test_search(operator: Operator) -> None:
    await asyncio.to_thread(
        operator.deliver, message("Résultats biologie", body="Hémoglobine normale.\r\n")
    )
    await asyncio.to_thread(
        operator.deliver, message("Compte rendu", From="Secretariat <secretariat@ch-exemple.test>")
    )
    await asyncio.to_thread(operator.deliver, message("Ordonnance", body="Doliprane 1000.\r\n"))

    def scenario() -> dict[str, list[int]]:
        with operator.client() as client:
            client.select_folder("INBOX")
            client.add_flags([2], [b"\\Seen"])
            today = dt.date.today()
            queries: dict[str, list[object]] = {
                "all": ["ALL"],
                "unseen": ["UNSEEN"],
                "seen": ["SEEN"],
                "from": ["FROM", "secretariat"],
                "subject": ["SUBJECT", "ordonnance"],
                "since": ["SINCE", today],
                "before": ["BEFORE", today],
                "uid": ["UID", "2:*"],
                "text": ["TEXT", "doliprane"],
                "not_or": ["NOT", "SEEN", "OR", "SUBJECT", "ordo", "BODY", "normale"],
                "seqset": ["2:3", "UNSEEN"],
            }
            found = {name: client.search(q) for name, q in queries.items()}
            found["utf8"] = client.search(["SUBJECT", "Résultats"], charset="UTF-8")
            return found

    found = await asyncio.to_thread(scenario)
    assert found == {
        "all": [1, 2, 3],
        "unseen": [1, 3],
        "seen": [2],
        "from": [2],
        "subject": [3],
        "since": [1, 2, 3],
        "before": [],
        "uid": [2, 3],
        "text": [3],
        "not_or": [1, 3],
        "seqset": [3],
        "utf8": [1],
    }


async def test_copy_move_uidplus(operator: Operator) -> None:
    for i in range(3):
        await asyncio.to_thread(operator.deliver, message(f"Dossier {i}"))

    def scenario() -> None:
        with operator.client() as client:
            client.select_folder("INBOX")
            client.add_flags([2], [b"\\Flagged"])
            client.copy([1, 2], "Archive")
            client.move([3], "Trash")  # RFC 6851
            assert client.search(["ALL"]) == [1, 2]
            client.select_folder("Archive")
            assert client.get_flags([1, 2]) == {1: (), 2: (b"\\Flagged",)}
            client.select_folder("Trash")
            assert [m[b"ENVELOPE"].subject for m in client.fetch([1], ["ENVELOPE"]).values()] == [
                b"Dossier 2"
            ]
            with pytest.raises(IMAPClientError, match="TRYCREATE"):
                client.copy([1], "Nulle-part")

    await asyncio.to_thread(scenario)
    await asyncio.to_thread(_uidplus_codes, operator)
    assert [m.subject for m in operator.rt.store.list_messages(MARTIN, folder="Archive")][-2:] == [
        "Dossier 1",
        "Dossier 0",
    ]


def _uidplus_codes(op: Operator) -> None:
    """COPYUID and APPENDUID (RFC 4315 §3), and MOVE's COPYUID before its EXPUNGE (RFC 6851
    §4.3), as they are on the wire."""
    raw = Raw(op.imaps_port, op.tls())
    try:
        raw.command("a", f"LOGIN {MARTIN} {PASSWORD}")
        validity = {}
        for folder in ("Archive", "Sent"):
            status = raw.command("s", f"STATUS {folder} (UIDVALIDITY UIDNEXT)")[0].decode()
            validity[folder] = int(status.split("UIDVALIDITY ")[1].split()[0].rstrip(")"))
        raw.command("b", "SELECT INBOX")
        copied = raw.command("c", "UID COPY 1:2 Archive")
        assert f"[COPYUID {validity['Archive']} 1:2 3:4]".encode() in copied[-1]
        moved = raw.command("d", "UID MOVE 1 Archive")
        assert f"OK [COPYUID {validity['Archive']} 1 5]".encode() in moved[0]
        assert moved[1] == b"* 1 EXPUNGE\r\n" and moved[-1].startswith(b"d OK")
        appended = raw.command("e", b"APPEND Sent {5+}\r\nHello")
        assert f"[APPENDUID {validity['Sent']} 1]".encode() in appended[-1]
    finally:
        raw.close()


async def test_append_expunge_close(operator: Operator) -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)

    def scenario() -> None:
        with operator.client() as client:
            validity = client.folder_status("Drafts", ["UIDVALIDITY"])[b"UIDVALIDITY"]
            result = client.append(
                "Drafts", message("Brouillon"), flags=[b"\\Draft"], msg_time=when
            )
            assert f"[APPENDUID {validity} 1]".encode() in result  # RFC 4315
            client.append("Drafts", message("Brouillon 2"))
            client.append("Drafts", message("Brouillon 3"), flags=[b"\\Deleted"])
            client.select_folder("Drafts")
            assert (
                client.fetch([1], ["INTERNALDATE"])[1][b"INTERNALDATE"].replace(tzinfo=dt.UTC)
                == when
            )
            client.add_flags([1, 2], [b"\\Deleted"])
            client.uid_expunge([2])  # UID EXPUNGE: only 2 (RFC 4315 §2.1)
            assert client.search(["ALL"]) == [1, 3]
            client.select_folder("Drafts", readonly=True)  # EXAMINE, then CLOSE: nothing expunged
            client.close_folder()
            assert client.folder_status("Drafts", ["MESSAGES"])[b"MESSAGES"] == 2
            client.select_folder("Drafts")
            client.close_folder()  # CLOSE expunges silently
            assert client.folder_status("Drafts", ["MESSAGES"])[b"MESSAGES"] == 0
            client.append("Drafts", message("Brouillon 4"))
            client.select_folder("Drafts")
            assert client.search(["ALL"]) == [4]  # UIDs never reused

    await asyncio.to_thread(scenario)
    events = [event for event, _, _ in operator.audit_events()]
    assert events.count("folder.appended") == 4 and events.count("folder.expunged") == 2


async def test_folders_list_status_and_management(operator: Operator) -> None:
    await asyncio.to_thread(operator.deliver, message("Un"))

    def scenario() -> None:
        with operator.client() as client:
            listed = {name: flags for flags, _, name in client.list_folders()}
            assert set(listed) == {"INBOX", "Sent", "Drafts", "Trash", "Archive"}
            assert b"\\Sent" in listed["Sent"] and b"\\Trash" in listed["Trash"]
            assert b"\\Drafts" in listed["Drafts"] and b"\\Archive" in listed["Archive"]
            assert client.find_special_folder(imapclient.imapclient.SENT) == "Sent"
            assert {n for _, _, n in client.list_sub_folders()} == set(listed)
            status = client.folder_status("INBOX", ["MESSAGES", "UNSEEN", "UIDNEXT", "UIDVALIDITY"])
            assert status[b"MESSAGES"] == 1 and status[b"UNSEEN"] == 1 and status[b"UIDNEXT"] == 2
            client.create_folder("Patients/Dupont Émile")
            client.create_folder("Patients")
            with pytest.raises(IMAPClientError, match="ALREADYEXISTS"):
                client.create_folder("Patients")
            client.rename_folder("Patients", "Dossiers")
            names = {name for _, _, name in client.list_folders()}
            assert {"Dossiers", "Dossiers/Dupont Émile"} <= names and "Patients" not in names
            client.delete_folder("Dossiers/Dupont Émile")
            for refused in (
                lambda: client.delete_folder("INBOX"),
                lambda: client.delete_folder("Sent"),
                lambda: client.rename_folder("Trash", "Corbeille"),
            ):
                with pytest.raises(IMAPClientError):
                    refused()
            return status[b"UIDVALIDITY"]

    validity = await asyncio.to_thread(scenario)
    with operator.rt.node.db.session() as session:
        inbox = session.execute(
            select(Folder).join(Mailbox).where(Mailbox.address == MARTIN, Folder.name == "INBOX")
        ).scalar_one()
        assert inbox.uid_validity == validity and inbox.uid_next == 2  # our Folder rows
