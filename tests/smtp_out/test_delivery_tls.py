"""Delivery over mutual TLS to a real receiving MTA: trusted peers get mail, others nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from outbound_helpers import (
    OUR_HOST,
    PEER_DOMAIN,
    SENDER,
    Certs,
    Operator,
    Receiver,
    audit_events,
    peer_refusals,
    subject_of,
)

from mssante.store.models import QueueStatus

MakeOperator = Callable[..., Operator]


async def test_delivered_over_mutual_tls_with_our_certificate(
    make_operator: MakeOperator, receiver: Receiver, certs: Certs
) -> None:
    op = make_operator()
    queue_id = op.submit([f"docteur.martin@{PEER_DOMAIN}"], subject="Résultats")

    report = await op.service.deliver_due_once()

    assert (report.delivered, report.deferred, report.failed) == (1, 0, 0)
    [got] = receiver.messages
    assert got.mail_from == SENDER
    assert got.rcpt_tos == [f"docteur.martin@{PEER_DOMAIN}"]
    assert got.client_dn == subject_of(certs.ours)  # our certificate was presented
    assert got.tls_version in {"TLSv1.2", "TLSv1.3"}
    assert b"Subject: R\xc3\xa9sultats" in got.data
    assert b"\r\n.\r\nUne ligne" in got.data  # a lone dot in the body survived (dot-stuffing)
    [state] = op.service.queue.recipients(queue_id)
    assert state.status is QueueStatus.DELIVERED
    assert state.attempts == 1
    assert state.next_attempt_at is None
    assert state.last_code == 250
    assert state.remote_mta == "127.0.0.1"
    events = audit_events(op.db)
    assert (
        "queue.message_queued",
        got.data.split(b"Message-ID: ")[1].split(b"\r\n")[0].decode(),
    ) in events
    assert ("queue.delivered", f"docteur.martin@{PEER_DOMAIN}") in events


async def test_several_messages_share_one_connection(
    make_operator: MakeOperator, receiver: Receiver
) -> None:
    op = make_operator()
    ids = [op.submit([f"patient{i}@{PEER_DOMAIN}", f"autre{i}@{PEER_DOMAIN}"]) for i in range(6)]

    report = await op.service.deliver_due_once()

    assert report.delivered == 12
    assert report.connections == 1
    assert receiver.handler.tls_sessions == 1  # one TLS handshake for the six messages
    assert len(receiver.messages) == 6
    assert [len(m.rcpt_tos) for m in receiver.messages] == [2] * 6
    assert all(
        s.status is QueueStatus.DELIVERED for i in ids for s in op.service.queue.recipients(i)
    )


async def _refused_peer(
    make_operator: MakeOperator, certs: Certs, ports: int, served: Any
) -> tuple[Operator, Receiver, int]:
    server = Receiver(ports, certs, served)
    server.start()
    try:
        op = make_operator()
        queue_id = op.submit([f"docteur.martin@{PEER_DOMAIN}"])
        report = await op.service.deliver_due_once()
        assert report.deferred == 1
    finally:
        server.stop()
    return op, server, queue_id


async def test_peer_whose_dn_is_not_listed_is_sent_nothing(
    make_operator: MakeOperator, certs: Certs, ports: int
) -> None:
    op, server, queue_id = await _refused_peer(make_operator, certs, ports, certs.intruder)

    assert server.handler.mail_commands == 0  # not even MAIL FROM
    assert server.messages == []
    [state] = op.service.queue.recipients(queue_id)
    assert state.status is QueueStatus.DEFERRED
    assert "not listed for domain 'peer.test'" in state.last_reply
    [refusal] = peer_refusals(op.audit)
    assert refusal["dn"] == subject_of(certs.intruder)
    assert "not listed" in refusal["reason"]


async def test_peer_with_a_certificate_of_another_pki_is_sent_nothing(
    make_operator: MakeOperator, certs: Certs, ports: int
) -> None:
    op, server, queue_id = await _refused_peer(make_operator, certs, ports, certs.rogue)

    assert server.handler.mail_commands == 0
    assert server.messages == []
    [state] = op.service.queue.recipients(queue_id)
    assert state.status is QueueStatus.DEFERRED
    assert state.last_reply.startswith("4.7.5 peer certificate refused")
    assert len(peer_refusals(op.audit)) == 1


async def test_peer_without_starttls_is_sent_nothing_in_clear(
    make_operator: MakeOperator, certs: Certs, ports: int
) -> None:
    server = Receiver(ports, certs, certs.peer, tls=False)
    server.start()
    try:
        op = make_operator()
        queue_id = op.submit([f"docteur.martin@{PEER_DOMAIN}"])
        await op.service.deliver_due_once()
    finally:
        server.stop()

    assert server.handler.mail_commands == 0
    [state] = op.service.queue.recipients(queue_id)
    assert state.status is QueueStatus.DEFERRED
    assert "STARTTLS" in state.last_reply
    assert "never sent in clear" in state.last_reply


async def test_no_whitelist_yet_defers(make_operator: MakeOperator, receiver: Receiver) -> None:
    op = make_operator()
    op.whitelist_ref[0] = None
    queue_id = op.submit([f"docteur.martin@{PEER_DOMAIN}"])

    await op.service.deliver_due_once()

    assert receiver.messages == []
    [state] = op.service.queue.recipients(queue_id)
    assert state.status is QueueStatus.DEFERRED
    assert "whitelist" in state.last_reply


def test_reporting_host_is_ours(make_operator: MakeOperator) -> None:
    assert make_operator().settings.smtp_hostname() == OUR_HOST
