"""The one authorization layer (ops/rights.py, decision 0013), checked as a property: random
holders (owner, closed mailbox, no grant, each grant level on a delegated PER mailbox or an ORG
mailbox, expired, revoked) and random operations, driven through three doors of one running
operator: the folder operations and ``Accounts`` directly, IMAP (imapclient over TLS, the
mailbox as SASL authorization identity) and the webmail (HTTPS, a logged-in session). Nothing
beyond the grant succeeds, and a refusal changes nothing; everything within it succeeds."""

from __future__ import annotations

import asyncio
import re
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import imapclient
import pyotp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select, update

from imap_fixtures import DURAND, MARTIN, PASSWORD, Operator, message
from mssante.audit.events import Actor
from mssante.ops.accounts import Accounts
from mssante.ops.delegation import Delegations
from mssante.ops.folders import AccessDenied, Caller, FlagMode, Folders
from mssante.store.models import (
    AccessRight,
    Account,
    Folder,
    Mailbox,
    MailboxAccess,
    MailboxEntry,
    WebSession,
)

ORG = "secretariat@b.mssante.test"

# What each holder may do: docs/delegation.md's table, written out independently of the code.
_READ = {"list", "read", "mark_seen"}
_FILE = _READ | {"flag", "delete", "append"}
_LEVELS = {AccessRight.READ: _READ, AccessRight.FILE: _FILE, AccessRight.SEND: _FILE | {"behalf"}}
_OWNER = _FILE | {"send_as", "manage"}
KINDS = ("owner", "closed", "none", "per", "org", "closed_org", "expired", "revoked")

# Each door's operations, and the operations of the layer each one needs.
NEEDS: dict[str, set[str]] = {
    "list": {"list"},
    "read": {"read"},
    "mark_seen": {"read", "mark_seen"},
    "flag": {"read", "flag"},
    "delete": {"read", "delete"},
    "expunge": {"read", "delete"},
    "append": {"append"},
    "copy": {"read", "append"},
    "move": {"read", "delete", "append"},
    "manage": {"manage"},
    "send_as": {"send_as"},
    "behalf": {"behalf"},
    "trash": {"read", "delete", "append"},  # the webmail's delete: a move to the Trash
}
DOORS = {
    "ops": tuple(op for op in NEEDS if op != "trash"),
    "imap": tuple(op for op in NEEDS if op not in ("send_as", "behalf", "trash")),
    "web": ("list", "read", "mark_seen", "flag", "move", "trash"),
}


def expected(kind: str, level: AccessRight) -> set[str]:
    if kind == "owner":
        return _OWNER
    if kind in ("per", "org"):
        return _LEVELS[level]
    return set()  # closed mailboxes, no grant, a grant expired or revoked


def holder(kind: str) -> tuple[str, str]:
    """Who acts on which mailbox: (caller's login, mailbox address)."""
    target = ORG if kind in ("org", "closed_org") else MARTIN
    return (MARTIN if kind in ("owner", "closed") else DURAND), target


@dataclass(frozen=True)
class Scene:
    caller: str  # login
    target: str  # mailbox address
    uid: int  # a fresh message of the target's INBOX


class World:
    """The operator, the callers, and what each door needs to act as them."""

    def __init__(
        self,
        op: Operator,
        web: dict[str, httpx.Client],
        csrf: dict[str, str],
        app_passwords: dict[str, str],
    ) -> None:
        self.op = op
        self.app_passwords = app_passwords  # IMAP, once the webmail enrolled a second factor
        self.db = op.rt.node.db
        self.folders = Folders(self.db, op.rt.node.blobs)
        self.accounts = Accounts(self.db)
        self.web = web
        self.csrf = csrf
        with self.db.session() as session:
            rows = session.execute(select(Account.login, Account.id)).all()
            self.ids = {login: int(pk) for login, pk in rows}

    def caller(self, login: str) -> Caller:
        return Caller(self.ids[login], login, {"via": "test"})

    def arrange(self, kind: str, level: AccessRight, op: str) -> Scene:
        """Grants as ``kind`` says, a fresh message in the target's INBOX."""
        caller, target = holder(kind)
        now = datetime.now(UTC)
        with self.db.session() as session:
            session.execute(delete(MailboxAccess))
            session.execute(update(Mailbox).values(closed_at=None))
        raw = message("Essai", **{"Message-ID": f"<{uuid.uuid4()}@test>", "To": target})
        self.op.rt.store.deliver(raw, [target])
        with self.db.session() as session:
            box = session.execute(select(Mailbox).where(Mailbox.address == target)).scalar_one()
            inbox = next(f for f in box.folders if f.name == "INBOX")
            entry = session.execute(
                select(MailboxEntry)
                .where(MailboxEntry.folder_id == inbox.id)
                .order_by(MailboxEntry.uid.desc())
                .limit(1)
            ).scalar_one()
            entry.flags = "\\Deleted" if op == "expunge" else ""
            if kind not in ("owner", "closed", "none"):
                box.grants.append(
                    MailboxAccess(
                        account_id=self.ids[DURAND],
                        right=level,
                        granted_by="test",
                        expires_at=now - timedelta(hours=1) if kind == "expired" else None,
                        revoked_at=now - timedelta(minutes=1) if kind == "revoked" else None,
                    )
                )
            if kind in ("closed", "closed_org"):
                box.closed_at = now
            uid = entry.uid
        return Scene(caller, target, uid)

    def snapshot(self, address: str) -> tuple[object, ...]:
        with self.db.session() as session:
            rows = session.execute(
                select(Folder.name, MailboxEntry.uid, MailboxEntry.flags)
                .join(Mailbox, Mailbox.id == Folder.mailbox_id)
                .outerjoin(MailboxEntry, MailboxEntry.folder_id == Folder.id)
                .where(Mailbox.address == address)
                .order_by(Folder.name, MailboxEntry.uid)
            ).all()
        return tuple(tuple(r) for r in rows)


# --- The doors ----------------------------------------------------------------------------------


Imap = imapclient.IMAPClient | None  # the example's IMAP session (None: refused at login)


def through_ops(w: World, op: str, s: Scene, may: set[str], imap: Imap) -> bool:
    c, t, uid = w.caller(s.caller), s.target, s.uid
    if op in ("send_as", "behalf"):
        allowed = w.accounts.sendable_addresses(s.caller)
        return t in (allowed.own if op == "send_as" else allowed.delegated)
    calls: dict[str, Callable[[], object]] = {
        "list": lambda: w.folders.list_folders(c, t),
        "read": lambda: w.folders.body(c, t, "INBOX", uid),
        "mark_seen": lambda: _store(w, c, t, uid, "\\Seen"),
        "flag": lambda: _store(w, c, t, uid, "\\Flagged"),
        "delete": lambda: _store(w, c, t, uid, "\\Deleted"),
        "expunge": lambda: w.folders.expunge(c, t, "INBOX", [uid]),
        "append": lambda: w.folders.append(c, t, "Drafts", message("Brouillon")),
        "copy": lambda: w.folders.copy(c, t, "INBOX", [uid], "Archive"),
        "move": lambda: w.folders.move(c, t, "INBOX", [uid], "Archive"),
        "manage": lambda: w.folders.create_folder(c, t, f"Dossier {uuid.uuid4().hex[:8]}"),
    }
    try:
        calls[op]()
    except AccessDenied:
        return False
    return True


def _store(w: World, c: Caller, t: str, uid: int, flag: str) -> object:
    return w.folders.store_flags(c, t, "INBOX", [uid], flags=[flag], mode=FlagMode.ADD)


def imap_session(w: World, caller: str, target: str) -> Imap:
    """One IMAP session for the whole example (the grant is checked at every command)."""
    client = imapclient.IMAPClient(
        "127.0.0.1", w.op.imaps_port, ssl=True, ssl_context=w.op.tls(), timeout=20
    )
    try:
        client.plain_login(caller, w.app_passwords[caller], authorization_identity=target)
    except imapclient.exceptions.LoginError:
        client.shutdown()
        return None  # NO [AUTHORIZATIONFAILED]: the session never opens
    return client


def through_imap(w: World, op: str, s: Scene, may: set[str], imap: Imap) -> bool:
    if imap is None:
        return False
    try:
        _imap_op(imap, op, s.uid)
    except imapclient.exceptions.IMAPClientError:
        return False  # NO [NOPERM]
    return True


def _imap_op(client: imapclient.IMAPClient, op: str, uid: int) -> None:
    if op == "list":
        assert client.list_folders()
        return
    if op == "append":
        client.append("Drafts", message("Brouillon"))
        return
    if op == "manage":
        client.create_folder(f"Dossier {uuid.uuid4().hex[:8]}")
        return
    client.select_folder("INBOX")
    flags = {"mark_seen": b"\\Seen", "flag": b"\\Flagged", "delete": b"\\Deleted"}
    if op == "read":
        assert client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"].startswith(b"From:")
    elif op in flags:
        client.add_flags([uid], [flags[op]])
    elif op == "expunge":
        client.expunge()
    elif op == "copy":
        client.copy([uid], "Archive")
    else:
        client.move([uid], "Archive")


def through_web(w: World, op: str, s: Scene, may: set[str], imap: Imap) -> bool:
    browser = w.web[s.caller]
    with w.db.session() as session:  # the mailbox the session reads (as a switch would set)
        session.execute(
            update(WebSession)
            .where(WebSession.account_id == w.ids[s.caller])
            .values(mailbox=s.target)
        )
    base, form = f"/webmail/f/INBOX/m/{s.uid}", {"csrf": w.csrf[s.caller]}
    if op == "list":
        return _ok(browser.get("/webmail/f/INBOX"))
    if op == "read":
        return _read_view(browser, base, may)
    if op in ("mark_seen", "flag"):
        name = "\\Seen" if op == "mark_seen" else "\\Flagged"
        return _ok(browser.post(f"{base}/flag", data={**form, "name": name, "on": "1"}))
    if op == "move":
        return _ok(browser.post(f"{base}/move", data={**form, "to": "Archive"}))
    return _ok(browser.post(f"{base}/delete", data=form))


def _ok(response: httpx.Response) -> bool:
    assert response.status_code in (200, 303, 404), (response.status_code, response.text[:300])
    return response.status_code != 404  # a refusal answers as for foreign mail


def _read_view(browser: httpx.Client, base: str, may: set[str]) -> bool:
    """The read view shows only the buttons the holder's grant allows."""
    page = browser.get(base)
    if not _ok(page):
        return False
    shown = set(re.findall(r'data-testid="(flag|unread|move|delete)"', page.text))
    assert ("flag" in shown) == ("flag" in may), shown
    assert ("unread" in shown) == ("mark_seen" in may), shown
    assert ("move" in shown) == ({"delete", "append"} <= may), shown
    assert ("delete" in shown) == ({"delete", "append"} <= may), shown
    return True


DRIVE = {"ops": through_ops, "imap": through_imap, "web": through_web}


# --- The property -------------------------------------------------------------------------------


def _web_login(op: Operator, login: str) -> tuple[httpx.Client, str]:
    """A browser session of ``login``, enrolled (TOTP) as a first login does; its CSRF token."""
    context = ssl.create_default_context(cafile=str(op.ca))
    context.check_hostname = False
    client = httpx.Client(
        base_url=f"https://127.0.0.1:{op.rt.settings.web.port}", verify=context, timeout=30
    )
    token = re.compile(r'name="csrf" value="([^"]+)"')

    def csrf(response: httpx.Response) -> str:
        found = token.search(response.text)
        assert found, response.text[:500]
        return found.group(1)

    form = {"csrf": csrf(client.get("/webmail/login")), "code": ""}
    client.post("/webmail/login", data={**form, "address": login, "password": PASSWORD})
    enrol = client.get("/webmail/enrol")
    secret = re.search(r'data-testid="totp-secret">([A-Z2-7]+)<', enrol.text)
    assert secret, enrol.text[:500]
    code = pyotp.TOTP(secret.group(1)).now()
    done = client.post("/webmail/enrol", data={"csrf": csrf(enrol), "code": code})
    assert done.status_code == 303, done.text[:500]
    return client, csrf(client.get("/webmail/f/INBOX"))


def run_property(w: World) -> None:
    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        kind=st.sampled_from(KINDS),
        level=st.sampled_from(list(AccessRight)),
        door=st.sampled_from(sorted(DOORS)),
        order=st.randoms(use_true_random=False),
    )
    def nothing_beyond_the_grant(kind: str, level: AccessRight, door: str, order: Any) -> None:
        """Every operation of the door, in a drawn order, each on a fresh message."""
        ops = list(DOORS[door])
        order.shuffle(ops)
        may = expected(kind, level)
        w.arrange(kind, level, ops[0])
        imap = imap_session(w, *holder(kind)) if door == "imap" else None
        try:
            for op in ops:
                scene = w.arrange(kind, level, op)
                before = w.snapshot(scene.target)
                done = DRIVE[door](w, op, scene, may, imap)
                assert done is (NEEDS[op] <= may), f"{kind}/{level.value} {op} via {door}"
                if op in ("send_as", "behalf", "list", "read"):
                    continue
                changed = w.snapshot(scene.target) != before
                assert changed is done, f"{op} via {door}: done {done}, changed {changed}"
        finally:
            if imap is not None:
                imap.shutdown()

    nothing_beyond_the_grant()


async def test_nothing_beyond_the_grant_succeeds_through_any_door(operator_web: Operator) -> None:
    op = operator_web
    Delegations(op.rt.node.db).create_org(ORG, "Secrétariat", Actor("test"))
    web: dict[str, httpx.Client] = {}
    csrf: dict[str, str] = {}
    app_passwords: dict[str, str] = {}
    try:
        for login in (MARTIN, DURAND):
            web[login], csrf[login] = await asyncio.to_thread(_web_login, op, login)
            app_passwords[login] = (
                await asyncio.to_thread(op.rt.auth.add_app_password, login, "IMAP", Actor("test"))
            ).password
        await asyncio.to_thread(run_property, World(op, web, csrf, app_passwords))
    finally:
        for client in web.values():
            client.close()
