"""Mailboxes are created in the operator's own domains only (operator.domains): refused in the
core (accounts, APP and ORG mailboxes), nothing stored, and said in one line by the command."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import DOMAIN, PASSWORD, SENDER_ID_NAT, OperatorNode, make_operator, run
from sqlalchemy import func, select

from mssante.audit.events import Actor
from mssante.ops.accounts import AccountError, Accounts, NewApplication, NewPerson
from mssante.ops.delegation import Delegations
from mssante.store.models import Account, AuditEntry, DirectoryOutbox, Mailbox

FOREIGN = "helene.martin@gmail.com"
STRUCTURE = "341459958900028"
REFUSAL = (
    "{address} : le domaine {domain} n'est pas servi par cet opérateur (domaines : {ours}) / "
    "the domain {domain} is not served by this operator (domains: {ours})"
)


@pytest.fixture
def node(tmp_path: Path, database_settings: tuple[str, str]) -> Iterator[OperatorNode]:
    op = make_operator(tmp_path, database_settings)
    yield op
    op.db.dispose()


def _stored(node: OperatorNode) -> tuple[int, ...]:
    """Accounts, mailboxes, audit entries, directory outbox rows."""
    with node.db.session() as session:
        return tuple(
            session.execute(select(func.count()).select_from(model)).scalar_one()
            for model in (Account, Mailbox, AuditEntry, DirectoryOutbox)
        )


def _refusal(address: str, ours: str = DOMAIN) -> str:
    return REFUSAL.format(address=address, domain=address.rpartition("@")[2], ours=ours)


def test_account_add_refuses_a_foreign_domain(node: OperatorNode) -> None:
    before = _stored(node)
    args = ["--id-nat", SENDER_ID_NAT, "--last-name", "Martin", "--first-name", "Hélène"]
    refused = run(
        "account", "add", "--address", FOREIGN, *args, "--password", PASSWORD,
        "--config", str(node.config),
    )  # fmt: skip
    assert refused.code == 1
    assert refused.err.strip() == f"Error: {_refusal(FOREIGN)}"
    assert _stored(node) == before

    app = run(
        "account", "add-app", "--address", "labo@clinique-est.mssante.test",
        "--structure-id", STRUCTURE, "--config", str(node.config),
    )  # fmt: skip
    assert app.code == 1
    assert app.err.strip() == f"Error: {_refusal('labo@clinique-est.mssante.test')}"
    assert _stored(node) == before

    mine = f"Helene.Martin@{DOMAIN.upper()}"  # the domain compares in lower case
    created = run(
        "account", "add", "--address", mine, *args, "--password", PASSWORD,
        "--config", str(node.config),
    )  # fmt: skip
    assert created.code == 0, created.err
    assert f"created helene.martin@{DOMAIN}" in created.out


def test_the_core_refuses_every_kind_of_mailbox(node: OperatorNode) -> None:
    accounts, delegations, admin = Accounts(node.db), Delegations(node.db), Actor("test")
    domains = [DOMAIN, "Cabinet-Sud.mssante.test."]  # as an operator may write them
    before = _stored(node)
    person = NewPerson(FOREIGN, PASSWORD, SENDER_ID_NAT, "Martin", "Hélène")
    ours = f"cabinet-sud.mssante.test, {DOMAIN}"
    with pytest.raises(AccountError) as refused:
        accounts.create_person(person, admin, domains=domains)
    assert refused.value.public == _refusal(FOREIGN, ours)
    with pytest.raises(AccountError):
        accounts.create_application(
            NewApplication("labo@ailleurs.test", STRUCTURE), admin, domains=domains
        )
    with pytest.raises(AccountError) as org:
        delegations.create_org("accueil@ailleurs.test", "Accueil", admin, domains=domains)
    assert org.value.public == _refusal("accueil@ailleurs.test", ours)
    with pytest.raises(AccountError) as none:  # an operator serving no domain creates none
        delegations.create_org(f"accueil@{DOMAIN}", "Accueil", admin, domains=[])
    assert "(domaines : aucun)" in none.value.public and "(domains: none)" in none.value.public
    assert _stored(node) == before

    assert delegations.create_org("accueil@cabinet-sud.mssante.test", "", admin, domains=domains)
    view = accounts.create_application(
        NewApplication(f"labo@{DOMAIN}", STRUCTURE), admin, domains=domains
    )
    assert view.login == f"labo@{DOMAIN}"
