"""Where to deliver a domain's mail: the static route table, else DNS MX (RFC 5321 §5.1).

A static route (``smtp.routes``: ``domain -> host:port``) wins: local trust spaces and tests
use it. Otherwise the MX records of the domain, most preferred first (equal preferences in a
random order, RFC 5321 §5.1), each resolved to its addresses; a domain without MX records is
its own host (the "implicit MX", RFC 5321 §5.1). A "null MX" (RFC 7505) says the domain takes
no mail at all: that one answer is permanent; every other lack of route is temporary.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.rdtypes.ANY.MX
import dns.resolver

SMTP_PORT = 25
_RANDOM = secrets.SystemRandom()


@dataclass(frozen=True)
class Route:
    """One place to try. ``host`` is the name the peer's certificate is checked against (or an
    IP literal, when the route gives one); ``address`` is what is connected to."""

    host: str
    address: str
    port: int
    preference: int = 0

    def __str__(self) -> str:
        shown = f"[{self.address}]" if ":" in self.address else self.address
        return (
            f"{self.host} ({shown}:{self.port})"
            if self.host != self.address
            else f"{shown}:{self.port}"
        )


@dataclass(frozen=True)
class NoRoute:
    """Why there is nowhere to deliver. ``permanent`` only for a null MX (RFC 7505 §4.2)."""

    reason: str
    permanent: bool = False


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def parse_static_route(text: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or ``v6`` -> (host, port). Raises ValueError."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    port = int(port_text) if port_text else SMTP_PORT
    if not host or not 0 < port < 65536:
        raise ValueError(f"invalid route {text!r}: expected host:port")
    return host, port


class RouteResolver:
    """Routes of a domain. ``resolver`` is a dnspython asynchronous resolver (configurable, so
    that tests can point it at a local name server)."""

    def __init__(
        self,
        static: Mapping[str, str],
        resolver: dns.asyncresolver.Resolver | None = None,
        *,
        port: int = SMTP_PORT,
    ) -> None:
        self._static = {domain.lower().rstrip("."): route for domain, route in static.items()}
        self._resolver = resolver
        self._port = port

    async def resolve(self, domain: str) -> list[Route] | NoRoute:
        domain = domain.lower().rstrip(".")
        static = self._static.get(domain)
        if static is not None:
            return self._static_route(static)
        return await self._from_dns(domain)

    def _static_route(self, text: str) -> list[Route] | NoRoute:
        try:
            host, port = parse_static_route(text)
        except ValueError as exc:
            return NoRoute(f"static route misconfigured: {exc}")
        return [Route(host, host, port)]

    # -- DNS: RFC 5321 §5.1 ----------------------------------------------------------------
    async def _from_dns(self, domain: str) -> list[Route] | NoRoute:
        resolver = self._resolver or dns.asyncresolver.Resolver()
        hosts = await _mx_hosts(resolver, domain)
        if isinstance(hosts, NoRoute):
            return hosts
        routes: list[Route] = []
        for preference, host in hosts:
            addresses = await _addresses(resolver, host)
            routes += [Route(host, address, self._port, preference) for address in addresses]
        if not routes:
            return NoRoute(f"no address found for the mail hosts of {domain}")
        return routes


async def _mx_hosts(
    resolver: dns.asyncresolver.Resolver, domain: str
) -> list[tuple[int, str]] | NoRoute:
    """(preference, host) pairs, most preferred first; ties shuffled (RFC 5321 §5.1)."""
    try:
        answer = await resolver.resolve(domain, "MX")
    except dns.resolver.NoAnswer:
        return [(0, domain)]  # RFC 5321 §5.1: no MX records, the domain is its own host
    except dns.resolver.NXDOMAIN:
        return NoRoute(f"domain {domain} does not exist in the DNS")
    except dns.exception.DNSException as exc:
        return NoRoute(f"DNS lookup of {domain} failed: {type(exc).__name__}")
    records = [r for r in answer if isinstance(r, dns.rdtypes.ANY.MX.MX)]
    if len(records) == 1 and records[0].exchange.to_text() == ".":
        return NoRoute(f"domain {domain} accepts no mail (null MX, RFC 7505)", permanent=True)
    pairs = [(r.preference, r.exchange.to_text().rstrip(".")) for r in records]
    pairs = [(p, h) for p, h in pairs if h]
    _RANDOM.shuffle(pairs)
    return sorted(pairs, key=lambda pair: pair[0])  # a stable sort keeps the shuffled ties


async def _addresses(resolver: dns.asyncresolver.Resolver, host: str) -> list[str]:
    """IPv4 then IPv6 addresses of ``host``; none if it does not resolve (that MX is skipped)."""
    if is_ip_literal(host):
        return [host.strip("[]")]
    found: list[str] = []
    for kind in ("A", "AAAA"):
        try:
            answer = await resolver.resolve(host, kind)
        except dns.exception.DNSException:
            continue
        found += [record.to_text() for record in answer]
    return found
