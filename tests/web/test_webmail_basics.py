"""The webmail over real HTTPS against a running operator: login, list, read, send, drafts,
flags, moves, shared mailboxes, the account page."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest
from sqlalchemy import update

from imap_fixtures import Operator, Trust, message
from mssante.audit.events import Actor
from mssante.ops.delegation import Delegations
from mssante.store.models import AccessRight, Account
from webhelpers import (
    DURAND,
    MARTIN,
    PASSWORD,
    Browser,
    code_now,
    next_step,
    webmail_operator,
)

SECRETARIAT = "secretariat@b.mssante.test"


@pytest.fixture
async def op(trust: Trust, tmp_path: Path, b_database: dict[str, str]) -> AsyncIterator[Operator]:
    async with webmail_operator(trust, tmp_path / "b", b_database) as running:
        yield running


async def deliver(op: Operator, raw: bytes, *to: str) -> None:
    await asyncio.to_thread(op.deliver, raw, *to)


def uids(page: str) -> list[int]:
    return [int(u) for u in re.findall(r'data-uid="(\d+)"', page)]


async def test_first_login_enrols_a_device_then_reads_the_inbox(op: Operator) -> None:
    await deliver(op, message("Résultats d'analyse"), MARTIN)
    async with Browser(op) as browser:
        await browser.login_enrolling()
        page = await browser.get("/webmail/f/INBOX")
        assert page.status_code == 200
        assert "Boîte de réception" in page.text
        assert "Résultats d&#39;analyse" in page.text
        read = await browser.get(f"/webmail/f/INBOX/m/{uids(page.text)[0]}")
        assert read.status_code == 200
        assert "Dr Paul Durand" in read.text
        body = await browser.get(f"/webmail/f/INBOX/m/{uids(page.text)[0]}/body")
    assert "Cordialement." in body.text
    assert "sandbox" in body.headers["content-security-policy"]
    assert "script-src" not in body.headers["content-security-policy"]  # default-src 'none'


async def test_a_password_alone_opens_nothing_but_the_enrolment(op: Operator) -> None:
    async with Browser(op) as browser:
        response = await browser.login()
        assert response.headers["location"] == "/webmail/enrol"
        inbox = await browser.get("/webmail/f/INBOX")
    assert inbox.status_code == 303
    assert inbox.headers["location"] == "/webmail/enrol"


async def test_the_device_code_is_then_required(op: Operator) -> None:
    async with Browser(op) as browser:
        secret = await browser.login_enrolling()
    async with Browser(op) as browser:
        refused = await browser.login(MARTIN)
        assert refused.status_code == 401
        assert "Adresse ou mot de passe incorrect" in refused.text
        next_step(op)
        accepted = await browser.login(MARTIN, code=code_now(op, secret))
    assert accepted.status_code == 303
    assert accepted.headers["location"] == "/webmail/"


async def test_the_list_pages_by_uid_newest_first(op: Operator) -> None:
    for i in range(12):
        await deliver(op, message(f"Message {i}"), MARTIN)
    op.rt.settings.web.page_size = 10
    async with Browser(op) as browser:
        await browser.login_enrolling()
        first = await browser.get("/webmail/f/INBOX")
        shown = uids(first.text)
        older = re.search(r'href="/webmail/f/INBOX\?before=(\d+)"', first.text)
        assert older, first.text
        second = await browser.get(f"/webmail/f/INBOX?before={older.group(1)}")
    assert shown == list(range(12, 2, -1))
    assert uids(second.text) == [2, 1]


async def test_search_finds_by_subject(op: Operator) -> None:
    await deliver(op, message("Compte rendu opératoire"), MARTIN)
    await deliver(op, message("Invitation congrès"), MARTIN)
    async with Browser(op) as browser:
        await browser.login_enrolling()
        found = await browser.get("/webmail/f/INBOX", params={"q": "OPÉRATOIRE".lower()})
    assert "Compte rendu" in found.text
    assert "Invitation" not in found.text


async def test_send_to_a_colleague_with_an_attachment(op: Operator) -> None:
    async with Browser(op) as browser:
        await browser.login_enrolling()
        await browser.get("/webmail/compose")
        sent = await browser.post(
            "/webmail/compose",
            {
                "to": DURAND,
                "subject": "Lettre de liaison",
                "body": "Bonjour,\nCi-joint.",
                "receipt": "on",
                "action": "send",
            },
            files={"attachments": ("compte-rendu é.pdf", b"%PDF-1.4 test", "application/pdf")},
        )
        assert sent.status_code == 303, sent.text
        assert sent.headers["location"].startswith("/webmail/f/Sent")
        listing = await browser.get("/webmail/f/Sent")
        assert "Lettre de liaison" in listing.text
        view = await browser.get(f"/webmail/f/Sent/m/{uids(listing.text)[0]}")
        assert 'data-status="delivered"' in view.text  # a local recipient: delivered at once
    raw = op.rt.store.list_messages(DURAND)[0]
    assert raw.subject == "Lettre de liaison"
    body = await asyncio.to_thread(
        op.rt.folders_for_tests.body if hasattr(op.rt, "folders_for_tests") else _body, op, DURAND
    )
    parsed = message_from_bytes(body, policy=default)
    assert parsed["Disposition-Notification-To"] == MARTIN
    assert parsed["X-MSS-NIL"] == "mssante-webmail"
    names = [p.get_filename() for p in parsed.iter_attachments()]
    assert names == ["compte-rendu é.pdf"]


def _body(op: Operator, address: str, folder: str = "INBOX") -> bytes:
    """The newest message of ``address``'s ``folder``, read as its owner."""
    from mssante.ops.folders import Caller, Folders

    folders = Folders(op.rt.node.db, op.rt.node.blobs)
    with op.rt.node.db.session() as session:
        account = session.query(Account).filter_by(login=address).one()
        caller = Caller(account.id, account.login)
    page = folders.page(caller, address, folder)
    data = folders.body(caller, address, folder, page.summaries[0].uid)
    assert data is not None
    return data


async def test_outside_the_trust_space_is_warned_then_refused(op: Operator) -> None:
    async with Browser(op) as browser:
        await browser.login_enrolling()
        warning = await browser.get("/webmail/check", params={"to": f"{DURAND}, x@gmail.com"})
        assert "x@gmail.com" in warning.text
        assert DURAND not in warning.text
        await browser.get("/webmail/compose")
        refused = await browser.post(
            "/webmail/compose",
            {"to": "x@gmail.com", "subject": "Test", "body": "b", "action": "send"},
        )
    assert refused.status_code == 400
    assert "n&#39;appartient pas à l&#39;espace de confiance MSSanté" in refused.text
    assert op.rt.store.list_messages(MARTIN, folder="Sent") == []  # nothing half-sent


async def test_drafts_are_saved_and_sent_later(op: Operator) -> None:
    async with Browser(op) as browser:
        await browser.login_enrolling()
        await browser.get("/webmail/compose")
        saved = await browser.post(
            "/webmail/compose",
            {"to": DURAND, "subject": "Brouillon", "body": "à finir", "action": "save"},
        )
        assert saved.headers["location"] == "/webmail/f/Drafts"
        drafts = await browser.get("/webmail/f/Drafts")
        uid = uids(drafts.text)[0]
        form = await browser.get(f"/webmail/compose?mode=draft&folder=Drafts&uid={uid}")
        assert "à finir" in form.text
        sent = await browser.post(
            "/webmail/compose",
            {
                "to": DURAND,
                "subject": "Brouillon",
                "body": "fini",
                "action": "send",
                "draft_uid": str(uid),
            },
        )
        assert sent.status_code == 303
        assert uids((await browser.get("/webmail/f/Drafts")).text) == []


async def test_reply_quotes_and_threads(op: Operator) -> None:
    await deliver(op, message("Question", body="Pouvez-vous voir ce patient ?\r\n"), MARTIN)
    async with Browser(op) as browser:
        await browser.login_enrolling()
        form = await browser.get("/webmail/compose?mode=reply&folder=INBOX&uid=1")
    assert "RE: Question" in form.text
    assert "&gt; Pouvez-vous voir ce patient ?" in form.text
    assert 'name="in_reply_to" value="&lt;' in form.text


async def test_flag_move_and_delete(op: Operator) -> None:
    await deliver(op, message("A classer"), MARTIN)
    async with Browser(op) as browser:
        await browser.login_enrolling()
        await browser.get("/webmail/f/INBOX/m/1")
        flagged = await browser.post("/webmail/f/INBOX/m/1/flag", {"name": "\\Flagged", "on": "1"})
        assert flagged.status_code == 303
        assert "flagged" in (await browser.get("/webmail/f/INBOX")).text
        await browser.get("/webmail/f/INBOX/m/1")
        moved = await browser.post("/webmail/f/INBOX/m/1/move", {"to": "Archive"})
        assert moved.status_code == 303
        assert uids((await browser.get("/webmail/f/INBOX")).text) == []
        archived = uids((await browser.get("/webmail/f/Archive")).text)
        assert len(archived) == 1
        await browser.post(f"/webmail/f/Archive/m/{archived[0]}/delete")
        trash = uids((await browser.get("/webmail/f/Trash")).text)
        assert len(trash) == 1
        await browser.post(f"/webmail/f/Trash/m/{trash[0]}/delete")
        assert uids((await browser.get("/webmail/f/Trash")).text) == []


async def test_a_member_reads_and_sends_as_the_shared_mailbox(op: Operator) -> None:
    delegations = Delegations(op.rt.node.db)
    delegations.create_org(SECRETARIAT, "Secrétariat", Actor("test"))
    delegations.grant(SECRETARIAT, MARTIN, AccessRight.SEND, Actor("test"))
    await deliver(op, message("Pour le secrétariat", To=SECRETARIAT), SECRETARIAT)
    async with Browser(op) as browser:
        await browser.login_enrolling()
        switched = await browser.post("/webmail/mailbox", {"address": SECRETARIAT})
        assert switched.status_code == 303
        inbox = await browser.get("/webmail/f/INBOX")
        assert "Pour le secrétariat" in inbox.text
        await browser.get(f"/webmail/f/INBOX/m/{uids(inbox.text)[0]}")
        await browser.get("/webmail/compose")
        sent = await browser.post(
            "/webmail/compose",
            {
                "sender": SECRETARIAT,
                "to": DURAND,
                "subject": "Rendez-vous",
                "body": "b",
                "action": "send",
            },
        )
        assert sent.status_code == 303, sent.text
    received = message_from_bytes(_body(op, DURAND), policy=default)
    assert received["From"] == SECRETARIAT
    assert received["Sender"] == MARTIN  # RFC 5322 §3.6.2: the person behind it
    events = [(e, actor, ctx) for e, actor, ctx in op.audit_events()]
    assert ("mailbox.delegated_send", MARTIN) in [(e, a) for e, a, _ in events]
    assert ("web.message_read", MARTIN) in [(e, a) for e, a, _ in events]


async def test_account_page_app_password_and_sessions(op: Operator) -> None:
    async with Browser(op) as browser:
        await browser.login_enrolling()
        page = await browser.get("/webmail/account")
        assert "Mots de passe d&#39;application" in page.text
        created = await browser.post("/webmail/account/app-passwords", {"label": "Thunderbird"})
        secret = re.search(r'data-testid="app-password">([^<]+)<', created.text)
        assert secret, created.text
        principal = await op.rt.auth.check_password_async(
            MARTIN, secret.group(1), peer="127.0.0.1", protocol="imap"
        )
        assert principal is not None and principal.method.value == "app_password"
        sessions = re.findall(
            r'data-testid="session"', (await browser.get("/webmail/account")).text
        )
        assert len(sessions) == 1
        everywhere = await browser.post("/webmail/logout-everywhere")
        assert everywhere.headers["location"] == "/webmail/login"
        assert (await browser.get("/webmail/f/INBOX")).status_code == 303


async def test_a_disabled_account_loses_its_session_at_the_next_request(op: Operator) -> None:
    async with Browser(op) as browser:
        await browser.login_enrolling()
        assert (await browser.get("/webmail/f/INBOX")).status_code == 200
        with op.rt.node.db.session() as session:
            session.execute(update(Account).where(Account.login == MARTIN).values(disabled=True))
        after = await browser.get("/webmail/f/INBOX")
    assert after.status_code == 303
    assert after.headers["location"] == "/webmail/login?reason=expired"


async def test_english_is_available(op: Operator) -> None:
    async with Browser(op) as browser:
        page = await browser.get("/webmail/login", headers={"Accept-Language": "en-GB,en;q=0.9"})
        assert "Log in" in page.text
        french = await browser.get("/webmail/login", headers={"Accept-Language": "de, fr;q=0.5"})
        assert "Connexion" in french.text


async def test_a_message_about_a_patient_carries_the_xdm_and_the_headers(op: Operator) -> None:
    import io
    import zipfile

    async with Browser(op) as browser:
        await browser.login_enrolling()
        await browser.get("/webmail/compose")
        form = {
            "to": DURAND,
            "subject": "",
            "body": "Compte rendu joint.",
            "action": "send",
            "patient": "on",
            "patient_ins": "2 55 08 14 168 025 38",
            "patient_kind": "NIR",
            "patient_family_name": "Dupont",
            "patient_given_names": "Marie Louise",
            "patient_birth_date": "1955-08-14",
            "patient_sex": "F",
            "patient_label": "Compte rendu opératoire",
        }
        sent = await browser.post(
            "/webmail/compose",
            form,
            files={"attachments": ("cr.pdf", b"%PDF-1.4 cr", "application/pdf")},
        )
        assert sent.status_code == 303, sent.text
        refused = await browser.post(
            "/webmail/compose", {**form, "patient_ins": "2 55 08 14 168 025 39"}
        )
    assert refused.status_code == 400  # a wrong key: said, and nothing sent
    assert "INS" in refused.text
    received = message_from_bytes(_body(op, DURAND), policy=default)
    assert received["Subject"] == "XDM/1.0/DDM+Compte rendu opératoire DUPONT Marie 14/08/1955"
    assert received["X-MSS-INS"] == "O"
    assert received["X-MSS-NIL"] == "mssante-webmail"
    assert received["Disposition-Notification-To"] == MARTIN  # on by default for a patient
    files = {p.get_filename(): p.get_content() for p in received.iter_attachments()}
    assert files["cr.pdf"] == b"%PDF-1.4 cr"
    package = zipfile.ZipFile(io.BytesIO(files["IHE_XDM.zip"]))
    metadata = package.read("IHE_XDM/SUBSET01/METADATA.XML").decode()
    assert "255081416802538^^^&amp;1.2.250.1.213.1.4.8&amp;ISO" in metadata
    assert len(op.rt.store.list_messages(DURAND)) == 1


async def test_new_mail_is_announced_by_server_sent_events(op: Operator) -> None:
    async with Browser(op) as browser:
        await browser.login_enrolling()
        async with browser.http.stream("GET", "/webmail/events") as events:
            assert events.headers["content-type"].startswith("text/event-stream")
            lines = events.aiter_lines()
            assert (await anext(lines)).startswith("retry:")
            await deliver(op, message("Nouveau résultat"), MARTIN)

            async def announced() -> str:
                async for line in lines:
                    if line.startswith("event:"):
                        return line
                return ""

            assert await asyncio.wait_for(announced(), 5) == "event: mail"


PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


class _ImageServer:
    """A plain HTTP server on loopback standing for a sender's image host; counts requests."""

    def __init__(self) -> None:
        self.hits = 0

    async def __aenter__(self) -> str:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            self.hits += 1
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n"
                + f"Content-Length: {len(PNG)}\r\n\r\n".encode()
                + PNG
            )
            await writer.drain()
            writer.close()

        self.server = await asyncio.start_server(answer, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/logo.png"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()


def _html_mail(url: str) -> bytes:
    html = f'<p>Bonjour</p><img src="{url}" alt="logo">'
    return message(
        "Lettre illustrée", body=html, **{"MIME-Version": "1.0", "Content-Type": "text/html"}
    )


async def test_remote_images_only_when_asked_and_fetched_by_the_server(
    trust: Trust, tmp_path: Path, b_database: dict[str, str]
) -> None:
    images = _ImageServer()
    async with (
        images as url,
        webmail_operator(
            trust, tmp_path / "b", b_database, remote_images_allow_private=True
        ) as running,
        Browser(running) as browser,
    ):
        await deliver(running, _html_mail(url), MARTIN)
        await browser.login_enrolling()
        read = await browser.get("/webmail/f/INBOX/m/1")
        assert 'data-testid="images-blocked"' in read.text
        blocked = await browser.get("/webmail/f/INBOX/m/1/body")
        assert "127.0.0.1:" not in blocked.text and images.hits == 0
        shown = await browser.get("/webmail/f/INBOX/m/1/body?images=1")
        proxied = re.search(r'src="(/webmail/f/INBOX/m/1/image\?u=[^"]+)"', shown.text)
        assert proxied, shown.text
        fetched = await browser.get(proxied.group(1).replace("&amp;", "&"))
        assert fetched.status_code == 200
        assert fetched.content == PNG and fetched.headers["content-type"] == "image/png"
        assert images.hits == 1
        other = await browser.get("/webmail/f/INBOX/m/1/image", params={"u": url + "?x"})
        assert other.status_code == 404  # only the URLs the message names
        assert images.hits == 1


async def test_the_image_fetcher_never_reaches_the_operators_own_network(op: Operator) -> None:
    images = _ImageServer()
    async with images as url, Browser(op) as browser:
        await deliver(op, _html_mail(url), MARTIN)
        await browser.login_enrolling()
        refused = await browser.get("/webmail/f/INBOX/m/1/image", params={"u": url})
    assert refused.status_code == 404
    assert images.hits == 0  # loopback refused before any connection


async def test_sent_shows_a_failure_with_its_reason_from_a_dsn(op: Operator) -> None:
    """A DSN (RFC 3464) about a message Martin sent is recorded when it is delivered to his
    inbox; his Sent view then says "échec" and why, for that recipient only."""
    from datetime import UTC, datetime

    from mssante.mail.dsn import Action, DeliveryReport, RecipientStatus, build_dsn

    async with Browser(op) as browser:
        await browser.login_enrolling()
        await browser.get("/webmail/compose")
        await browser.post(
            "/webmail/compose",
            {"to": f"{DURAND}, {MARTIN}", "subject": "Avis", "body": "b", "action": "send"},
        )
        sent = _body(op, MARTIN, "Sent")
        report = DeliveryReport(
            reporting_mta="smtp.b.mssante.test",
            sender=MARTIN,
            original=sent,
            arrival_date=datetime.now(UTC),
            recipients=(
                RecipientStatus(
                    DURAND, Action.FAILED, "5.1.1", "550 5.1.1 No such mailbox", "smtp.b.test"
                ),
            ),
        )
        await deliver(op, build_dsn(report, now=datetime.now(UTC)), MARTIN)
        listing = await browser.get("/webmail/f/Sent")
        view = await browser.get(f"/webmail/f/Sent/m/{uids(listing.text)[0]}")
    statuses = dict(re.findall(r'data-status="(\w+)"><span>([^<]+)</span>', view.text))
    assert statuses == {"failed": DURAND, "delivered": MARTIN}
    assert "550 5.1.1 No such mailbox" in view.text


async def test_changing_the_password_ends_the_other_sessions(op: Operator) -> None:
    new = "un-nouveau-mot-de-passe-7"
    async with Browser(op) as first, Browser(op) as second:
        secret = await first.login_enrolling()
        next_step(op)
        opened = await second.login(MARTIN, code=code_now(op, secret))
        assert opened.status_code == 303
        await second.get("/webmail/f/INBOX")
        await first.get("/webmail/account")
        next_step(op)
        form = {"current": PASSWORD, "code": code_now(op, secret), "new": new}
        mismatch = await first.post("/webmail/account/password", {**form, "confirm": new + "x"})
        assert mismatch.status_code == 400 and "Les deux mots de passe diffèrent" in mismatch.text
        wrong = await first.post(
            "/webmail/account/password", {**form, "current": "faux", "confirm": new}
        )
        assert wrong.status_code == 401
        weak = await first.post(
            "/webmail/account/password", {**form, "new": "court", "confirm": "court"}
        )
        assert weak.status_code == 400 and "12 caractères" in weak.text
        next_step(op)
        form["code"] = code_now(op, secret)
        changed = await first.post("/webmail/account/password", {**form, "confirm": new})
        assert changed.status_code == 200, changed.text
        assert "Mot de passe changé" in changed.text
        assert (await first.get("/webmail/f/INBOX")).status_code == 200  # this one goes on
        assert (await second.get("/webmail/f/INBOX")).status_code == 303  # the other ended
    assert (
        await op.rt.auth.check_password_async(MARTIN, PASSWORD, peer="x", protocol="imap") is None
    )
    assert ("auth.password_changed", MARTIN) in [(e, a) for e, a, _ in op.audit_events()]


async def test_a_patients_opposition_blocks_mail_about_them(op: Operator, tmp_path: Path) -> None:
    """BRIEF §7: recorded (here with the command line, on the operator's configuration), the
    opposition refuses the message with its reason, sends nothing, and is audited; lifted,
    the same message goes."""
    import subprocess
    import sys

    config = tmp_path / "operator.toml"
    config.write_text(_config_toml(op))
    cli = [sys.executable, "-m", "mssante", "patient", "opposition"]
    recorded = subprocess.run(
        [*cli, "add", "--config", str(config), "2 55 08 14 168 025 38", "--note", "oral"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert recorded.returncode == 0, recorded.stderr
    assert "255081416802538" in recorded.stdout
    bad = subprocess.run(
        [*cli, "add", "--config", str(config), "2 55 08 14 168 025 39"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode != 0 and "clé" in (bad.stderr + bad.stdout).lower()
    form = {
        "to": DURAND,
        "body": "Compte rendu",
        "action": "send",
        "patient": "on",
        "patient_ins": "255081416802538",
        "patient_family_name": "Dupont",
        "patient_given_names": "Marie",
        "patient_birth_date": "1955-08-14",
        "patient_sex": "F",
        "patient_label": "Compte rendu",
    }
    async with Browser(op) as browser:
        await browser.login_enrolling()
        await browser.get("/webmail/compose")
        refused = await browser.post("/webmail/compose", form)
        assert refused.status_code == 400
        assert "s&#39;est opposé à l&#39;échange de ses données" in refused.text
        assert op.rt.store.list_messages(DURAND) == []
        lifted = subprocess.run(
            [*cli, "remove", "--config", str(config), "255081416802538"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert lifted.returncode == 0, lifted.stderr
        sent = await browser.post("/webmail/compose", form)
        assert sent.status_code == 303
    events = [e for e, _, _ in op.audit_events()]
    assert events.count("patient.send_refused") == 1
    assert "patient.opposition_recorded" in events and "patient.opposition_lifted" in events
    assert len(op.rt.store.list_messages(DURAND)) == 1


def _config_toml(op: Operator) -> str:
    """A configuration file naming the running operator's database and data folder."""
    settings = op.rt.settings
    database = settings.database
    lines = [f'data_dir = "{settings.data_dir}"', "[database]", f'url = "{database.url}"']
    if database.schema_name:
        lines.append(f'schema_name = "{database.schema_name}"')
    return "\n".join(lines) + "\n"
