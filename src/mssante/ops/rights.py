"""Who may do what to a mailbox: the one authorization layer (decision 0013, docs/delegation.md).

Every door asks here: the folder operations (:mod:`mssante.ops.folders`, which IMAP and the
webmail call), who may send as a mailbox (:meth:`mssante.ops.accounts.Accounts.sendable_addresses`),
what an IMAP session advertises (PERMANENTFLAGS, READ-ONLY) and which buttons the webmail shows.
No door decides a right itself.

An :class:`Operation` is what a caller does to a mailbox; each maps to RFC 4314 rights (§2.1,
the letters below). What a caller *holds* on a mailbox (:func:`held`):

- nothing, on a closed mailbox, whoever asks;
- every operation, as the owner of an open mailbox (its ``owner_account_id``);
- otherwise, what its active grants say (``mailbox_access``: not revoked, not past
  ``expires_at``, checked at each use): ``read`` (l r s), ``file`` (l r s w t e i) or
  ``send`` (``file`` and sending on behalf of the mailbox, with ``Sender:``); never MANAGE;
- nothing else: a mailbox nobody granted is as unknown as one that does not exist.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from mssante.errors import MssanteError
from mssante.store.models import AccessRight, Account, Mailbox, utcnow

SEEN, DELETED = "\\Seen", "\\Deleted"


class Operation(StrEnum):
    """What a caller may do to a mailbox, with the RFC 4314 §2.1 rights it stands for."""

    LIST = "list"  # l: see the mailbox, list its folders, STATUS
    READ = "read"  # r: SELECT, FETCH, SEARCH, read a body, copy *from*
    MARK_SEEN = "mark_seen"  # s: set or clear \Seen (a FETCH of a body sets it)
    FLAG = "flag"  # w: every flag and keyword but \Seen and \Deleted
    DELETE = "delete"  # t e: set or clear \Deleted, EXPUNGE, move *out of* a folder
    APPEND = "append"  # i: APPEND, copy or move *into* a folder
    SEND_AS = "send_as"  # From: the mailbox, no Sender: (the owner: RFC 5322 §3.6.2)
    SEND_ON_BEHALF = "send_on_behalf"  # From: the mailbox, Sender: the caller (RFC 5322 §3.6.2)
    MANAGE = "manage"  # k x: create, delete, rename folders

    @property
    def letters(self) -> str:
        """The RFC 4314 rights this operation needs ("" for sending: not an IMAP right)."""
        return _LETTERS[self]


_LETTERS: Mapping[Operation, str] = MappingProxyType(
    {
        Operation.LIST: "l",
        Operation.READ: "r",
        Operation.MARK_SEEN: "s",
        Operation.FLAG: "w",
        Operation.DELETE: "te",
        Operation.APPEND: "i",
        Operation.SEND_AS: "",
        Operation.SEND_ON_BEHALF: "",
        Operation.MANAGE: "kx",
    }
)

READING = frozenset({Operation.LIST, Operation.READ, Operation.MARK_SEEN})
FILING = READING | {Operation.FLAG, Operation.DELETE, Operation.APPEND}
SENDING = FILING | {Operation.SEND_ON_BEHALF}
OWNING = frozenset(Operation) - {Operation.SEND_ON_BEHALF}  # an owner sends as, not for
FLAG_CHANGES = frozenset({Operation.MARK_SEEN, Operation.FLAG, Operation.DELETE})


@dataclass(frozen=True)
class Caller:
    """The account acting, and what the audit log should know of the request (peer, via…)."""

    account_id: int
    login: str
    context: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, account: Account, **context: Any) -> Caller:
        return cls(account.id, account.login, context)


class AccessDenied(MssanteError):
    """No such mailbox, or not the caller's (deliberately the same error)."""


class NotPermitted(AccessDenied):
    """The caller uses the mailbox, but its access does not allow this operation (IMAP
    ``NO [NOPERM]``, RFC 5530 §3; the webmail answers 403)."""

    def __init__(self, address: str, operation: Operation) -> None:
        super().__init__(f"your access to {address} does not allow this ({operation.value})")
        self.address = address
        self.operation = operation


def grant_operations(right: AccessRight) -> frozenset[Operation]:
    """What a grant level allows (docs/delegation.md has the table)."""
    if right is AccessRight.READ:
        return READING
    if right is AccessRight.FILE:
        return FILING
    if right is AccessRight.SEND:
        return SENDING
    return frozenset()  # a level this version does not know allows nothing


def held(caller: Caller, mailbox: Mailbox, *, now: datetime | None = None) -> frozenset[Operation]:
    """Every operation ``caller`` may do to ``mailbox`` at ``now`` (default: the present)."""
    if mailbox.closed_at is not None:
        return frozenset()
    if mailbox.owner_account_id == caller.account_id:
        return OWNING
    when = now or utcnow()
    levels = (
        grant_operations(g.right)
        for g in mailbox.grants
        if g.account_id == caller.account_id and g.active(when)
    )
    return frozenset().union(*levels)


def authorize(
    caller: Caller, mailbox: Mailbox, operation: Operation, *, now: datetime | None = None
) -> bool:
    """THE rule: may ``caller`` do ``operation`` to ``mailbox`` at ``now``?"""
    return operation in held(caller, mailbox, now=now)


def require(
    caller: Caller, mailbox: Mailbox, operation: Operation, *, now: datetime | None = None
) -> frozenset[Operation]:
    """:func:`authorize`, raising: :class:`AccessDenied` when the caller holds nothing on the
    mailbox (the same error as for a mailbox that does not exist), :class:`NotPermitted` when
    it holds other operations. Returns everything the caller holds."""
    holds = held(caller, mailbox, now=now)
    if operation in holds:
        return holds
    if not holds:
        raise AccessDenied(f"no mailbox {mailbox.address} for this account")
    raise NotPermitted(mailbox.address, operation)


def flag_operation(flag: str) -> Operation:
    """The operation that changing ``flag`` is (RFC 4314 §4 STORE: ``s`` for \\Seen, ``t`` for
    \\Deleted, ``w`` for every other flag and keyword)."""
    lowered = flag.lower()
    if lowered == SEEN.lower():
        return Operation.MARK_SEEN
    if lowered == DELETED.lower():
        return Operation.DELETE
    return Operation.FLAG


def may_change_flag(holds: Iterable[Operation], flag: str) -> bool:
    return flag_operation(flag) in frozenset(holds)


def read_only(holds: Iterable[Operation]) -> bool:
    """A folder selected with these operations is read-only (RFC 4314 §4 SELECT: none of
    ``i``, ``e`` and the shared flag rights, \\Seen being shared in this store)."""
    return not (frozenset(holds) & (FLAG_CHANGES | {Operation.APPEND}))


__all__ = [
    "FILING",
    "OWNING",
    "READING",
    "SENDING",
    "AccessDenied",
    "Caller",
    "NotPermitted",
    "Operation",
    "authorize",
    "flag_operation",
    "grant_operations",
    "held",
    "may_change_flag",
    "read_only",
    "require",
]
