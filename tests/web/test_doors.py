"""One acceptance path, many doors (issue 11): the same message, refused for the same reason, at
SMTP submission (587, a real smtplib client), at the webmail (its compose form over HTTPS) and
by ``mssante send`` (the command line), each in its own protocol's words; nothing is stored or
queued, and the refusal is audited with the same event and code whatever the door."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from imap_fixtures import DURAND, MARTIN, PASSWORD, Operator, Trust
from mssante.audit.events import Actor
from mssante.cli.main import cli
from mssante.mail.patient import Document, Ins, Patient, build_xdm
from mssante.ops.patients import Oppositions
from mssante.store.models import QueueMessage
from webhelpers import Browser, code_now, next_step, webmail_operator

INS = "255081416802538"  # a valid INS (its key checks)
MAX_BYTES = 200_000
PER_HOUR = 4  # Durand's messages an hour, every door together


@dataclass(frozen=True)
class Case:
    name: str
    sender: str  # the login and envelope sender
    to: str
    code: str  # the refusal's stable code (ops/refusals.py)
    event: str
    smtp: tuple[int, str]  # what an SMTP client reads: the code, the enhanced status
    words: str  # what the webmail's form shows (French first)
    send_as: str = ""  # a mailbox the message claims to be from (envelope and From:)
    patient: bool = False
    big: bool = False


CASES = [
    Case(
        "opposed patient",
        MARTIN,
        DURAND,
        "patient_opposed",
        "patient.send_refused",
        (550, "5.7.1"),
        "ce patient s&#39;est opposé à l&#39;échange de ses données",
        patient=True,
    ),
    Case(
        "outside the trust space",
        MARTIN,
        "jean.dupont@gmail.com",
        "outside_trust_space",
        "submission.refused_recipient",
        (550, "5.7.1"),
        "n&#39;appartient pas à l&#39;espace de confiance MSSanté",
    ),
    Case(
        "spoofed From:",
        MARTIN,
        DURAND,
        "sender_not_allowed",
        "submission.refused_sender",
        (553, "5.7.1"),
        "vous ne pouvez pas envoyer avec l&#39;adresse directeur@ars.sante.fr",
        send_as="directeur@ars.sante.fr",
    ),
    Case(
        "over the size",
        MARTIN,
        DURAND,
        "too_large",
        "smtp.refused_too_large",
        (552, "5.3.4"),
        "message trop volumineux",
        big=True,
    ),
    Case(
        "over the sending limit",
        DURAND,
        MARTIN,
        "sending_limit",
        "message.refused_sending_limit",
        (451, "4.7.1"),
        "limite d&#39;envoi atteinte pour dr.durand@b.mssante.test",
    ),
]


@dataclass
class World:
    """Operator B, and what its users' clients hold: app passwords (mail clients, once TOTP is
    on) and TOTP secrets (the webmail)."""

    op: Operator
    app_passwords: dict[str, str]
    totp: dict[str, str]


@pytest.fixture
async def world(trust: Trust, tmp_path: Path, b_database: dict[str, str]) -> AsyncIterator[World]:
    running = webmail_operator(trust, tmp_path / "b", b_database)
    smtp = running.settings.smtp.model_copy(
        update={"max_message_bytes": MAX_BYTES, "max_messages_per_hour": PER_HOUR}
    )
    running.settings = running.settings.model_copy(update={"smtp": smtp})
    async with running as op:
        passwords = {
            address: op.rt.auth.add_app_password(address, "client", Actor(address)).password
            for address in (MARTIN, DURAND)
        }
        yield World(op, passwords, {})


def _xdm() -> bytes:
    patient = Patient(Ins.parse(INS), "DUPONT", ("Marie",), date(1955, 8, 14), "F")
    document = Document("compte-rendu.txt", b"Compte rendu", "text/plain", "Compte rendu")
    created = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    return build_xdm(
        patient, [document], author=MARTIN, author_id_nat="810001234565", created=created
    )


def _payload(case: Case) -> bytes:
    """An attachment that makes the message larger than the limit once encoded (base64), while
    the webmail's form still takes it."""
    return b"x" * (MAX_BYTES - 20_000) if case.big else b""


def _message(case: Case) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = case.send_as or case.sender
    if case.send_as:
        msg["Sender"] = case.sender
    msg["To"] = case.to
    msg["Subject"] = f"Essai : {case.name}"
    msg["Message-ID"] = make_msgid(domain="b.mssante.test")
    msg.set_content("Bonjour,\n")
    if case.patient:
        msg.add_attachment(_xdm(), maintype="application", subtype="zip", filename="IHE_XDM.zip")
    if case.big:
        msg.add_attachment(
            _payload(case), maintype="application", subtype="octet-stream", filename="gros.bin"
        )
    return msg


# -- the three doors -----------------------------------------------------------------------------


def _tls(op: Operator) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(op.ca))
    ctx.check_hostname = False
    return ctx


def submission(world: World, case: Case, _: Path) -> tuple[int, str]:
    """SMTP submission on 587 (STARTTLS, AUTH): the reply that refused the message."""
    op = world.op
    with smtplib.SMTP("127.0.0.1", op.rt.settings.smtp.submission_port, timeout=30) as smtp:
        smtp.starttls(context=_tls(op))
        smtp.login(case.sender, world.app_passwords[case.sender])
        try:
            refused = smtp.send_message(_message(case), from_addr=case.send_as or case.sender)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            return code, text.decode()
        except smtplib.SMTPResponseException as exc:
            text = exc.smtp_error
            return exc.smtp_code, text.decode() if isinstance(text, bytes) else text
    raise AssertionError(f"accepted: {refused}")


def command_line(world: World, case: Case, tmp: Path) -> tuple[int, str]:
    """``mssante send``: its exit status and what it printed."""
    op = world.op
    config = tmp / "send.toml"
    settings = op.rt.settings
    config.write_text(
        f'[smtp]\nlisten_host = "127.0.0.1"\nsubmission_port = {settings.smtp.submission_port}\n'
        f'[pki]\ntrust_anchors = ["{settings.pki.trust_anchors[0]}"]\n'
    )
    args = ["send", "--config", str(config), "--from", case.sender, "--to", case.to]
    args += ["--subject", f"Essai : {case.name}", "--body", "Bonjour"]
    if case.send_as:
        args += ["--as", case.send_as]
    for name, content in (
        ("IHE_XDM.zip", _xdm() if case.patient else b""),
        ("gros.bin", _payload(case)),
    ):
        if content:
            path = tmp / name
            path.write_bytes(content)
            args += ["--attach", str(path)]
    result = CliRunner().invoke(
        cli, args, env={"MSSANTE_PASSWORD": world.app_passwords[case.sender]}
    )
    return result.exit_code, result.output


async def _enrol(world: World) -> None:
    """Both users' first webmail login (TOTP enrolment), before the clock is moved."""
    for address in (MARTIN, DURAND):
        async with Browser(world.op) as browser:
            world.totp[address] = await browser.login_enrolling(address, PASSWORD)


async def _webmail_login(world: World, browser: Browser, address: str) -> None:
    next_step(world.op)  # a code serves once per 30 s step: the next step's code
    response = await browser.login(address, PASSWORD, code_now(world.op, world.totp[address]))
    assert response.status_code == 303, response.text


async def webmail(world: World, case: Case, _: Path) -> tuple[int, str]:
    """The compose form: its status and page."""
    async with Browser(world.op) as browser:
        await _webmail_login(world, browser, case.sender)
        await browser.get("/webmail/compose")
        form: dict[str, Any] = {
            "sender": case.send_as or case.sender,
            "to": case.to,
            "subject": f"Essai : {case.name}",
            "body": "Bonjour",
            "action": "send",
        }
        if case.patient:
            form |= {
                "patient": "on",
                "patient_ins": INS,
                "patient_family_name": "Dupont",
                "patient_given_names": "Marie",
                "patient_birth_date": "1955-08-14",
                "patient_sex": "F",
                "patient_label": "Compte rendu",
            }
        files = (
            {"attachments": ("gros.bin", _payload(case), "application/octet-stream")}
            if case.big
            else None
        )
        response = await browser.post("/webmail/compose", form, files=files)
        return response.status_code, response.text


def _stored(op: Operator) -> tuple[int, int, int, int]:
    """Messages in Martin's and Durand's INBOX and Sent, and queued messages."""
    store = op.rt.store
    with op.rt.node.db.session() as session:
        queued = session.execute(select(func.count()).select_from(QueueMessage)).scalar_one()
    boxes = [
        len(store.list_messages(a, folder=f, limit=1000))
        for a in (MARTIN, DURAND)
        for f in ("INBOX", "Sent")
    ]
    return (boxes[0] + boxes[2], boxes[1], boxes[3], queued)


def _refusals(op: Operator) -> list[tuple[str, str, str]]:
    return [
        (e, str(c.get("code", "")), str(c.get("via", "")))
        for e, _, c in op.audit_events()
        if str(c.get("code", ""))
    ]


async def _use_up_durands_allowance(world: World) -> None:
    """Durand sends his hourly allowance (through submission): every door is then refused."""
    ok = Case("allowance", DURAND, MARTIN, "", "", (250, ""), "")
    for _ in range(PER_HOUR):

        def send() -> None:
            port = world.op.rt.settings.smtp.submission_port
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
                s.starttls(context=_tls(world.op))
                s.login(DURAND, world.app_passwords[DURAND])
                s.send_message(_message(ok))

        await asyncio.to_thread(send)


async def test_every_door_refuses_the_same_message_for_the_same_reason(
    world: World, tmp_path: Path
) -> None:
    op = world.op
    Oppositions(op.rt.node.db).record(INS, Actor("test"), note="refus oral")
    await _enrol(world)
    await _use_up_durands_allowance(world)
    before = await asyncio.to_thread(_stored, op)
    for case in CASES:
        smtp_code, smtp_text = await asyncio.to_thread(submission, world, case, tmp_path)
        assert (smtp_code, smtp_text[:5]) == case.smtp, (case.name, smtp_code, smtp_text)
        exit_code, printed = await asyncio.to_thread(command_line, world, case, tmp_path)
        assert exit_code == 1, (case.name, printed)
        assert f"{case.smtp[0]} {case.smtp[1]}" in printed, (case.name, printed)
        status, page = await webmail(world, case, tmp_path)
        assert status == 400, (case.name, status)
        assert case.words in page, (case.name, page[-3000:])
        assert await asyncio.to_thread(_stored, op) == before, case.name  # nothing kept
    seen = _refusals(op)
    for case in CASES:
        if case.code == "too_large":  # the SMTP listener bounds the data it reads (RFC 1870)
            continue
        vias = {via for event, code, via in seen if (event, code) == (case.event, case.code)}
        assert vias == {"submission", "webmail"}, (case.name, seen)  # `send` is a submission
    events = [e for e, _, _ in op.audit_events()]
    assert events.count("smtp.refused_too_large") >= 3


async def test_a_message_about_an_opposed_patient_is_refused_by_its_xdm_alone(
    world: World,
) -> None:
    """The issue's case: no form field names the patient, only the XDM's metadata; sent with
    an app password over submission, it is refused, and delivered once the opposition is
    lifted."""
    op = world.op
    opposition = Oppositions(op.rt.node.db)
    opposition.record(INS, Actor("test"))
    app_password = world.app_passwords[MARTIN]
    case = CASES[0]

    def send() -> tuple[int, str]:
        with smtplib.SMTP("127.0.0.1", op.rt.settings.smtp.submission_port, timeout=30) as smtp:
            smtp.starttls(context=_tls(op))
            smtp.login(MARTIN, app_password)
            try:
                smtp.send_message(_message(case))
            except smtplib.SMTPDataError as exc:
                return exc.smtp_code, exc.smtp_error.decode()
        return 250, ""

    code, text = await asyncio.to_thread(send)
    assert code == 550 and "patient" in text
    assert op.rt.store.list_messages(DURAND) == []
    opposition.lift(INS, Actor("test"))
    assert await asyncio.to_thread(send) == (250, "")
    assert [m.subject for m in op.rt.store.list_messages(DURAND)] == [f"Essai : {case.name}"]


async def test_the_webmails_live_events_need_no_imap_listener(
    trust: Trust, tmp_path: Path, b_database: dict[str, str]
) -> None:
    """Issue 11: the change bus is the runtime's, not the IMAP start-up's: with both IMAP ports
    off, a message submitted for Martin reaches his open webmail page as an event."""
    running = webmail_operator(trust, tmp_path / "b", b_database)
    imap = running.settings.imap.model_copy(update={"port": 0, "tls_port": 0})
    running.settings = running.settings.model_copy(update={"imap": imap})
    async with running as op, Browser(op) as browser:
        await browser.login_enrolling(MARTIN, PASSWORD)
        async with browser.http.stream("GET", "/webmail/events") as events:
            assert events.status_code == 200
            lines = events.aiter_lines()
            assert (await anext(lines)).startswith("retry:")
            ok = Case("hello", DURAND, MARTIN, "", "", (250, ""), "")

            def send() -> None:
                with smtplib.SMTP("127.0.0.1", op.rt.settings.smtp.submission_port) as smtp:
                    smtp.starttls(context=_tls(op))
                    smtp.login(DURAND, PASSWORD)
                    smtp.send_message(_message(ok))

            await asyncio.to_thread(send)
            line = await asyncio.wait_for(_next_event(lines), 30)
            assert line == "event: mail"


async def _next_event(lines: AsyncIterator[str]) -> str:
    async for line in lines:
        if line.startswith("event:"):
            return line
    return ""
