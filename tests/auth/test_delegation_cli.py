"""`mssante mailbox …`: ORG mailboxes, grants, delegations and the access log, on a real node
database; and the authorization rule with grants, checked over many cases (hypothesis)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from auth_helpers import LOGIN, make_person
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from mssante.auth.service import password_hasher
from mssante.cli.main import cli
from mssante.config import AuthSettings
from mssante.ops.rights import Caller, Operation, authorize
from mssante.store.db import Database, open_database
from mssante.store.models import (
    AccessRight,
    Mailbox,
    MailboxAccess,
    MailboxType,
)
from support import is_postgres

ORG = "accueil@hopital-nord.mssante.test"
SECRETARY = "secretaire@hopital-nord.mssante.test"


@pytest.fixture
def node(tmp_path: Path, database_settings: tuple[str, str]) -> Iterator[tuple[Path, Database]]:
    url, schema = database_settings
    if not is_postgres():
        url = f"sqlite:///{tmp_path / 'data' / 'mssante.db'}"
    lines = [
        f'data_dir = "{tmp_path / "data"}"',
        "[operator]",
        'name = "HOPITAL NORD"',
        'domains = ["hopital-nord.mssante.test"]',
    ]
    if is_postgres():
        lines += ["[database]", f'url = "{url}"', f'schema_name = "{schema}"']
    config = tmp_path / "node.toml"
    config.write_text("\n".join(lines) + "\n")
    db = open_database(url, schema=schema)
    hasher = password_hasher(AuthSettings(argon2_time_cost=1, argon2_memory_kib=8))
    owner = make_person(db, hasher)
    make_person(db, hasher, SECRETARY, rpps="1000100028")
    with db.session() as session:
        session.add(Mailbox(address=LOGIN, type=MailboxType.PER, owner_account_id=owner))
    yield config, db
    db.dispose()


def _run(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["mailbox", *args, "--config", str(config)])
    return result.exit_code, result.stdout + result.stderr


def test_org_mailbox_members_and_revocation(node: tuple[Path, Database]) -> None:
    config, _ = node
    assert _run(config, "create-org", ORG, "--description", "Accueil")[0] == 0
    assert _run(config, "grant", ORG, "--to", SECRETARY, "--right", "send")[0] == 0
    code, out = _run(config, "members", ORG, "--json")
    assert code == 0
    assert [(m["login"], m["right"], m["active"]) for m in json.loads(out)] == [
        (SECRETARY, "send", True)
    ]
    assert _run(config, "revoke", ORG, "--from", SECRETARY)[0] == 0
    assert [m["active"] for m in json.loads(_run(config, "members", ORG, "--json")[1])] == [False]
    code, out = _run(config, "access-log", ORG, "--json")
    assert [e["event"] for e in json.loads(out)] == [
        "mailbox.access_granted",
        "mailbox.access_revoked",
    ]


def test_delegation_in_the_past_is_refused(node: tuple[Path, Database]) -> None:
    config, _ = node
    code, out = _run(
        config, "delegate", LOGIN, "--to", SECRETARY, "--right", "read", "--until", "2020-01-01"
    )
    assert code == 1 and "past" in out
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    code, _ = _run(
        config, "delegate", LOGIN, "--to", SECRETARY, "--right", "read", "--until", tomorrow
    )
    assert code == 0
    log = json.loads(_run(config, "access-log", LOGIN, "--json")[1])
    assert log[0]["context"]["on_behalf_of"] == LOGIN


_NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
_WHEN = st.one_of(st.none(), st.integers(-3, 3).map(lambda d: _NOW + timedelta(days=d)))


# docs/delegation.md's table, written out again: what each grant level allows.
_LEVELS = {
    AccessRight.READ: {"list", "read", "mark_seen"},
    AccessRight.FILE: {"list", "read", "mark_seen", "flag", "delete", "append"},
    AccessRight.SEND: {"list", "read", "mark_seen", "flag", "delete", "append", "send_on_behalf"},
}


@given(
    owner=st.sampled_from([None, 1, 2]),
    closed=st.booleans(),
    grants=st.lists(
        st.tuples(st.sampled_from([1, 2]), st.sampled_from(list(AccessRight)), _WHEN, _WHEN),
        max_size=3,
    ),
    operation=st.sampled_from(list(Operation)),
)
def test_authorize_follows_owner_and_active_grants(
    owner: int | None,
    closed: bool,
    grants: list[tuple[int, AccessRight, datetime | None, datetime | None]],
    operation: Operation,
) -> None:
    box = Mailbox(address="x@y.test", type=MailboxType.ORG, owner_account_id=owner)
    box.closed_at = _NOW if closed else None
    for account_id, access, expires, revoked in grants:
        box.grants.append(
            MailboxAccess(
                account_id=account_id, right=access, expires_at=expires, revoked_at=revoked
            )
        )
    caller = Caller(1, "a@y.test")
    granted = set().union(
        *(_LEVELS[g] for a, g, e, r in grants if a == 1 and (e is None or e > _NOW) and r is None)
    )
    if closed:
        expected = False
    elif owner == 1:
        expected = operation is not Operation.SEND_ON_BEHALF  # the owner sends *as* it
    else:
        expected = operation.value in granted  # never MANAGE, never SEND_AS
    assert authorize(caller, box, operation, now=_NOW) is expected


def test_liste_rouge_and_close_from_the_command_line(node: tuple[Path, Database]) -> None:
    """`mailbox liste-rouge` and `mailbox close` change the mailbox (the directory's outbox
    takes it from there: tests/directory/test_publication_outbox.py); a repeated change says
    so, and an unknown or closed mailbox is refused with a clear message."""
    config, db = node

    def mailbox() -> Mailbox:
        with db.session() as session:
            found = session.execute(select(Mailbox).where(Mailbox.address == LOGIN)).scalar_one()
            session.expunge(found)
            return found

    code, out = _run(config, "liste-rouge", LOGIN)
    assert code == 0 and "is now on liste rouge" in out, out
    assert mailbox().liste_rouge
    code, out = _run(config, "liste-rouge", LOGIN)
    assert code == 0 and "was already on liste rouge" in out, out
    code, out = _run(config, "liste-rouge", LOGIN, "--off")
    assert code == 0 and "is now off liste rouge" in out, out
    assert not mailbox().liste_rouge
    code, out = _run(config, "liste-rouge", "personne@hopital-nord.mssante.test")
    assert code != 0 and "no mailbox personne@hopital-nord.mssante.test" in out, out

    code, out = _run(config, "close", LOGIN)  # asks; no answer on stdin: nothing closed
    assert code != 0 and "Aborted" in out, out
    assert mailbox().closed_at is None
    code, out = _run(config, "close", LOGIN, "--yes")
    assert code == 0 and "closed" in out, out
    assert mailbox().closed_at is not None
    code, out = _run(config, "close", LOGIN, "--yes")
    assert code != 0 and "is closed" in out, out
