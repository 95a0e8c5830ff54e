"""Reading mail in the webmail: folders, the message list, the read view, attachments, flags,
moves, read receipts, new-mail events (docs/webmail.md "Mail").

Every route goes through the folder operations with the visitor's :class:`Caller`: a message
of a mailbox the person may not read answers 404, the same as a message that does not exist,
and so does an operation beyond the person's grant (a read-only delegate deleting). What the
person may do is the one authorization rule's answer (:mod:`mssante.ops.rights`, through
``Folders.rights``): the read view shows only the buttons it allows.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from email.utils import getaddresses
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from mssante.audit.events import AuditEvent, AuditRecord
from mssante.mail.reading import MessageView, attachment_bytes, parse_message
from mssante.mail.receipts import MdnDecision, build_mdn, mdn_decision
from mssante.ops.acceptance import MessageRefused
from mssante.ops.folders import (
    AccessDenied,
    FlagMode,
    FolderError,
    FolderInfo,
    FolderNotFound,
)
from mssante.ops.receipts import statuses
from mssante.ops.rights import Operation
from mssante.web.context import PREFIX, Visit, WebContext, peer_of, send_mail
from mssante.web.login import changing, visit
from mssante.web.sanitize import sanitize_html, text_to_html
from mssante.web.sessions import SessionInfo, stream_lifetime

UID_MAX = 2**32 - 1  # RFC 9051 §9: a UID is a 32-bit nz-number
MDN_SENT_FLAG = "$MDNSent"  # RFC 3503: a receipt was sent (or declined) for this message
FLAGGED, SEEN = "\\Flagged", "\\Seen"
_EVENT_KEEPALIVE = 25.0  # seconds between SSE comments, under common proxy idle timeouts
BODY_CSP = (
    "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'; "
    "sandbox allow-popups allow-popups-to-escape-sandbox"
)
# The passive types a part may be shown as, inline, when the page asks (``?inline=1``: a
# ``cid:`` image of a body): nothing a browser runs script in or renders as a document. Any
# other type (image/svg+xml, text/html, application/xhtml+xml, text/xml, application/xml,
# javascript, application/octet-stream, …) and any part not asked inline is a download:
# application/octet-stream, ``Content-Disposition: attachment`` (issue 12).
INLINE_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain"}
)
ATTACHMENT_CSP = "default-src 'none'; sandbox"


def not_found() -> HTTPException:
    return HTTPException(status_code=404, detail="not_found")


def check_names(folder: str, *uids: int | None) -> None:
    """A folder name with a control character, or a UID beyond 32 bits, names nothing: 404, as
    for a message that does not exist, before the database sees it (SQLite cannot bind an
    integer of 2^63 or more, PostgreSQL refuses NUL in a string: either was a 500)."""
    if not folder.isprintable() or any(u is not None and abs(u) > UID_MAX for u in uids):
        raise not_found()


def mail_router(ctx: WebContext) -> APIRouter:
    router = APIRouter(prefix=PREFIX)

    @router.get("/")
    def home() -> Response:
        return RedirectResponse(f"{PREFIX}/f/INBOX", status_code=303)

    @router.get("/f/{folder:path}/m/{uid}/body")
    async def body(request: Request, folder: str, uid: int, images: int = 0) -> Response:
        """The sanitised HTML of a message, for the read view's sandboxed iframe, with a CSP
        of its own: no script at all, images from this server only."""
        current = visit(ctx, request)
        check_names(folder, uid)
        raw = await read_raw(ctx, current, folder, uid)
        view = await asyncio.to_thread(parse_message, raw, ctx.settings.mime)
        html = await asyncio.to_thread(_body_html, view, folder, uid, allow_images=bool(images))
        page = (
            '<!doctype html><html><head><meta charset="utf-8">'
            '<base target="_blank"></head><body>' + html + "</body></html>"
        )
        return Response(page, media_type="text/html", headers={"Content-Security-Policy": BODY_CSP})

    @router.get("/f/{folder:path}/m/{uid}/image")
    async def image(request: Request, folder: str, uid: int, u: str = "") -> Response:
        """A remote image the message names, fetched by the server (``web/images.py``)."""
        current = visit(ctx, request)
        check_names(folder, uid)
        raw = await read_raw(ctx, current, folder, uid)
        view = await asyncio.to_thread(parse_message, raw, ctx.settings.mime)
        if ctx.images is None or not u or u not in _remote_images(view):
            raise not_found()
        fetched = await ctx.images.fetch(u)
        if fetched is None:
            raise not_found()
        return Response(
            fetched.content,
            media_type=fetched.content_type,
            headers={
                "Content-Security-Policy": "default-src 'none'; sandbox",
                "Cache-Control": "private, max-age=3600",
            },
        )

    @router.get("/f/{folder:path}/m/{uid}/part/{part_id}")
    async def part(request: Request, folder: str, uid: int, part_id: str) -> Response:
        current = visit(ctx, request)
        check_names(folder, uid)
        raw = await read_raw(ctx, current, folder, uid)
        found = await asyncio.to_thread(attachment_bytes, raw, part_id, ctx.settings.mime)
        if found is None:
            raise not_found()
        attachment, content = found
        return attachment_response(
            content,
            attachment.content_type,
            attachment.filename,
            inline=request.query_params.get("inline") == "1",
        )

    @router.get("/f/{folder:path}/m/{uid}")
    async def read(request: Request, folder: str, uid: int, images: int = 0) -> Response:
        current = visit(ctx, request)
        check_names(folder, uid)
        raw = await read_raw(ctx, current, folder, uid)
        flags = await _flags(ctx, current, folder, uid, mark_seen=True)
        view = await asyncio.to_thread(parse_message, raw, ctx.settings.mime)
        await _audit_read(ctx, current, folder, uid)
        folders = await _folders(ctx, current)
        info = next((f for f in folders if f.name == folder), None)
        if info is None:
            raise not_found()
        may = await _rights(ctx, current)
        return ctx.render(
            request,
            "message.html",
            visit=current,
            folder=folder,
            uid=uid,
            view=view,
            flags=flags,
            sent=info.special_use == "\\Sent",
            statuses=_statuses(ctx, current, view) if info.special_use == "\\Sent" else [],
            receipt=_receipt_state(view, flags, raw, may) if info.special_use != "\\Sent" else "",
            folders=folders,
            may=may,
            images=bool(images),
            blocked=len(_remote_images(view)) if view.html is not None else 0,
        )

    @router.get("/f/{folder:path}")
    async def listing(
        request: Request, folder: str, before: int | None = None, q: str = ""
    ) -> Response:
        current = visit(ctx, request)
        check_names(folder, before)
        try:
            page = await asyncio.to_thread(
                ctx.folders.page,
                current.caller,
                current.mailbox,
                folder,
                before=before,
                limit=ctx.settings.web.page_size,
                text=q.strip()[:200],
            )
        except (AccessDenied, FolderNotFound) as exc:
            raise not_found() from exc
        partial = (
            request.headers.get("hx-request") == "true"
            and request.headers.get("hx-target") == "message-list"
        )
        return ctx.render(
            request,
            "_list.html" if partial else "mailbox.html",
            visit=current,
            folder=folder,
            page=page,
            query=q,
            before=before,
            folders=[] if partial else await _folders(ctx, current),
            mailboxes=[] if partial else await _mailboxes(ctx, current),
        )

    @router.post("/f/{folder:path}/m/{uid}/flag")
    async def flag(
        request: Request,
        folder: str,
        uid: int,
        name: Annotated[str, Form(max_length=20)],
        on: Annotated[int, Form()] = 1,
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        current = changing(ctx, request, csrf)
        check_names(folder, uid)
        if name not in (FLAGGED, SEEN):
            raise HTTPException(status_code=400, detail="flag")
        changed = await _call(
            ctx.folders.store_flags,
            current.caller,
            current.mailbox,
            folder,
            [uid],
            flags=[name],
            mode=FlagMode.ADD if on else FlagMode.REMOVE,
        )
        if not changed:
            raise not_found()
        target = f"{PREFIX}/f/{quote(folder)}" + ("" if name == SEEN else f"/m/{uid}")
        return RedirectResponse(target, status_code=303)

    @router.post("/f/{folder:path}/m/{uid}/move")
    async def move(
        request: Request,
        folder: str,
        uid: int,
        to: Annotated[str, Form(max_length=200)],
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        current = changing(ctx, request, csrf)
        check_names(folder, uid)
        check_names(to)
        moved = await _call(ctx.folders.move, current.caller, current.mailbox, folder, [uid], to)
        if not moved.uids:
            raise not_found()
        return RedirectResponse(f"{PREFIX}/f/{quote(folder)}", status_code=303)

    @router.post("/f/{folder:path}/m/{uid}/delete")
    async def delete(
        request: Request, folder: str, uid: int, csrf: Annotated[str, Form(max_length=100)] = ""
    ) -> Response:
        """To the Trash; from the Trash, for good (flag \\Deleted then expunge that UID)."""
        current = changing(ctx, request, csrf)
        check_names(folder, uid)
        if folder == "Trash":
            if not await expunge_one(ctx, current, folder, uid):
                raise not_found()
        else:
            moved = await _call(
                ctx.folders.move, current.caller, current.mailbox, folder, [uid], "Trash"
            )
            if not moved.uids:
                raise not_found()
        await ctx.audit(
            AuditRecord(
                AuditEvent.WEB_MESSAGE_DELETED,
                actor=current.session.login,
                target=f"{current.mailbox}/{folder}/{uid}",
                context={"via": "web"},
            )
        )
        return RedirectResponse(f"{PREFIX}/f/{quote(folder)}", status_code=303)

    @router.post("/f/{folder:path}/m/{uid}/receipt")
    async def receipt(
        request: Request, folder: str, uid: int, csrf: Annotated[str, Form(max_length=100)] = ""
    ) -> Response:
        current = changing(ctx, request, csrf)
        check_names(folder, uid)
        # $MDNSent is a keyword (RFC 4314 §4: w): checked before the receipt leaves, so that a
        # refusal sends nothing.
        await _call(ctx.folders.check, current.caller, current.mailbox, Operation.FLAG)
        raw = await read_raw(ctx, current, folder, uid)
        flags = await _flags(ctx, current, folder, uid)
        if MDN_SENT_FLAG not in flags and mdn_decision(raw) is not MdnDecision.NONE:
            await _send_mdn(ctx, request, current, raw)
            await _call(
                ctx.folders.store_flags,
                current.caller,
                current.mailbox,
                folder,
                [uid],
                flags=[MDN_SENT_FLAG],
                mode=FlagMode.ADD,
            )
        return RedirectResponse(f"{PREFIX}/f/{quote(folder)}/m/{uid}", status_code=303)

    @router.post("/mailbox")
    async def switch_mailbox(
        request: Request,
        address: Annotated[str, Form(max_length=320)],
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        """Open another mailbox the person may read (an ORG mailbox they belong to)."""
        current = changing(ctx, request, csrf)
        try:
            opened = await asyncio.to_thread(ctx.folders.open, current.caller, address)
        except AccessDenied as exc:
            raise not_found() from exc
        ctx.sessions.set_mailbox(current.session.token_hash, opened)
        return RedirectResponse(f"{PREFIX}/f/INBOX", status_code=303)

    @router.get("/events")
    async def events(request: Request) -> Response:
        """Server-sent events: ``mail`` when the mailbox being read changes (the IMAP
        operator's change bus, which every delivery and folder change publishes to)."""
        current = visit(ctx, request)
        return StreamingResponse(
            _event_stream(ctx, request, current.mailbox, current.session),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router


async def _event_stream(
    ctx: WebContext, request: Request, mailbox: str, session: SessionInfo
) -> AsyncIterator[str]:
    yield "retry: 5000\n\n"
    with (
        ctx.bus.subscribe(mailbox) as waiter,
        stream_lifetime(ctx.auth.sessions, session, waiter.set) as ended,  # docs/revocation.md
    ):
        while not await request.is_disconnected():
            try:
                await asyncio.wait_for(waiter.wait(), _EVENT_KEEPALIVE)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            waiter.clear()
            if ended.is_set():  # what the session rested on was revoked: its row is gone
                return
            yield f"event: mail\ndata: {json.dumps({'mailbox': mailbox})}\n\n"


async def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await asyncio.to_thread(function, *args, **kwargs)
    except (AccessDenied, FolderNotFound) as exc:
        raise not_found() from exc
    except FolderError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc


async def expunge_one(ctx: WebContext, current: Visit, folder: str, uid: int) -> bool:
    """Delete one message for good (``\\Deleted``, then expunge that UID only); False if the
    folder does not hold it."""
    flagged = await _call(
        ctx.folders.store_flags,
        current.caller,
        current.mailbox,
        folder,
        [uid],
        flags=["\\Deleted"],
        mode=FlagMode.ADD,
    )
    if flagged:
        await _call(ctx.folders.expunge, current.caller, current.mailbox, folder, uids=[uid])
    return bool(flagged)


async def read_raw(ctx: WebContext, current: Visit, folder: str, uid: int) -> bytes:
    """The message's bytes; 404 if the folder does not hold it or is not the visitor's."""
    raw = await _call(ctx.folders.body, current.caller, current.mailbox, folder, uid)
    if raw is None:
        raise not_found()
    return raw  # type: ignore[no-any-return]


async def _flags(
    ctx: WebContext, current: Visit, folder: str, uid: int, *, mark_seen: bool = False
) -> frozenset[str]:
    """The message's flags; with ``mark_seen`` (opening it), \\Seen set first if the person
    may (ops/folders.py decides)."""
    entries = await _call(
        ctx.folders.fetch, current.caller, current.mailbox, folder, [uid], mark_seen=mark_seen
    )
    if not entries:
        raise not_found()
    return entries[0].flags  # type: ignore[no-any-return]


async def _rights(ctx: WebContext, current: Visit) -> frozenset[str]:
    """What the person may do to the mailbox being read (``Operation`` values), for the
    buttons the page shows."""
    holds = await _call(ctx.folders.rights, current.caller, current.mailbox)
    return frozenset(op.value for op in holds)


async def _folders(ctx: WebContext, current: Visit) -> list[FolderInfo]:
    return await _call(ctx.folders.list_folders, current.caller, current.mailbox)  # type: ignore[no-any-return]


async def _mailboxes(ctx: WebContext, current: Visit) -> list[str]:
    return await asyncio.to_thread(ctx.folders.mailboxes, current.caller)


def attachment_response(
    content: bytes, content_type: str, filename: str, *, inline: bool = False
) -> Response:
    """A part of a message for the browser. Shown as itself only when asked inline and its
    type is passive (``INLINE_TYPES``); otherwise downloaded as bytes. Either way with
    ``nosniff`` (the type is never guessed from the bytes) and a sandbox CSP (opened by
    hand, it still runs nothing and has no origin)."""
    media_type = content_type.partition(";")[0].strip().lower()
    shown = inline and media_type in INLINE_TYPES
    disposition = "inline" if shown else "attachment"
    return Response(
        content,
        media_type=media_type if shown else "application/octet-stream",
        headers={
            "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(filename)}",
            "Content-Security-Policy": ATTACHMENT_CSP,
            "X-Content-Type-Options": "nosniff",
        },
    )


def _body_html(view: MessageView, folder: str, uid: int, *, allow_images: bool) -> str:
    base = f"{PREFIX}/f/{quote(folder)}/m/{uid}/part/"
    by_cid = {a.content_id: a.part_id for a in view.attachments if a.content_id}

    def cid_url(content_id: str) -> str | None:
        part_id = by_cid.get(content_id)
        return f"{base}{part_id}?inline=1" if part_id else None

    def proxied(url: str) -> str:
        return f"{PREFIX}/f/{quote(folder)}/m/{uid}/image?u={quote(url, safe='')}"

    if view.html is not None:
        # Remote images: blocked, or (asked) fetched by this server, never by the browser.
        return sanitize_html(
            view.html,
            cid_url=cid_url,
            allow_remote_images=allow_images,
            remote_image_url=proxied,
        ).html
    return text_to_html(view.text or "")


def _remote_images(view: MessageView) -> frozenset[str]:
    """The remote image URLs the message's HTML names (what the image route may fetch)."""
    if view.html is None:
        return frozenset()
    found: set[str] = set()

    def remember(url: str) -> str:
        found.add(url)
        return url

    sanitize_html(
        view.html, cid_url=lambda _cid: None, allow_remote_images=True, remote_image_url=remember
    )
    return frozenset(found)


def _statuses(ctx: WebContext, current: Visit, view: MessageView) -> list[Any]:
    recipients = [a for _, a in getaddresses(list(view.to) + list(view.cc)) if a]
    return statuses(ctx.folders.db, current.mailbox, view.message_id, recipients, ctx.local_domains)


def _receipt_state(
    view: MessageView, flags: frozenset[str], raw: bytes, may: frozenset[str]
) -> str:
    """ "" (nothing to do, or the person may not record it: $MDNSent needs FLAG), "asked"
    (a button), "sent" (already answered)."""
    if MDN_SENT_FLAG in flags:
        return "sent" if view.disposition_notification_to else ""
    if Operation.FLAG.value not in may:
        return ""
    return "asked" if mdn_decision(raw) is not MdnDecision.NONE else ""


async def _send_mdn(ctx: WebContext, request: Request, current: Visit, raw: bytes) -> None:
    """The reader asked to send the receipt: RFC 8098, sent with an empty envelope sender
    (``MAIL FROM:<>``, §2.1) through the acceptance path like any message (the trust space)."""
    to, mdn = build_mdn(
        raw,
        reader=current.mailbox,
        reporting_ua=f"{ctx.settings.smtp_hostname()}; mssante webmail",
        hostname=ctx.settings.smtp_hostname(),
    )
    try:
        await send_mail(
            ctx, current.session.login, "", [to], mdn, peer=peer_of(request), report=True
        )
    except MessageRefused as exc:
        raise HTTPException(status_code=400, detail=exc.public) from exc
    await ctx.audit(
        AuditRecord(
            AuditEvent.MDN_SENT,
            actor=current.session.login,
            target=to,
            context={"mailbox": current.mailbox, "via": "web"},
        )
    )


async def _audit_read(ctx: WebContext, current: Visit, folder: str, uid: int) -> None:
    """Reading a message of a mailbox held by delegation is traced with the person."""
    if current.mailbox != current.session.login:
        await ctx.audit(
            AuditRecord(
                AuditEvent.WEB_MESSAGE_READ,
                actor=current.session.login,
                target=f"{current.mailbox}/{folder}/{uid}",
                context={"via": "web"},
            )
        )
