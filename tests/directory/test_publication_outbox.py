"""The operator's half of publication: mailbox changes go to the outbox in their own transaction,
and the publisher sends them to a real authority over mutual TLS, in order, retrying while the
authority is away, recording refusals for good (docs/publication.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from publication_helpers import (
    DURAND,
    MARTIN,
    MARTIN_ID_NAT,
    NORD_DOMAIN,
    Certificates,
    authority_settings,
    database,
    make_certificates,
    operator_settings,
    running_authority,
)
from sqlalchemy import select

from mssante.audit.events import Actor
from mssante.audit.log import iter_entries
from mssante.config import Settings
from mssante.directory.outbox import Settlement, claim_due, outbox_rows, settle
from mssante.operator.publisher import DirectoryPublisher, Verdict, judge
from mssante.ops.accounts import AccountError, Accounts, NewPerson
from mssante.ops.delegation import Delegations
from mssante.pki.ids import luhn_key
from mssante.runtime import Node, open_node
from mssante.store.models import DirectoryEntry, DirectoryOutbox, OutboxStatus
from support import free_port_block, run_mssante

PASSWORD = "mot-de-passe-solide-42"
ACTOR = Actor("test")
LEFEVRE = f"sophie.lefevre@{NORD_DOMAIN}"
LEFEVRE_ID_NAT = "8" + "1000100020" + luhn_key("1000100020")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("outbox-pki"))


@pytest.fixture
def databases(tmp_path: Path) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    with database(tmp_path, "authority") as authority, database(tmp_path, "nord") as nord:
        yield authority, nord


@pytest.fixture
def port() -> int:
    return free_port_block(2)


@pytest.fixture
def nord(
    certs: Certificates, tmp_path: Path, databases: tuple[dict[str, str], dict[str, str]], port: int
) -> Iterator[Node]:
    settings = operator_settings(certs, tmp_path, databases[1], f"https://localhost:{port}/fhir")
    node = open_node(settings)
    yield node
    node.close()


def _authority(certs: Certificates, tmp_path: Path, databases: Any) -> Settings:
    return authority_settings(certs, tmp_path, databases[0])


def _person(node: Node, address: str = MARTIN, id_nat: str = MARTIN_ID_NAT) -> None:
    last, first = address.split("@", maxsplit=1)[0].split(".")[::-1]
    Accounts(node.db).create_person(NewPerson(address, PASSWORD, id_nat, last, first), ACTOR)


def _outbox(node: Node) -> list[DirectoryOutbox]:
    with node.db.session() as session:
        return list(session.execute(select(DirectoryOutbox).order_by(DirectoryOutbox.id)).scalars())


def _publisher(node: Node, clock: list[datetime]) -> DirectoryPublisher:
    return DirectoryPublisher(node.settings, node.db, clock=lambda: clock[0])


# -- the outbox, in the mailbox's transaction --------------------------------------------------


def test_each_mailbox_change_writes_the_outbox_in_its_transaction(nord: Node) -> None:
    _person(nord)
    accounts = Accounts(nord.db)
    assert accounts.set_liste_rouge(MARTIN, True, ACTOR)
    assert not accounts.set_liste_rouge(MARTIN, True, ACTOR)  # no change, nothing to publish
    accounts.close_mailbox(MARTIN, ACTOR)
    with pytest.raises(AccountError):  # the address is taken: no mailbox, no publication
        _person(nord)
    Delegations(nord.db).create_org(f"cardiologie@{NORD_DOMAIN}", "Cardiologie", ACTOR)

    rows = _outbox(nord)
    assert [(r.address, r.operation.value) for r in rows] == [
        (MARTIN, "insert"),
        (MARTIN, "replace"),
        (MARTIN, "delete"),
        (f"cardiologie@{NORD_DOMAIN}", "insert"),
    ]
    assert {r.status for r in rows} == {OutboxStatus.PENDING}
    assert rows[0].resource == "Practitioner"
    assert rows[0].identifier == f"urn:oid:1.2.250.1.71.4.2.1|{MARTIN_ID_NAT}"
    assert rows[3].identifier == ""  # an ORG mailbox without a structure: this operator's
    replace = json.loads(rows[1].body)["parameter"][0]["part"]
    metadata = replace[2]["valueContactPoint"]["extension"][1]["extension"]
    assert {"url": "listeRouge", "valueBoolean": True} in metadata


# -- the publisher against a real authority ----------------------------------------------------


async def test_the_publisher_sends_the_outbox_over_mutual_tls(
    certs: Certificates, tmp_path: Path, databases: Any, port: int, nord: Node
) -> None:
    _person(nord)
    Delegations(nord.db).create_org(f"cardiologie@{NORD_DOMAIN}", "Cardiologie", ACTOR)
    clock = [datetime.now(UTC)]
    async with running_authority(_authority(certs, tmp_path, databases), certs, port) as authority:
        report = await _publisher(nord, clock).send_due_once()
        assert (report.sent, report.retried, report.refused) == (2, 0, 0), report.answers
        with authority.node.db.session() as session:
            published = session.execute(
                select(DirectoryEntry.address).order_by(DirectoryEntry.address)
            )
            assert list(published.scalars()) == [f"cardiologie@{NORD_DOMAIN}", MARTIN]
    assert {r.status for r in _outbox(nord)} == {OutboxStatus.SENT}
    events = [e for e in iter_entries(nord.db) if e.event.startswith("directory.")]
    assert [(e.event, e.target) for e in events] == [
        ("directory.published", MARTIN),
        ("directory.published", f"cardiologie@{NORD_DOMAIN}"),
    ]


async def test_changes_wait_while_the_authority_is_away_then_go_in_order(
    certs: Certificates, tmp_path: Path, databases: Any, port: int, nord: Node
) -> None:
    _person(nord)
    _person(nord, LEFEVRE, LEFEVRE_ID_NAT)
    accounts = Accounts(nord.db)
    accounts.set_liste_rouge(MARTIN, True, ACTOR)
    accounts.set_liste_rouge(MARTIN, False, ACTOR)
    accounts.set_liste_rouge(MARTIN, True, ACTOR)
    clock = [datetime.now(UTC)]
    publisher = _publisher(nord, clock)

    away = await publisher.send_due_once()  # nothing listens on the port yet
    assert (away.sent, away.retried, away.pause) == (0, 1, 1.0)
    assert away.answers[0].verdict is Verdict.AWAY
    rows = _outbox(nord)
    assert [r.attempts for r in rows] == [1, 0, 0, 0, 0]  # the round stopped at the first
    assert all(r.claimed_by == "" for r in rows)  # the others were given back untouched
    assert all(r.status is OutboxStatus.PENDING for r in rows)
    assert (await publisher.send_due_once()).claimed == 1  # Lefèvre's; Martin's waits its turn

    async with running_authority(_authority(certs, tmp_path, databases), certs, port) as authority:
        clock[0] += timedelta(seconds=5)
        rounds = 0
        while any(r.status is OutboxStatus.PENDING for r in _outbox(nord)):
            rounds += 1
            report = await publisher.send_due_once()
            assert report.retried == 0, report.answers
        assert rounds == 4  # Martin's four changes, one per round, in order
        accepted = [
            e.context["changes"][0]
            for e in iter_entries(authority.node.db)
            if e.event == "directory.patch_accepted" and e.target.endswith(MARTIN_ID_NAT)
        ]
        assert [(c["op"], c["liste_rouge"]) for c in accepted] == [
            ("insert", False), ("replace", True), ("replace", False), ("replace", True),
        ]  # fmt: skip
        with authority.node.db.session() as session:
            entry = session.execute(
                select(DirectoryEntry).where(DirectoryEntry.address == MARTIN)
            ).scalar_one()
            assert entry.liste_rouge


async def test_a_refusal_is_recorded_once_and_later_changes_go_on(
    certs: Certificates, tmp_path: Path, databases: Any, port: int, nord: Node
) -> None:
    stray = "jean.autre@ailleurs.mssante.test"  # not a domain of this operator's at the authority
    _person(nord, stray, "8" + "1000300010" + luhn_key("1000300010"))
    _person(nord)
    clock = [datetime.now(UTC)]
    publisher = _publisher(nord, clock)
    async with running_authority(_authority(certs, tmp_path, databases), certs, port):
        report = await publisher.send_due_once()
        assert (report.sent, report.refused) == (1, 1), report.answers
        clock[0] += timedelta(hours=2)
        assert (await publisher.send_due_once()).claimed == 0  # never tried again
    failed, sent = _outbox(nord)
    assert (failed.status, failed.last_status, failed.attempts) == (OutboxStatus.FAILED, 403, 1)
    assert "ailleurs.mssante.test is not one of this operator's" in failed.last_error
    assert sent.status is OutboxStatus.SENT
    [refused] = [e for e in iter_entries(nord.db) if e.event == "directory.publication_refused"]
    assert (refused.target, refused.context["http_status"]) == (stray, 403)


def test_a_claim_whose_lease_ended_goes_to_another_worker(nord: Node) -> None:
    _person(nord)
    now, lease = datetime.now(UTC), timedelta(seconds=60)
    [mine] = claim_due(nord.db, worker="a", now=now, limit=10, lease=lease)
    assert claim_due(nord.db, worker="b", now=now, limit=10, lease=lease) == []
    [theirs] = claim_due(nord.db, worker="b", now=now + lease * 2, limit=10, lease=lease)
    assert theirs.id == mine.id
    late = Settlement(mine, OutboxStatus.SENT, 200, "accepted")
    assert not settle(nord.db, late, worker="a", now=now)  # "a" lost it: "b"'s outcome counts
    assert settle(nord.db, Settlement(theirs, OutboxStatus.SENT, 200, "ok"), worker="b", now=now)


def test_answers_are_judged_by_their_status() -> None:
    outcome = json.dumps(
        {"resourceType": "OperationOutcome", "issue": [{"details": {"text": "pas à vous"}}]}
    ).encode()
    assert judge(200, b"{}").verdict is Verdict.SENT
    assert (judge(403, outcome).verdict, judge(403, outcome).message) == (
        Verdict.REFUSED,
        "pas à vous",
    )
    for status in (400, 401, 404, 412, 413, 415, 422):
        assert judge(status, b"").verdict is Verdict.REFUSED, status
    for status in (408, 409, 429, 500, 301):
        assert judge(status, b"").verdict is Verdict.RETRY, status
    for status in (502, 503, 504):
        assert judge(status, b"not json").verdict is Verdict.AWAY, status


def test_the_outbox_command_lists_pending_and_failed(nord: Node, tmp_path: Path) -> None:
    _person(nord)
    _person(
        nord,
        DURAND.replace("cabinet-sud", "hopital-nord"),
        "8" + "1000200010" + luhn_key("1000200010"),
    )
    [first, second] = outbox_rows(nord.db)
    settle_failed = Settlement(
        claim_due(nord.db, worker="t", now=datetime.now(UTC), limit=1, lease=timedelta(seconds=60))[0],
        OutboxStatus.FAILED, 403, "refusé",
    )  # fmt: skip
    assert settle(nord.db, settle_failed, worker="t", now=datetime.now(UTC))
    config = tmp_path / "nord.toml"
    db = nord.settings.database
    lines = [f'data_dir = "{nord.settings.data_dir}"', "[database]", f'url = "{db.url}"']
    if db.schema_name:
        lines.append(f'schema_name = "{db.schema_name}"')
    config.write_text("\n".join(lines) + "\n")

    listed = run_mssante("directory", "outbox", "--config", str(config), "--json")
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    assert data["counts"] == {"pending": 1, "sent": 0, "failed": 1}
    assert [(r["id"], r["status"]) for r in data["rows"]] == [
        (first.id, "failed"),
        (second.id, "pending"),
    ]
    text = run_mssante("directory", "outbox", "--config", str(config))
    assert "1 en attente / pending, 1 refusées / refused" in text.stdout
    assert "HTTP 403 refusé" in text.stdout
