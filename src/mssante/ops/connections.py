"""How many connections a listener holds: in all, per client address before login, per account
and address after it (docs/security.md). Decided here once; each door only translates a refusal
into its protocol (SMTP 421 4.7.0, IMAP ``BYE [UNAVAILABLE]``, HTTP 503/429).

Written here (a few lines): the servers we use have no such cap (aiosmtpd, pymap's listener),
and uvicorn's ``limit_concurrency`` counts only the total.

Why three counts: a stranger opens connections without logging in, so those are capped per
address; a hospital's staff behind one NAT log in from one address, so once logged in a
connection counts against its account at that address (as Dovecot's
``mail_max_userip_connections``) and no longer against the address.

The counts live in this process and are changed only on the event loop (no lock needed);
several nodes each count their own.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

K = TypeVar("K")


class Full(StrEnum):
    """Why a connection (or a login on it) was refused."""

    LISTENER = "listener_full"  # the listener's total
    ADDRESS = "address_full"  # connections not logged in from this address
    USER_ADDRESS = "user_address_full"  # sessions of this account from this address


@dataclass(frozen=True)
class Caps:
    total: int
    per_address: int
    per_user_address: int


@dataclass
class Ticket:
    """One admitted connection; :meth:`close` it exactly once when the connection ends."""

    gate: ConnectionGate
    address: str
    user: str | None = None
    closed: bool = False

    def log_in(self, user: str) -> Full | None:
        """The connection's login succeeded as ``user``: it leaves the address's count and
        joins the account's at that address; ``Full.USER_ADDRESS`` if that one is full (the
        door then refuses the login and the connection stays counted as before)."""
        return self.gate._log_in(self, user.lower())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.gate._release(self)


@dataclass
class ConnectionGate:
    """The connections of one listener."""

    caps: Caps
    _total: int = 0
    _anonymous: Counter[str] = field(default_factory=Counter)
    _users: Counter[tuple[str, str]] = field(default_factory=Counter)
    _refused: Counter[tuple[str, Full]] = field(default_factory=Counter)

    def admit(self, address: str) -> Ticket | Full:
        """A new connection from ``address``: its ticket, or why it is refused."""
        full = self._full_for(address)
        if full is not None:
            self._refused[(address, full)] += 1
            return full
        self._total += 1
        self._anonymous[address] += 1
        for reason in Full:  # admitted again: the next refusal starts a new run
            self._refused.pop((address, reason), None)
        return Ticket(self, address)

    def refusals(self, address: str, reason: Full) -> int:
        """Refusals of ``address`` for ``reason`` since it was last admitted."""
        return self._refused[(address, reason)]

    def worth_auditing(self, address: str, reason: Full) -> bool:
        """Whether this refusal is audited: the 1st, 10th, 100th… of a run, so that a client
        hammering a full listener cannot turn each attempt into an audit row (the entry
        carries the count so far)."""
        count = self._refused[(address, reason)]
        return count > 0 and str(count).rstrip("0") == "1"

    def _full_for(self, address: str) -> Full | None:
        if self._total >= self.caps.total:
            return Full.LISTENER
        if self._anonymous[address] >= self.caps.per_address:
            return Full.ADDRESS
        return None

    @property
    def open(self) -> int:
        return self._total

    def _log_in(self, ticket: Ticket, user: str) -> Full | None:
        if ticket.closed or ticket.user == user:
            return None
        if self._users[(user, ticket.address)] >= self.caps.per_user_address:
            self._refused[(ticket.address, Full.USER_ADDRESS)] += 1
            return Full.USER_ADDRESS
        self._leave(ticket)
        ticket.user = user
        self._users[(user, ticket.address)] += 1
        return None

    def _release(self, ticket: Ticket) -> None:
        self._total -= 1
        self._leave(ticket)

    def _leave(self, ticket: Ticket) -> None:
        if ticket.user is None:
            _decrement(self._anonymous, ticket.address)
        else:
            _decrement(self._users, (ticket.user, ticket.address))


def _decrement(counter: Counter[K], key: K) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
