"""Writing mail in the webmail: new, reply, reply-all, forward, drafts, attachments, the
"message about a patient" option, recipients from the directory (docs/webmail.md "Compose").

Stages of a send: the form is read (sizes bounded while reading) → the message is built
(RFC 5322, MIME; a patient's message gets its XDM package, subject and X-MSS headers, BRIEF §7)
→ the acceptance path (``ops/acceptance.py``) checks it as it checks every door's mail (the
trust space, ``From:``, the patients' oppositions read from the XDM, the sending limit) and
stores it; a refusal is shown on the form.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.errors import HeaderParseError
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, getaddresses, make_msgid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData, UploadFile

from mssante.errors import MssanteError
from mssante.mail.patient import (
    Document,
    Ins,
    InsKind,
    Patient,
    build_xdm,
    is_qualified,
    patient_headers,
    xdm_subject,
)
from mssante.mail.reading import MessageView, parse_message, quote_for_reply
from mssante.ops.acceptance import MessageRefused, check_trust_space, domain_of
from mssante.ops.folders import AccessDenied, FolderNotFound
from mssante.web.context import PREFIX, Visit, WebContext, peer_of, send_mail
from mssante.web.login import changing, visit
from mssante.web.mail import UID_MAX, check_names, expunge_one, read_raw

_NO_DRAFTS = (
    "Vous ne pouvez pas enregistrer de brouillon dans cette boîte (droit de lecture seulement). "
    "/ You may not save drafts in this mailbox (read only)."
)
SOFTWARE = "mssante-webmail"  # X-MSS-NIL: the sending software's reference (BRIEF §7)
_MAX_RECIPIENTS_FIELD = 20_000
# What may not stand in a field that becomes a header line: CR, LF and every other control
# character (NUL, VT, FF, the C1 set with NEL…) and the Unicode line and paragraph separators,
# all of which Python's email package counts as line breaks (a tab is allowed: it is header
# whitespace). Refused with the form shown again, never a 500 (issue 12).
_NOT_IN_A_HEADER = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_HEADER_FIELDS = (
    ("sender", "L'expéditeur"),
    ("to", "Le champ « À »"),
    ("cc", "Le champ « Cc »"),
    ("subject", "L'objet"),
    ("in_reply_to", "L'en-tête In-Reply-To (réponse)"),
    ("references", "L'en-tête References (réponse)"),
)
_MIME_TOKEN = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,127}")


class ComposeError(MssanteError):
    """The form cannot become a message; ``public`` is shown to the writer."""

    def __init__(self, public: str) -> None:
        super().__init__(public)
        self.public = public


@dataclass
class Draft:
    """What the compose form shows and sends."""

    sender: str = ""
    to: str = ""
    cc: str = ""
    subject: str = ""
    body: str = ""
    in_reply_to: str = ""
    references: str = ""
    receipt: bool = False
    forward: str = ""  # "folder/uid" of a message attached as message/rfc822
    draft_uid: int | None = None
    patient: dict[str, str] = field(default_factory=dict)


def addresses(text: str) -> list[str]:
    return [a.strip() for _, a in getaddresses([text.replace(";", ",")]) if a.strip()]


def compose_router(ctx: WebContext) -> APIRouter:
    router = APIRouter(prefix=PREFIX)

    @router.get("/compose")
    async def compose_page(
        request: Request, mode: str = "new", folder: str = "", uid: int = 0, to: str = ""
    ) -> Response:
        current = visit(ctx, request)
        check_names(folder, uid)
        draft = Draft(sender=current.mailbox, to=to[:2000])
        if mode != "new" and folder and uid:
            raw = await read_raw(ctx, current, folder, uid)
            view = await asyncio.to_thread(parse_message, raw, ctx.settings.mime)
            draft = _prefilled(mode, view, current, folder, uid)
        return await _form(ctx, request, current, draft)

    @router.post("/compose")
    async def send(request: Request) -> Response:
        form = await request.form(
            max_files=50, max_fields=60, max_part_size=ctx.settings.smtp.max_message_bytes
        )
        current = changing(ctx, request, _text(form, "csrf"))
        draft = _draft_of(form, current)
        try:
            check_header_fields(draft)
            files = await _uploads(form, ctx.settings.smtp.max_message_bytes)
            raw, recipients = await asyncio.to_thread(_build, ctx, current, draft, files)
            if _text(form, "action") == "save":
                await _save_draft(ctx, current, draft, raw)
                return RedirectResponse(f"{PREFIX}/f/Drafts", status_code=303)
            await send_mail(
                ctx, current.session.login, draft.sender, recipients, raw, peer=peer_of(request)
            )
        except (ComposeError, MessageRefused) as exc:
            return await _form(ctx, request, current, draft, error=exc.public, status=400)
        except AccessDenied:  # a delegate without the append right saving a draft
            return await _form(ctx, request, current, draft, error=_NO_DRAFTS, status=403)
        if draft.draft_uid:
            await _drop_draft(ctx, current, draft.draft_uid)
        return RedirectResponse(f"{PREFIX}/f/Sent?sent=1", status_code=303)

    @router.get("/recipients")
    async def recipients(request: Request, q: str = "") -> Response:
        """Type-ahead from the operator's copy of the national directory."""
        current = visit(ctx, request)
        word = q.replace(";", ",").split(",")[-1].strip()
        results: list[Any] = []
        if len(word) >= 2:
            try:
                results = await asyncio.to_thread(ctx.directory.search, word, 8)
            except MssanteError:
                results = []
        return ctx.render(request, "_suggestions.html", visit=current, results=results)

    @router.get("/check")
    def check(request: Request, to: str = "", cc: str = "") -> Response:
        """The addresses typed so far that are outside the trust space (a warning while
        typing; the send itself refuses them)."""
        current = visit(ctx, request)
        outside = [
            a
            for a in addresses(f"{to[:_MAX_RECIPIENTS_FIELD]},{cc[:_MAX_RECIPIENTS_FIELD]}")
            if check_trust_space(ctx.whitelist(), ctx.local_domains, a) is not None
        ]
        return ctx.render(request, "_outside.html", visit=current, outside=outside)

    return router


async def _form(
    ctx: WebContext,
    request: Request,
    current: Visit,
    draft: Draft,
    *,
    error: str = "",
    status: int = 200,
) -> Response:
    senders = sorted(
        await asyncio.to_thread(ctx.accounts.sendable_addresses, current.session.login)
    )
    return ctx.render(
        request,
        "compose.html",
        status,
        visit=current,
        draft=draft,
        senders=senders,
        error=error,
        max_mib=ctx.settings.smtp.max_message_bytes // (1024 * 1024),
    )


def _prefilled(mode: str, view: MessageView, current: Visit, folder: str, uid: int) -> Draft:
    if mode == "draft":
        return Draft(
            sender=current.mailbox,
            to=", ".join(view.to),
            cc=", ".join(view.cc),
            subject=view.subject,
            body=view.text or "",
            receipt=bool(view.disposition_notification_to),
            draft_uid=uid,
        )
    if mode == "forward":
        return Draft(
            sender=current.mailbox, subject=_prefixed("Tr", view.subject), forward=f"{folder}/{uid}"
        )
    others: list[str] = []
    if mode == "all":
        mine = current.mailbox.lower()
        others = [a for a in (*view.to, *view.cc) if mine not in a.lower()]
    return Draft(
        sender=current.mailbox,
        to=", ".join(view.reply_to or (view.from_,)),
        cc=", ".join(others),
        subject=_prefixed("RE", view.subject),
        body="\n\n" + quote_for_reply(view),
        in_reply_to=view.message_id,
        references=f"{view.references} {view.message_id}".strip(),
    )


def _prefixed(prefix: str, subject: str) -> str:
    return subject if subject.lower().startswith(prefix.lower() + ":") else f"{prefix}: {subject}"


def header_refusal(label: str) -> str:
    return (
        f"{label} ne peut contenir ni retour à la ligne ni caractère de contrôle : "
        "corrigez-le. Rien n'a été envoyé ni enregistré."
    )


def check_header_fields(draft: Draft) -> None:
    """Every field that becomes a header (or the envelope) is one line of printable text;
    otherwise a :class:`ComposeError` naming the field, before anything is built."""
    for name, label in _HEADER_FIELDS:
        if _NOT_IN_A_HEADER.search(getattr(draft, name)):
            raise ComposeError(header_refusal(label))
    if any(_NOT_IN_A_HEADER.search(value) for value in draft.patient.values()):
        raise ComposeError(header_refusal("Une information du patient"))


def _text(form: FormData, name: str, limit: int = 1000) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


def _draft_of(form: FormData, current: Visit) -> Draft:
    uid = _text(form, "draft_uid")
    patient = {
        k: _text(form, f"patient_{k}", 200)
        for k in ("ins", "kind", "family_name", "given_names", "birth_date", "sex", "label")
    }
    return Draft(
        sender=_text(form, "sender", 320) or current.mailbox,
        to=_text(form, "to", _MAX_RECIPIENTS_FIELD),
        cc=_text(form, "cc", _MAX_RECIPIENTS_FIELD),
        subject=_text(form, "subject", 900),
        body=_text(form, "body", 5_000_000),
        in_reply_to=_text(form, "in_reply_to", 998),
        references=_text(form, "references", 5000),
        receipt=_text(form, "receipt") == "on",
        forward=_text(form, "forward", 300),
        draft_uid=int(uid) if uid.isdecimal() and int(uid) <= UID_MAX else None,
        patient=patient if _text(form, "patient") == "on" else {},
    )


@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str
    content: bytes


async def _uploads(form: FormData, limit: int) -> list[Upload]:
    files: list[Upload] = []
    total = 0
    for value in form.getlist("attachments"):
        if not isinstance(value, UploadFile) or not value.filename:
            continue
        if _NOT_IN_A_HEADER.search(value.filename):
            raise ComposeError(header_refusal("Le nom d'une pièce jointe"))
        content = await value.read(limit + 1)
        total += len(content)
        if total > limit:
            raise ComposeError("Les pièces jointes dépassent la taille autorisée.")
        files.append(
            Upload(value.filename, value.content_type or "application/octet-stream", content)
        )
    return files


def _build(
    ctx: WebContext, current: Visit, draft: Draft, files: Sequence[Upload]
) -> tuple[bytes, list[str]]:
    """The message's bytes (CRLF) and its recipients."""
    check_header_fields(draft)  # checked by the route already; _build never trusts it
    recipients = addresses(draft.to) + addresses(draft.cc)
    msg = EmailMessage(policy=SMTP)
    _header(msg, "From", draft.sender, "L'expéditeur")
    if draft.sender.lower() != current.session.login.lower():
        msg["Sender"] = current.session.login  # RFC 5322 §3.6.2: who wrote for the mailbox
    if draft.to:
        _header(msg, "To", ", ".join(addresses(draft.to)), "Le champ « À »")
    if draft.cc:
        _header(msg, "Cc", ", ".join(addresses(draft.cc)), "Le champ « Cc »")
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=domain_of(draft.sender) or None)
    if draft.in_reply_to:
        _header(msg, "In-Reply-To", draft.in_reply_to, "L'en-tête In-Reply-To (réponse)")
        _header(msg, "References", draft.references, "L'en-tête References (réponse)")
    msg["X-MSS-NIL"] = SOFTWARE
    if draft.receipt or draft.patient:
        _header(msg, "Disposition-Notification-To", draft.sender, "L'expéditeur")  # RFC 8098
    msg.set_content(draft.body or "\n")
    subject = draft.subject
    if draft.patient:
        subject = _patient_part(ctx, msg, current, draft, files)
    else:
        for upload in files:
            _attach(msg, upload.filename, upload.content_type, upload.content)
    if draft.forward:
        _attach_forwarded(ctx, current, msg, draft.forward)
    _header(msg, "Subject", subject, "L'objet")
    return msg.as_bytes(), recipients


def _header(msg: EmailMessage, name: str, value: str, label: str) -> None:
    """A header from what the writer typed: a value the email package cannot make a header of
    (it raises ValueError for a line break, IndexError for a lone ``"`` in an address) is the
    form's error, not the server's."""
    try:
        msg[name] = value
        msg[name].fold(policy=SMTP)  # where an unfoldable value shows itself
    except (ValueError, IndexError, HeaderParseError) as exc:
        del msg[name]
        raise ComposeError(
            f"{label} n'est pas valide : corrigez-le. Rien n'a été envoyé ni enregistré."
        ) from exc


def _attach(msg: EmailMessage, filename: str, content_type: str, content: bytes) -> None:
    maintype, _, subtype = content_type.partition("/")
    subtype = subtype.partition(";")[0].strip()
    if (
        maintype == "text"
        or not _MIME_TOKEN.fullmatch(maintype)
        or not _MIME_TOKEN.fullmatch(subtype)
    ):
        maintype, subtype = "application", "octet-stream"
    msg.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)


def _attach_forwarded(ctx: WebContext, current: Visit, msg: EmailMessage, forward: str) -> None:
    folder, _, uid = forward.rpartition("/")
    if not uid.isdecimal() or int(uid) > UID_MAX or not folder.isprintable():
        return
    try:
        raw = ctx.folders.body(current.caller, current.mailbox, folder, int(uid))
    except (AccessDenied, FolderNotFound):
        raw = None
    if raw is not None:
        msg.add_attachment(
            raw, maintype="application", subtype="octet-stream", filename="message.eml"
        )


def _patient_part(
    ctx: WebContext, msg: EmailMessage, current: Visit, draft: Draft, files: Sequence[Upload]
) -> str:
    """BRIEF §7: the documents as they are plus the IHE_XDM.zip with the patient's INS; the
    subject ``XDM/1.0/DDM+…``; ``X-MSS-INS`` (and ``X-MSS-NIL``, already set)."""
    patient = _patient(draft.patient)  # its opposition is the acceptance path's to honour
    documents = [Document(f.filename, f.content, f.content_type, f.filename) for f in files]
    if not documents:
        body = (draft.body or "").encode("utf-8")
        documents = [Document("message.txt", body, "text/plain", draft.subject or "Message")]
    for upload in files:
        _attach(msg, upload.filename, upload.content_type, upload.content)
    author = ctx.accounts.get(current.session.login)
    package = build_xdm(
        patient,
        documents,
        author=current.session.login,
        # The writer's idNat (RPPS/ADELI); an account without one (an application) is named
        # by its operator's structure.
        author_id_nat=author.id_nat or ctx.settings.operator.structure_id or "inconnu",
        created=datetime.now(UTC),
    )
    msg.add_attachment(package, maintype="application", subtype="zip", filename="IHE_XDM.zip")
    for name, value in patient_headers(qualified_ins=is_qualified(patient.ins), software=SOFTWARE):
        if name not in msg:
            msg[name] = value
    return xdm_subject(draft.patient.get("label") or draft.subject or "Document", patient)


def _patient(values: dict[str, str]) -> Patient:
    try:
        kind = InsKind[values.get("kind", "NIR").upper() or "NIR"]
    except KeyError:
        kind = InsKind.NIR
    try:
        born = date.fromisoformat(values.get("birth_date", ""))
    except ValueError as exc:
        raise ComposeError("Date de naissance du patient invalide (AAAA-MM-JJ).") from exc
    try:
        return Patient(
            ins=Ins.parse(values.get("ins", ""), kind=kind),
            family_name=values.get("family_name", ""),
            given_names=tuple(values.get("given_names", "").replace(",", " ").split()),
            birth_date=born,
            sex=values.get("sex", "I") or "I",
        )
    except MssanteError as exc:
        raise ComposeError(str(getattr(exc, "public", exc))) from exc


async def _save_draft(ctx: WebContext, current: Visit, draft: Draft, raw: bytes) -> None:
    await asyncio.to_thread(
        ctx.folders.append,
        current.caller,
        current.mailbox,
        "Drafts",
        raw,
        flags=["\\Draft", "\\Seen"],
    )
    if draft.draft_uid:
        await _drop_draft(ctx, current, draft.draft_uid)


async def _drop_draft(ctx: WebContext, current: Visit, uid: int) -> None:
    await expunge_one(ctx, current, "Drafts", uid)
