"""The whitelist (liste blanche) of the MSSanté trust space, as values.

The authority publishes which mail domains belong to the trust space and, for each, the subject
DNs of the operator certificates allowed to carry its mail (BRIEF §3). Operators accept mail for a
domain only from a peer whose certificate DN is listed for that domain (BRIEF §2, inferred
enforcement). :class:`Whitelist` answers that question with a :class:`TrustDecision`.

A real list has about 9,000 domains, so lookups go through indexes built once, when the list is
made, never through a scan of the domains.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from mssante.errors import MssanteError
from mssante.pki.names import normalise_dn

_MAX_SHOWN = 200


class TrustRefusal(StrEnum):
    """Why a peer is not trusted."""

    DOMAIN_NOT_LISTED = "domain_not_listed"
    DN_NOT_LISTED = "dn_not_listed"


@dataclass(frozen=True)
class TrustDecision:
    """The answer to "may this domain (and this certificate DN) exchange mail with us?"."""

    trusted: bool
    reason: TrustRefusal | None
    message: str  # one line, in English, safe to log and to show to the peer


@dataclass(frozen=True)
class WhitelistDomain:
    """One ``Domaine`` entry: a mail domain and the certificate DNs allowed to serve it."""

    name: str
    description: str
    operator_dns: tuple[str, ...]
    responsable_contact: str
    support_contact: str
    updated_at: datetime

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip() or any(c.isspace() for c in self.name):
            raise ValueError(f"invalid domain name {_shown(self.name)}")
        if not self.operator_dns:
            raise ValueError(f"domain {_shown(self.name)} lists no operator certificate DN")
        for dn in self.operator_dns:
            if not dn or dn != dn.strip():
                raise ValueError(f"domain {_shown(self.name)}: invalid DN {_shown(dn)}")
        _require_aware(self.updated_at, f"domain {_shown(self.name)}: updated_at")


@dataclass(frozen=True)
class Whitelist:
    """A whole list: when the authority generated it and its entries, in published order.

    The real list repeats a domain name once per operator registration (the public sample has
    619 entries for 516 names, some with the same DN twice), so a name maps to a tuple of
    entries and a domain's listed DNs are those of all its entries.
    """

    generated_at: datetime
    domains: tuple[WhitelistDomain, ...]
    _by_name: Mapping[str, tuple[WhitelistDomain, ...]] = field(
        init=False, repr=False, compare=False, hash=False
    )
    _all_dns: frozenset[str] = field(init=False, repr=False, compare=False, hash=False)
    _dns_by_name: Mapping[str, frozenset[str]] = field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        _require_aware(self.generated_at, "generated_at")
        by_name = _index_by_name(self.domains)
        object.__setattr__(self, "_by_name", by_name)
        dns_by_name = _index_dns(by_name)
        object.__setattr__(self, "_dns_by_name", dns_by_name)
        object.__setattr__(self, "_all_dns", frozenset().union(*dns_by_name.values()))

    def __len__(self) -> int:
        return len(self.domains)

    def names(self) -> tuple[str, ...]:
        """The distinct domain names, in order of first appearance."""
        return tuple(entries[0].name for entries in self._by_name.values())

    def domain(self, name: str) -> tuple[WhitelistDomain, ...]:
        """Every entry for ``name`` (case-insensitive, a final dot ignored); empty if unlisted."""
        return self._by_name.get(domain_key(name), ())

    def is_known_operator(self, dn: str) -> bool:
        """Whether ``dn`` is listed for any domain: an operator of the trust space. Used for
        the null sender (``MAIL FROM:<>``, delivery reports), which names no domain."""
        try:
            return dn_key(dn) in self._all_dns
        except ValueError:
            return False

    def is_listed(self, domain: str) -> TrustDecision:
        """Whether ``domain`` is in the trust space at all (no certificate to check)."""
        if domain_key(domain) not in self._by_name:
            return _not_listed(domain)
        return TrustDecision(True, None, f"domain {_shown(domain)} is on the whitelist")

    def is_trusted(self, domain: str, dn: str) -> TrustDecision:
        """Whether a peer presenting a certificate with subject ``dn`` may carry ``domain``'s mail.

        Both must hold: the domain is listed, and ``dn`` is one of the DNs listed for it
        (compared in canonical form, see :func:`dn_key`).
        """
        listed = self._dns_by_name.get(domain_key(domain))
        if listed is None:
            return _not_listed(domain)
        try:
            key = dn_key(dn)
        except ValueError:
            return TrustDecision(
                False,
                TrustRefusal.DN_NOT_LISTED,
                f"certificate DN {_shown(dn)} is not a valid DN, so it is not listed for "
                f"domain {_shown(domain)}",
            )
        if key not in listed:
            return TrustDecision(
                False,
                TrustRefusal.DN_NOT_LISTED,
                f"certificate DN {_shown(dn)} is not listed for domain {_shown(domain)}",
            )
        return TrustDecision(
            True, None, f"domain {_shown(domain)} and certificate DN {_shown(dn)} are listed"
        )


def _index_by_name(
    domains: tuple[WhitelistDomain, ...],
) -> dict[str, tuple[WhitelistDomain, ...]]:
    by_name: dict[str, tuple[WhitelistDomain, ...]] = {}
    for domain in domains:
        key = domain_key(domain.name)
        by_name[key] = (*by_name.get(key, ()), domain)
    return by_name


def _index_dns(by_name: Mapping[str, tuple[WhitelistDomain, ...]]) -> dict[str, frozenset[str]]:
    """Each name's listed DNs, in comparison form. The real list repeats a few hundred DNs
    thousands of times: each distinct DN is normalised once."""
    keys: dict[str, str] = {}

    def key_of(dn: str) -> str:
        if dn not in keys:
            keys[dn] = dn_key(dn)
        return keys[dn]

    return {
        name: frozenset(key_of(dn) for entry in entries for dn in entry.operator_dns)
        for name, entries in by_name.items()
    }


def domain_key(name: str) -> str:
    """The form under which domain names are compared: lower case, no final dot."""
    return name.strip().rstrip(".").lower()


def dn_key(dn: str) -> str:
    """The form under which DNs are compared: the project's one DN comparison,
    :func:`mssante.pki.names.normalise_dn` (RFC 5280 §7.1 matching). Raises ValueError on a
    malformed DN."""
    try:
        return normalise_dn(dn)
    except MssanteError as exc:  # mssante.pki.names.MalformedDN
        raise ValueError(exc.public) from None


def _not_listed(domain: str) -> TrustDecision:
    return TrustDecision(
        False, TrustRefusal.DOMAIN_NOT_LISTED, f"domain {_shown(domain)} is not on the whitelist"
    )


def _require_aware(value: datetime, what: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} has no time zone")


def _shown(text: str) -> str:
    """``text`` quoted on one line, control characters escaped, long values cut."""
    cut = text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "…"
    safe = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in cut)
    return f"'{safe}'"
