"""Routes: the static table, DNS MX through a real (local) name server, and delivery that
checks the MX host's name in the peer's certificate."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from outbound_helpers import PEER_DOMAIN, PEER_HOST, LocalDns, Operator, Receiver, peer_refusals

from mssante.queue.routes import NoRoute, Route, RouteResolver, parse_static_route
from mssante.store.models import QueueStatus

MakeOperator = Callable[..., Operator]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:2525", ("127.0.0.1", 2525)),
        ("smtp.peer.test", ("smtp.peer.test", 25)),
        ("[::1]:2525", ("::1", 2525)),
        ("::1", ("::1", 25)),
    ],
)
def test_static_route_syntax(text: str, expected: tuple[str, int]) -> None:
    assert parse_static_route(text) == expected


@pytest.mark.parametrize("text", ["", "host:0", "host:99999", ":25"])
def test_static_route_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_static_route(text)


async def test_static_route_wins_over_dns(local_dns: LocalDns) -> None:
    local_dns.zone[(PEER_DOMAIN, "MX")] = ["10 smtp.peer.test."]
    routes = RouteResolver({"Peer.Test": "127.0.0.1:2525"}, local_dns.resolver())
    assert await routes.resolve("peer.test.") == [Route("127.0.0.1", "127.0.0.1", 2525)]


async def test_mx_records_in_preference_order(local_dns: LocalDns) -> None:
    local_dns.zone.update(
        {
            (PEER_DOMAIN, "MX"): [
                "20 mx2.peer.test.",
                "10 mx1.peer.test.",
                "30 sans-adresse.peer.test.",
            ],
            ("mx1.peer.test", "A"): ["127.0.0.1"],
            ("mx2.peer.test", "A"): ["127.0.0.1"],
            ("mx2.peer.test", "AAAA"): ["::1"],
            ("sans-adresse.peer.test", "TXT"): ['"no address"'],
        }
    )
    routes = await RouteResolver({}, local_dns.resolver(), port=2525).resolve(PEER_DOMAIN)
    assert routes == [
        Route("mx1.peer.test", "127.0.0.1", 2525, 10),
        Route("mx2.peer.test", "127.0.0.1", 2525, 20),
        Route("mx2.peer.test", "::1", 2525, 20),
    ]  # an MX host without an address is skipped


async def test_no_mx_means_the_domain_is_its_own_host(local_dns: LocalDns) -> None:
    local_dns.zone[("implicite.test", "A")] = ["127.0.0.1"]
    routes = await RouteResolver({}, local_dns.resolver()).resolve("implicite.test")
    assert routes == [Route("implicite.test", "127.0.0.1", 25, 0)]  # RFC 5321 §5.1


async def test_null_mx_is_a_permanent_no_route(local_dns: LocalDns) -> None:
    local_dns.zone[("nulle.test", "MX")] = ["0 ."]
    result = await RouteResolver({}, local_dns.resolver()).resolve("nulle.test")
    assert result == NoRoute(
        "domain nulle.test accepts no mail (null MX, RFC 7505)", permanent=True
    )


async def test_unknown_domain_is_a_temporary_no_route(local_dns: LocalDns) -> None:
    result = await RouteResolver({}, local_dns.resolver()).resolve("inconnu.test")
    assert isinstance(result, NoRoute)
    assert not result.permanent
    assert "does not exist" in result.reason


async def test_delivery_through_mx_checks_the_host_name(
    make_operator: MakeOperator, receiver: Receiver, local_dns: LocalDns
) -> None:
    """The first MX host is not named in the peer's certificate: refused, nothing sent to it;
    the second one is the certificate's host: delivered there."""
    local_dns.zone.update(
        {
            (PEER_DOMAIN, "MX"): ["10 mx.ailleurs.test.", "20 smtp.peer.test."],
            ("mx.ailleurs.test", "A"): ["127.0.0.1"],
            (PEER_HOST, "A"): ["127.0.0.1"],
        }
    )
    resolver = RouteResolver({}, local_dns.resolver(), port=receiver.port)
    op = make_operator(routes={}, route_resolver=resolver)
    queue_id = op.submit([f"docteur.martin@{PEER_DOMAIN}"])

    report = await op.service.deliver_due_once()

    assert report.delivered == 1
    assert len(receiver.messages) == 1
    assert receiver.handler.tls_sessions == 1  # the refused session never reached EHLO again
    [refusal] = peer_refusals(op.audit)
    assert refusal["host"] == "mx.ailleurs.test"
    assert "not valid for host mx.ailleurs.test" in refusal["reason"]
    [state] = op.service.queue.recipients(queue_id)
    assert (state.status, state.remote_mta) == (QueueStatus.DELIVERED, PEER_HOST)


async def test_no_route_defers(make_operator: MakeOperator, local_dns: LocalDns) -> None:
    op = make_operator(routes={}, route_resolver=RouteResolver({}, local_dns.resolver()))
    queue_id = op.submit([f"docteur.martin@{PEER_DOMAIN}"])  # peer.test is not in this DNS

    await op.service.deliver_due_once()

    [state] = op.service.queue.recipients(queue_id)
    assert state.status is QueueStatus.DEFERRED
    assert state.last_reply.startswith("4.4.4 domain peer.test does not exist")
