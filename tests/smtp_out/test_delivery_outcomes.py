"""Outcomes per recipient: deferral and retry at the scheduled time, failure and DSN, delay
notice, giving up, a peer that is down then up. The clock is moved by hand: nobody sleeps."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from email.header import decode_header, make_header

from outbound_helpers import (
    OUR_HOST,
    PEER_DOMAIN,
    SENDER,
    UNLISTED_DOMAIN,
    Operator,
    Receiver,
    audit_events,
    parse,
    report_fields,
)

from mssante.queue.store import recipients_of
from mssante.store.models import QueueStatus

MakeOperator = Callable[..., Operator]
MARTIN = f"docteur.martin@{PEER_DOMAIN}"
DURAND = f"docteur.durand@{PEER_DOMAIN}"


async def test_temporary_refusal_is_retried_at_the_scheduled_time(
    make_operator: MakeOperator, receiver: Receiver
) -> None:
    op = make_operator(retry_schedule=[60, 300])
    receiver.handler.rcpt_replies[MARTIN] = "450 4.2.1 Mailbox busy, try later"
    t0 = op.clock()
    queue_id = op.submit([MARTIN])

    first = await op.service.deliver_due_once()
    [state] = op.service.queue.recipients(queue_id)
    assert first.deferred == 1
    assert state.status is QueueStatus.DEFERRED
    assert state.next_attempt_at == t0 + timedelta(seconds=60)  # schedule[0]
    assert (state.last_code, state.last_reply) == (450, "4.2.1 Mailbox busy, try later")

    op.clock.advance(59)  # not yet due: nothing is attempted
    assert (await op.service.deliver_due_once()).deferred == 0
    assert receiver.handler.mail_commands == 1

    op.clock.advance(1)  # due, still refused: the next wait is schedule[1]
    await op.service.deliver_due_once()
    [state] = op.service.queue.recipients(queue_id)
    assert state.attempts == 2
    assert state.next_attempt_at == op.clock() + timedelta(seconds=300)

    op.clock.advance(300)  # the last value repeats
    await op.service.deliver_due_once()
    [state] = op.service.queue.recipients(queue_id)
    assert state.next_attempt_at == op.clock() + timedelta(seconds=300)

    del receiver.handler.rcpt_replies[MARTIN]
    op.clock.advance(300)
    assert (await op.service.deliver_due_once()).delivered == 1
    [state] = op.service.queue.recipients(queue_id)
    assert (state.status, state.attempts) == (QueueStatus.DELIVERED, 4)
    assert len(receiver.messages) == 1
    assert ("queue.deferred", MARTIN) in audit_events(op.db)


async def test_receiver_down_then_up(make_operator: MakeOperator, receiver: Receiver) -> None:
    op = make_operator()
    receiver.stop()
    queue_id = op.submit([MARTIN])

    await op.service.deliver_due_once()
    [state] = op.service.queue.recipients(queue_id)
    assert state.status is QueueStatus.DEFERRED
    assert state.last_reply.startswith("4.4.1 no session with 127.0.0.1:")

    receiver.start()
    op.clock.advance(60)
    assert (await op.service.deliver_due_once()).delivered == 1
    assert [m.rcpt_tos for m in receiver.messages] == [[MARTIN]]


async def test_permanent_refusal_fails_and_the_local_sender_gets_a_dsn(
    make_operator: MakeOperator, receiver: Receiver
) -> None:
    op = make_operator()
    receiver.handler.rcpt_replies[DURAND] = "550 5.1.1 No such mailbox here"
    queue_id = op.submit([MARTIN, DURAND], subject="Compte rendu opératoire")

    report = await op.service.deliver_due_once()

    assert (report.delivered, report.failed, report.notices) == (1, 1, 1)
    assert [m.rcpt_tos for m in receiver.messages] == [[MARTIN]]  # the other one still went
    states = {s.address: s for s in op.service.queue.recipients(queue_id)}
    assert states[DURAND].status is QueueStatus.FAILED
    assert states[MARTIN].status is QueueStatus.DELIVERED

    [raw] = op.inbox(SENDER)
    dsn = parse(raw)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["To"] == f"<{SENDER}>"
    assert dsn["From"] == f"MAILER-DAEMON@{OUR_HOST}"
    assert dsn["Auto-Submitted"] == "auto-replied"
    human, _, headers = dsn.get_payload()
    assert human.get_content_type() == "text/plain"
    text = human.get_payload(decode=True).decode("utf-8")
    assert text.index("n'a pas pu être remis") < text.index("could not be delivered")
    assert DURAND in text and MARTIN not in text
    per_message, [recipient] = report_fields(dsn)
    assert per_message["Reporting-MTA"] == f"dns; {OUR_HOST}"
    assert "Arrival-Date" in per_message
    assert recipient["Final-Recipient"] == f"rfc822; {DURAND}"
    assert recipient["Action"] == "failed"
    assert recipient["Status"] == "5.1.1"
    assert recipient["Remote-MTA"] == "dns; 127.0.0.1"
    assert recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 No such mailbox here"
    assert "Last-Attempt-Date" in recipient
    assert headers.get_content_type() == "text/rfc822-headers"
    original = headers.get_payload(decode=True)
    assert b"Subject: Compte rendu op\xc3\xa9ratoire" in original
    assert b"voici le compte rendu" not in original  # the header only, never the body
    assert ("queue.dsn_sent", SENDER) in audit_events(op.db)
    assert ("queue.failed", DURAND) in audit_events(op.db)


async def test_domain_outside_the_trust_space_fails_with_a_dsn(
    make_operator: MakeOperator, receiver: Receiver
) -> None:
    op = make_operator(routes={UNLISTED_DOMAIN: f"127.0.0.1:{receiver.port}"})
    queue_id = op.submit([f"quelquun@{UNLISTED_DOMAIN}"])

    report = await op.service.deliver_due_once()

    assert report.failed == 1
    assert receiver.handler.mail_commands == 0  # nothing was even attempted
    [state] = op.service.queue.recipients(queue_id)
    assert state.status is QueueStatus.FAILED
    assert "not in the MSSanté trust space" in state.last_reply
    [raw] = op.inbox(SENDER)
    _, [recipient] = report_fields(parse(raw))
    assert recipient["Status"] == "5.7.1"
    assert recipient["Action"] == "failed"
    assert "Remote-MTA" not in recipient  # our own decision
    assert recipient["Diagnostic-Code"].startswith(
        "X-MSSante; 550 5.7.1 domain hors-espace.test is not in the MSSant"
    )


async def test_delay_notice_once_then_give_up_with_a_dsn(
    make_operator: MakeOperator, receiver: Receiver
) -> None:
    op = make_operator(retry_schedule=[60, 300], delay_notice_after=600, give_up_after=3600)
    receiver.handler.rcpt_replies[MARTIN] = "451 4.3.0 Temporary local problem"
    t0 = op.clock()
    queue_id = op.submit([MARTIN])

    await op.service.deliver_due_once()
    assert op.inbox() == []  # deferred, but not for long enough to tell the sender

    op.clock.advance(700)
    report = await op.service.deliver_due_once()
    assert (report.deferred, report.notices) == (1, 1)
    [notice] = op.inbox()
    delayed = parse(notice)
    subject = str(make_header(decode_header(delayed["Subject"])))
    assert subject == "Remise retardée / Delivery delayed: Compte rendu"
    _, [recipient] = report_fields(delayed)
    assert recipient["Action"] == "delayed"
    assert recipient["Status"] == "4.3.0"
    assert "Will-Retry-Until" in recipient
    [state] = op.service.queue.recipients(queue_id)
    assert state.delay_notified

    for _ in range(5):  # more deferrals: no second notice
        op.clock.advance(300)
        await op.service.deliver_due_once()
    assert len(op.inbox()) == 1

    op.clock.now = t0 + timedelta(seconds=3600)  # the give-up time: one last attempt, then fail
    report = await op.service.deliver_due_once()
    assert (report.failed, report.notices) == (1, 1)
    [state] = op.service.queue.recipients(queue_id)
    assert state.status is QueueStatus.FAILED
    _, [recipient] = report_fields(parse(op.inbox()[-1]))
    assert recipient["Action"] == "failed"
    assert recipient["Status"] == "5.4.7"  # delivery time expired
    assert recipient["Diagnostic-Code"] == "smtp; 451 4.3.0 Temporary local problem"
    events = [e for e, _ in audit_events(op.db)]
    assert events.count("queue.delay_notice_sent") == 1
    assert events.count("queue.dsn_sent") == 1


async def test_never_a_dsn_about_a_dsn(make_operator: MakeOperator, receiver: Receiver) -> None:
    op = make_operator()
    receiver.handler.rcpt_replies[MARTIN] = "550 5.1.1 No such mailbox here"
    queue_id = op.submit([MARTIN], sender="")  # a report: empty envelope sender

    report = await op.service.deliver_due_once()

    assert (report.failed, report.notices) == (1, 0)
    assert receiver.handler.messages == []
    assert op.inbox() == []
    [state] = op.service.queue.recipients(queue_id)
    assert state.status is QueueStatus.FAILED
    assert "queue.dsn_sent" not in [e for e, _ in audit_events(op.db)]


async def test_dsn_to_a_remote_sender_is_queued_with_an_empty_sender(
    make_operator: MakeOperator, receiver: Receiver
) -> None:
    op = make_operator()
    remote_sender = f"secretariat@{PEER_DOMAIN}"
    receiver.handler.rcpt_replies[MARTIN] = "550 5.1.1 No such mailbox here"
    op.submit([MARTIN], sender=remote_sender)

    report = await op.service.deliver_due_once()

    # The DSN, queued for the same peer, left at once over the connection still open.
    assert (report.failed, report.notices, report.delivered, report.connections) == (1, 1, 1, 1)
    [dsn] = receiver.messages
    assert dsn.mail_from == "<>"  # MAIL FROM:<> (aiosmtpd keeps the brackets of the null path)
    assert dsn.rcpt_tos == [remote_sender]
    assert b"report-type=delivery-status" in dsn.data


async def test_missing_whitelist_entry_after_queueing_still_fails(
    make_operator: MakeOperator, receiver: Receiver
) -> None:
    """The whitelist is read at delivery time: a domain removed since submission fails."""
    op = make_operator()
    queue_id = op.submit([MARTIN])
    listed = op.whitelist_ref[0]
    assert listed is not None
    from mssante.trust.model import Whitelist

    op.whitelist_ref[0] = Whitelist(
        listed.generated_at, tuple(d for d in listed.domains if d.name != PEER_DOMAIN)
    )

    await op.service.deliver_due_once()

    assert [s.status for s in recipients_of(op.db, queue_id)] == [QueueStatus.FAILED]
    assert receiver.handler.mail_commands == 0
