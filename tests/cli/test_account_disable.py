"""`mssante account disable`: the account can no longer log in, the revocation is recorded for
the running servers' watchers (docs/revocation.md), and an unknown login is refused in one
line with nothing written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import DOMAIN, PASSWORD, SENDER, SENDER_ID_NAT, OperatorNode, make_operator, run
from sqlalchemy import func, select

from mssante.audit.events import Actor
from mssante.ops.accounts import Accounts, NewPerson
from mssante.store.models import Account, AuditEntry, Revocation


@pytest.fixture
def node(tmp_path: Path, database_settings: tuple[str, str]) -> Iterator[OperatorNode]:
    op = make_operator(tmp_path, database_settings)
    Accounts(op.db).create_person(
        NewPerson(SENDER, PASSWORD, SENDER_ID_NAT, "Martin", "Hélène"),
        Actor("test"),
        domains=[DOMAIN],
    )
    yield op
    op.db.dispose()


def _counts(node: OperatorNode) -> tuple[int, int]:
    with node.db.session() as session:
        return (
            session.execute(select(func.count()).select_from(Revocation)).scalar_one(),
            session.execute(select(func.count()).select_from(AuditEntry)).scalar_one(),
        )


def test_disable_ends_the_account_and_tells_the_servers(node: OperatorNode) -> None:
    assert Accounts(node.db).authenticate(SENDER, PASSWORD) is not None
    result = run("account", "disable", "--config", str(node.config), SENDER, "--yes")
    assert result.code == 0, result.err
    assert "account disabled: helene.martin@" in result.out
    assert Accounts(node.db).authenticate(SENDER, PASSWORD) is None
    with node.db.session() as session:
        account = session.execute(select(Account).where(Account.login == SENDER)).scalar_one()
        assert account.disabled
        [row] = session.execute(select(Revocation)).scalars()
        assert (row.kind, row.account_id) == ("account", account.id)


def test_an_unknown_login_is_refused_and_nothing_is_written(node: OperatorNode) -> None:
    before = _counts(node)
    result = run("account", "disable", "--config", str(node.config), "nobody@x.test", "--yes")
    assert result.code == 1
    assert "nobody@x.test" in result.err and "Traceback" not in result.err
    assert _counts(node) == before


def test_it_asks_before_disabling(node: OperatorNode) -> None:
    result = run("account", "disable", "--config", str(node.config), SENDER, input_text="n\n")
    assert result.code == 1
    assert Accounts(node.db).authenticate(SENDER, PASSWORD) is not None
