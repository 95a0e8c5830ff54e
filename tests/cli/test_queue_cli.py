"""`mssante queue list|show|retry|drop` on a real operator database (SQLite or PostgreSQL):
the outbound queue with each recipient's reason, and the operator's retry and drop, audited
in their transaction."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import (
    DOMAIN,
    OTHER_PEER,
    PASSWORD,
    PEER,
    SENDER,
    SENDER_ID_NAT,
    OperatorNode,
    Result,
    make_operator,
    run,
)
from sqlalchemy import func, select

from mssante.audit.events import Actor
from mssante.audit.log import AuditEntry, iter_entries
from mssante.ops.accounts import Accounts, NewPerson
from mssante.ops.mailstore import MailStore
from mssante.queue import admin
from mssante.queue.admin import DROPPED_TEXT
from mssante.queue.store import Reply, claim_due, recipients_of
from mssante.store.models import QueueMessage, QueueStatus

A, B, C = f"anne@{PEER}", f"bruno@{PEER}", f"chloe@{OTHER_PEER}"
REFUSED = Reply(451, "4.4.1 connexion refusée / connection refused", f"mx.{PEER}")
UNKNOWN = Reply(550, "5.1.1 unknown user", f"mx.{OTHER_PEER}")
OK = Reply(250, "2.0.0 accepted", f"mx.{PEER}")


@pytest.fixture
def node(tmp_path: Path, database_settings: tuple[str, str]) -> Iterator[OperatorNode]:
    op = make_operator(tmp_path, database_settings)
    yield op
    op.db.dispose()


@pytest.fixture
def with_sender(node: OperatorNode) -> OperatorNode:
    """The sender has a mailbox here: DSNs land in its INBOX."""
    Accounts(node.db).create_person(
        NewPerson(SENDER, PASSWORD, SENDER_ID_NAT, "Martin", "Hélène"),
        Actor("test"),
        domains=[DOMAIN],
    )
    return node


def _q(node: OperatorNode, *args: str, input_text: str | None = None) -> Result:
    return run("queue", *args, "--config", str(node.config), input_text=input_text)


def _events(node: OperatorNode, name: str) -> list[AuditEntry]:
    return [e for e in iter_entries(node.db) if e.event == name]


def _states(node: OperatorNode, queue_id: int) -> dict[str, QueueStatus]:
    return {r.address: r.status for r in recipients_of(node.db, queue_id)}


def _due_now(node: OperatorNode) -> set[str]:
    """Who a worker would take now (and takes: only for the end of a test)."""
    batches = claim_due(node.db, worker_id="probe", limit=100, now=datetime.now(UTC))
    return {c.address for b in batches for c in b.claims}


# -- list and show -------------------------------------------------------------------------------


def test_list_shows_what_waits_and_why(node: OperatorNode) -> None:
    first = node.submit([A, B])
    failed = node.submit([C])
    node.attempt({A: REFUSED, B: OK, C: UNKNOWN})
    in_flight = node.submit([f"denis@{PEER}"])
    node.attempt({})  # claimed by a worker, no reply yet

    listed = _q(node, "list", "--json")
    assert listed.code == 0, listed.err
    messages = json.loads(listed.out)
    assert [m["id"] for m in messages] == [first, in_flight]  # unfinished only, oldest first
    [waiting] = messages[0]["recipients"]  # B was delivered: not waiting
    assert waiting["address"] == A and waiting["status"] == "deferred"
    assert (waiting["attempts"], waiting["last_code"]) == (1, 451)
    assert waiting["last_reply"] == REFUSED.text and waiting["remote_mta"] == f"mx.{PEER}"
    assert datetime.fromisoformat(waiting["next_attempt_at"]) > datetime.now(UTC)
    assert messages[0]["sender"] == SENDER and messages[0]["message_id"].endswith(f"@{DOMAIN}>")
    assert messages[1]["recipients"][0]["status"] == "in_flight"

    text = _q(node, "list")
    assert text.code == 0, text.err
    assert A in text.out and "différé / deferred" in text.out and "en cours / in flight" in text.out
    assert "451 4.4.1 connexion refusée / connection refused" in text.out
    assert "2 message(s), 2 destinataire(s) / recipient(s)" in text.out
    assert B not in text.out and C not in text.out

    only_failed = json.loads(_q(node, "list", "--status", "failed", "--json").out)
    assert [(m["id"], [r["address"] for r in m["recipients"]]) for m in only_failed] == [
        (failed, [C])
    ]
    by_domain = json.loads(_q(node, "list", "--all", "--domain", OTHER_PEER, "--json").out)
    assert [m["id"] for m in by_domain] == [failed]
    everything = json.loads(_q(node, "list", "--all", "--json").out)
    assert [len(m["recipients"]) for m in everything] == [2, 1, 1]
    nobody = _q(node, "list", "--sender", f"personne@{DOMAIN}")
    assert nobody.code == 0 and "aucun message en file / no message in the queue" in nobody.out


def test_list_refuses_bad_filters(node: OperatorNode) -> None:
    both = _q(node, "list", "--all", "--status", "failed")
    assert both.code == 2 and "--all ou --status" in both.err
    bogus = _q(node, "list", "--status", "lost")
    assert bogus.code == 2 and "'lost' is not one of" in bogus.err
    zero = _q(node, "list", "--limit", "0")
    assert zero.code == 2 and "Traceback" not in zero.err


def test_show_gives_every_recipient_with_attempts_and_reply(node: OperatorNode) -> None:
    queue_id = node.submit([A, B, C])
    node.attempt({A: REFUSED, B: OK, C: UNKNOWN})

    shown = _q(node, "show", str(queue_id), "--json")
    assert shown.code == 0, shown.err
    data = json.loads(shown.out)
    assert data["id"] == queue_id and data["sender"] == SENDER and data["account"] == SENDER
    rows = {r["address"]: r for r in data["recipients"]}
    assert {a: r["status"] for a, r in rows.items()} == {
        A: "deferred",
        B: "delivered",
        C: "failed",
    }
    assert rows[A]["next_attempt_at"] is not None and rows[B]["next_attempt_at"] is None
    assert rows[C]["last_code"] == 550 and rows[C]["last_reply"] == "5.1.1 unknown user"
    assert all(r["attempts"] == 1 for r in rows.values())

    text = _q(node, "show", str(queue_id))
    assert text.code == 0, text.err
    assert data["message_id"] in text.out and SENDER in text.out
    assert "distribué / delivered" in text.out and "échec / failed" in text.out
    assert "550 5.1.1 unknown user" in text.out and f"mx.{OTHER_PEER}" in text.out


def test_show_refuses_an_unknown_id_in_one_line(node: OperatorNode) -> None:
    missing = _q(node, "show", "999")
    assert missing.code == 1
    assert missing.err.strip() == (
        "Error: aucun message n° 999 dans la file / no message 999 in the queue"
    )
    assert _q(node, "show", "abc").code == 2


# -- retry ---------------------------------------------------------------------------------------


def test_retry_makes_deferred_and_failed_due_now_audited(node: OperatorNode) -> None:
    queue_id = node.submit([A, C])
    node.attempt({A: REFUSED, C: UNKNOWN})
    delivered = node.submit([B])
    node.attempt({B: OK})
    queued_before = len(_events(node, "queue.message_queued"))

    retried = _q(node, "retry", str(queue_id))
    assert retried.code == 0, retried.err
    assert "2 destinataire(s) relancé(s) / retried" in retried.out
    rows = {r.address: r for r in recipients_of(node.db, queue_id)}
    assert {a: r.status for a, r in rows.items()} == {A: QueueStatus.QUEUED, C: QueueStatus.QUEUED}
    assert all(r.attempts == 1 for r in rows.values())  # attempts and last reply are kept
    assert rows[A].last_reply == REFUSED.text
    events = _events(node, "queue.retried")
    assert sorted(e.target for e in events) == [A, C]
    assert all(e.actor.startswith("cli:") for e in events)
    assert {e.target: e.context["previous_status"] for e in events} == {
        A: "deferred",
        C: "failed",
    }
    assert {e.context["queue_id"] for e in events} == {queue_id}
    assert len(_events(node, "queue.message_queued")) == queued_before  # nothing re-queued
    assert _due_now(node) == {A, C}  # a worker takes them at its next poll

    nothing = _q(node, "retry", str(delivered))
    assert nothing.code == 1
    assert nothing.err.strip() == (
        "Error: rien à relancer / nothing to retry: déjà distribué / already delivered"
    )
    assert len(_events(node, "queue.retried")) == 2  # the refusal changed nothing


def test_retry_by_domain_and_recipient(node: OperatorNode) -> None:
    first = node.submit([A, C])
    second = node.submit([B])
    node.attempt({A: REFUSED, B: REFUSED, C: REFUSED})

    assert _q(node, "retry", "--domain", OTHER_PEER).code == 0
    assert _states(node, first) == {A: QueueStatus.DEFERRED, C: QueueStatus.QUEUED}
    one = _q(node, "retry", "--domain", PEER, "--recipient", B.upper(), "--json")
    assert one.code == 0, one.err
    assert [r["address"] for r in json.loads(one.out)["changed"]] == [B]
    assert _states(node, second) == {B: QueueStatus.QUEUED}
    assert _states(node, first)[A] is QueueStatus.DEFERRED


def test_retry_refuses_bad_selections_and_changes_nothing(node: OperatorNode) -> None:
    queue_id = node.submit([A])
    node.attempt({A: REFUSED})
    refusals = {
        (): "Error: indiquez des numéros de file ou --domain / give queue ids or --domain",
        ("999",): "Error: aucun message n° 999 dans la file / no message 999 in the queue",
        (str(queue_id), "--recipient", f"zoe@{PEER}"): (
            f"Error: aucun destinataire ne correspond / no recipient matches: file / queue "
            f"{queue_id}, destinataire / recipient zoe@{PEER}"
        ),
        ("--domain", "ailleurs.test"): (
            "Error: aucun destinataire ne correspond / no recipient matches: "
            "domaine / domain ailleurs.test"
        ),
    }
    for args, message in refusals.items():
        refused = _q(node, "retry", *args)
        assert (refused.code, refused.err.strip()) == (1, message), args
    assert _q(node, "retry", "abc").code == 2
    assert _q(node, "retry", "0").code == 2
    assert _states(node, queue_id) == {A: QueueStatus.DEFERRED}
    assert _events(node, "queue.retried") == []


# -- drop ----------------------------------------------------------------------------------------


def test_drop_never_sends_and_tells_the_sender(with_sender: OperatorNode) -> None:
    node = with_sender
    queue_id = node.submit([A, B], subject="Résultats")
    node.attempt({A: REFUSED})  # B stays in flight: a worker holds it

    dropped = _q(node, "drop", str(queue_id), "--yes", "--reason", "destinataire parti")
    assert dropped.code == 0, dropped.err
    assert "1 destinataire(s) retiré(s) / dropped" in dropped.out
    assert "1 avis d'échec envoyé(s) / failure DSN(s) sent" in dropped.out
    assert f"ignoré / skipped: {queue_id} {B} (envoi en cours" in dropped.err
    rows = {r.address: r for r in recipients_of(node.db, queue_id)}
    assert rows[A].status is QueueStatus.FAILED and rows[A].next_attempt_at is None
    assert rows[A].last_code == 550 and rows[A].remote_mta == ""
    assert rows[A].last_reply == f"{DROPPED_TEXT} (destinataire parti)"
    assert rows[A].attempts == 1  # no attempt was made
    assert rows[B].status is QueueStatus.IN_FLIGHT  # the worker's claim is left alone
    far = datetime.now(UTC) + timedelta(days=30)
    later = claim_due(node.db, worker_id="later", limit=100, now=far)
    assert A not in {c.address for b in later for c in b.claims}  # never sent

    [event] = _events(node, "queue.dropped")
    assert event.target == A and event.actor.startswith("cli:")
    assert event.context["reason"] == "destinataire parti" and event.context["dsn"] is True
    assert (event.context["queue_id"], event.context["previous_status"]) == (queue_id, "deferred")
    [dsn_event] = _events(node, "queue.dsn_sent")
    assert dsn_event.target == SENDER and dsn_event.context["recipients"] == [A]

    store = MailStore(node.db, node.blobs)
    [report] = store.list_messages(SENDER)
    raw = store.read(report.blob_sha256)
    status = message_from_bytes(raw).get_payload()[1].as_string()
    assert f"Final-Recipient: rfc822; {A}" in status and "Action: failed" in status
    assert "Status: 5.0.0" in status and "destinataire parti" in raw.decode()
    assert f"X-MSSante-Queue-ID: {queue_id}" in status
    assert b"voici le compte rendu" not in raw  # the header only, never the body

    shown = json.loads(_q(node, "show", str(queue_id), "--json").out)
    assert [r["dropped"] for r in shown["recipients"]] == [True, False]
    assert "retiré / dropped" in _q(node, "list", "--all").out
    verified = run("audit", "verify", "--config", str(node.config))
    assert verified.code == 0, verified.out


def test_dropped_stays_dropped(node: OperatorNode) -> None:
    queue_id = node.submit([A])
    assert _q(node, "drop", str(queue_id), "--yes", "--no-dsn").code == 0
    again = _q(node, "drop", str(queue_id), "--yes")
    assert again.code == 1
    assert (
        again.err.strip()
        == "Error: rien à retirer / nothing to drop: déjà retiré / already dropped"
    )
    revived = _q(node, "retry", str(queue_id))
    assert revived.code == 1
    assert "retiré par un opérateur / dropped by an operator" in revived.err
    assert len(_events(node, "queue.dropped")) == 1 and _events(node, "queue.retried") == []


def test_drop_asks_first_and_can_skip_the_dsn(with_sender: OperatorNode) -> None:
    node = with_sender
    queue_id = node.submit([A])
    for answer in (None, "n\n"):
        aborted = _q(node, "drop", str(queue_id), input_text=answer)
        assert aborted.code == 1 and "Aborted" in aborted.err
    assert _states(node, queue_id) == {A: QueueStatus.QUEUED}
    assert _events(node, "queue.dropped") == []

    done = _q(node, "drop", str(queue_id), "--no-dsn", "--json", input_text="y\n")
    assert done.code == 0, done.err
    report = json.loads(done.out[done.out.index("{") :])
    assert [r["address"] for r in report["changed"]] == [A] and report["dsn"] == 0
    assert _events(node, "queue.dropped")[0].context["dsn"] is False
    assert _events(node, "queue.dsn_sent") == []
    assert MailStore(node.db, node.blobs).list_messages(SENDER) == []


def test_a_dropped_report_gets_no_report(node: OperatorNode) -> None:
    """RFC 3461 §6.2: a message with an empty envelope sender (a DSN) is never reported on."""
    queue_id = node.submit([A], sender="")
    dropped = _q(node, "drop", str(queue_id), "--yes", "--json")
    assert dropped.code == 0, dropped.err
    assert json.loads(dropped.out)["dsn"] == 0
    with node.db.session() as session:
        assert session.execute(select(func.count()).select_from(QueueMessage)).scalar_one() == 1
    assert _events(node, "queue.dropped")[0].context["dsn"] is False


def test_drop_refuses_finished_recipients(node: OperatorNode) -> None:
    queue_id = node.submit([B, C])
    node.attempt({B: OK, C: UNKNOWN})
    refused = _q(node, "drop", str(queue_id), "--yes")
    assert refused.code == 1
    assert refused.err.strip() == (
        "Error: rien à retirer / nothing to drop: déjà distribué / already delivered; "
        "déjà en échec / already failed"
    )
    assert _states(node, queue_id) == {B: QueueStatus.DELIVERED, C: QueueStatus.FAILED}
    assert _events(node, "queue.dropped") == []


def test_a_recipient_claimed_meanwhile_is_left_to_its_worker(
    node: OperatorNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker claims the recipient between the command's read and its update: the update
    (conditional on the state) leaves it to the worker, and the command says so."""
    queue_id = node.submit([A])
    read = admin._split

    def read_then_a_worker_claims(*args: Any) -> Any:
        found = read(*args)
        assert _due_now(node) == {A}  # a delivery worker, in its own transaction
        return found

    monkeypatch.setattr(admin, "_split", read_then_a_worker_claims)
    raced = _q(node, "drop", str(queue_id), "--yes")
    assert raced.code == 1
    assert raced.err.strip() == (
        "Error: rien à retirer / nothing to drop: pris par l'envoi entre-temps / claimed by "
        "delivery meanwhile"
    )
    assert _states(node, queue_id) == {A: QueueStatus.IN_FLIGHT}
    assert _events(node, "queue.dropped") == []
