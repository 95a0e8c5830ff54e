"""Certificate logins (SASL EXTERNAL): CPS-like person certificates map by idNat to the
professional's accounts, organisation certificates open the APP accounts their DN is bound to.
Against a real test PKI, its CRLs and the database; every attempt audited."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
from auth_helpers import ADMIN, LOGIN, fast_auth, id_nat, make_person
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mssante.audit.events import ListSink
from mssante.audit.log import iter_entries
from mssante.auth.certificates import (
    BindingError,
    CertificateBindings,
    CertificateKind,
    CertificateLogins,
)
from mssante.auth.service import password_hasher
from mssante.auth.throttle import LoginThrottle
from mssante.cli.main import cli
from mssante.ops.accounts import Accounts, NewApplication
from mssante.pki import CrlCache, TestPki, TrustStore, dn_string, load_certificate
from mssante.pki.ca import IssuedPaths
from mssante.store.db import Database, open_database
from mssante.store.models import Account, AccountKind, Credential, CredentialKind, Professional
from support import is_postgres

PEER = "203.0.113.7"
APP = "labo@hopital-nord.mssante.test"
STRUCT = "341459958900028"  # SIRET
OTHER_LOGIN = "h.martin.cabinet@hopital-nord.mssante.test"


@dataclass(frozen=True)
class Pkis:
    pki: TestPki
    other: TestPki  # same CA names, other keys
    martin: IssuedPaths  # a CPS-like card of the professional with id_nat()
    app: IssuedPaths  # an organisation certificate for the lab software


@pytest.fixture(scope="module")
def pkis(tmp_path_factory: pytest.TempPathFactory) -> Pkis:
    root = tmp_path_factory.mktemp("pki")
    pki = TestPki.init(root / "pki")
    other = TestPki.init(root / "other")
    return Pkis(
        pki,
        other,
        pki.issue_person(id_nat(), "Martin", "Hélène"),
        pki.issue_application("labo.hopital-nord.mssante.test", STRUCT, "HOPITAL NORD", "13"),
    )


@dataclass
class World:
    db: Database
    pkis: Pkis
    crls: CrlCache
    sink: ListSink
    logins: CertificateLogins

    def events(self, name: str) -> list[dict[str, object]]:
        return [{"actor": r.actor, **r.context} for r in self.sink.records if r.event.value == name]

    async def login(
        self, cert: x509.Certificate | list[x509.Certificate], login: str | None = None
    ):  # type: ignore[no-untyped-def]
        return await self.logins.authenticate(cert, login, peer=PEER, protocol="imap")


@pytest.fixture
def world(db: Database, pkis: Pkis, tmp_path: Path) -> World:
    paths = pkis.pki.paths()
    trust = TrustStore.from_pem_files([paths.root], [paths.intermediates])
    crls = CrlCache(tmp_path / "crl", pkis.pki.crl_sources(), trust)
    crls.refresh()
    make_person(db, password_hasher(fast_auth()))
    sink = ListSink()
    return World(db, pkis, crls, sink, CertificateLogins(db, trust, crls, sink, auth=fast_auth()))


def _cert(paths: IssuedPaths) -> x509.Certificate:
    return load_certificate(paths.cert)


def _add_app(world: World, login: str = APP) -> None:
    Accounts(world.db).create_application(NewApplication(login, STRUCT, "laboratoire"), ADMIN)


def _second_account(db: Database, *, disabled: bool = False) -> None:
    """Another personal account of the same professional (a second practice)."""
    with db.session() as session:
        professional = session.query(Professional).filter_by(id_nat=id_nat()).one()
        session.add(
            Account(
                login=OTHER_LOGIN,
                kind=AccountKind.PERSON,
                professional=professional,
                disabled=disabled,
            )
        )


# -- person certificates ------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["leaf", "der", "chain"])
async def test_a_person_certificate_opens_the_professionals_account(
    world: World, form: str
) -> None:
    leaf = _cert(world.pkis.martin)
    presented: object = {
        "leaf": leaf,
        "der": leaf.public_bytes(serialization.Encoding.DER),
        "chain": [leaf, load_certificate(world.pkis.martin.chain)],
    }[form]
    result = await world.logins.authenticate(presented, None, peer=PEER, protocol="submission")  # type: ignore[arg-type]
    assert result is not None
    assert result.login == LOGIN
    assert result.kind is CertificateKind.PERSON and result.kind == "person"
    assert result.id_nat_or_structure == id_nat()
    assert result.subject_dn == dn_string(leaf.subject)
    assert result.serial == format(leaf.serial_number, "X")
    [event] = world.events("auth.login_succeeded")
    assert event["actor"] == LOGIN
    assert event["method"] == "certificate" and event["protocol"] == "submission"
    assert event["peer"] == PEER and event["kind"] == "person" and event["id_nat"] == id_nat()
    assert event["subject"] == result.subject_dn and event["serial"] == result.serial
    assert "reason" not in event
    with pytest.raises(AttributeError):
        result.login = "x"  # type: ignore[misc]


async def test_a_professional_with_two_accounts_names_one(world: World) -> None:
    _second_account(world.db)
    card = _cert(world.pkis.martin)
    assert await world.login(card) is None
    assert world.events("auth.login_failed")[-1]["reason"] == "login_required"
    chosen = await world.login(card, OTHER_LOGIN.upper())
    assert chosen is not None and chosen.login == OTHER_LOGIN
    first = await world.login(card, LOGIN)
    assert first is not None and first.login == LOGIN
    assert await world.login(card, "someone.else@hopital-nord.mssante.test") is None
    failed = world.events("auth.login_failed")[-1]
    assert failed["reason"] == "login_not_owned"
    assert failed["actor"] == "someone.else@hopital-nord.mssante.test"


async def test_the_only_enabled_account_is_the_default(world: World) -> None:
    _second_account(world.db, disabled=True)
    result = await world.login(_cert(world.pkis.martin))
    assert result is not None and result.login == LOGIN
    assert await world.login(_cert(world.pkis.martin), OTHER_LOGIN) is None
    assert world.events("auth.login_failed")[-1]["reason"] == "account_disabled"


async def test_a_disabled_account_is_refused(world: World) -> None:
    with world.db.session() as session:
        session.query(Account).filter_by(login=LOGIN).one().disabled = True
    assert await world.login(_cert(world.pkis.martin)) is None
    assert world.events("auth.login_failed")[-1]["reason"] == "account_disabled"


async def test_an_unknown_id_nat_is_refused(world: World) -> None:
    stranger = world.pkis.pki.issue_person(id_nat("2000200020"), "Inconnu", "Paul")
    assert await world.login(_cert(stranger)) is None
    [event] = world.events("auth.login_failed")
    assert event["reason"] == "unknown_professional"
    assert event["id_nat"] == id_nat("2000200020")
    assert event["actor"] == id_nat("2000200020")


async def test_the_certificate_of_a_revoked_person_is_refused(world: World) -> None:
    card = world.pkis.pki.issue_person(id_nat(), "Martin", "Hélène")
    assert await world.login(_cert(card)) is not None  # valid until revoked
    world.pkis.pki.revoke(card.cert, "keyCompromise")
    world.crls.refresh()
    assert await world.login(_cert(card)) is None
    event = world.events("auth.login_failed")[-1]
    assert event["reason"] == "revoked"
    assert "revoked" in str(event["detail"]) and "keyCompromise" in str(event["detail"])
    assert event["serial"] == format(card.serial, "X")
    assert event["subject"] == card.subject and event["method"] == "certificate"
    # The professional's other, unrevoked card still works.
    assert await world.login(_cert(world.pkis.martin)) is not None


async def test_an_expired_card_is_refused(world: World) -> None:
    now = dt.datetime.now(dt.UTC)
    card = world.pkis.pki.issue_person(
        id_nat(),
        "Martin",
        "Hélène",
        not_before=now - dt.timedelta(days=800),
        not_after=now - dt.timedelta(days=1),
    )
    assert await world.login(_cert(card)) is None
    assert world.events("auth.login_failed")[-1]["reason"] == "expired"


async def test_a_card_from_another_pki_is_refused(world: World) -> None:
    forged = world.pkis.other.issue_person(id_nat(), "Martin", "Hélène")
    intermediate = load_certificate(forged.chain)
    assert await world.login([_cert(forged), intermediate]) is None
    event = world.events("auth.login_failed")[-1]
    assert event["reason"] == "unknown_issuer"
    assert event["id_nat"] == id_nat()  # what it claimed, for the investigation


async def test_without_a_certificate_nothing_opens(world: World) -> None:
    assert await world.logins.authenticate(None, LOGIN, peer=PEER, protocol="imap") is None
    assert await world.logins.authenticate([], None, peer=PEER, protocol="imap") is None
    events = world.events("auth.login_failed")
    assert [e["reason"] for e in events] == ["no_certificate", "no_certificate"]
    assert events[0]["actor"] == LOGIN and events[1]["actor"] == PEER


async def test_failures_slow_the_next_attempt_from_that_address(
    db: Database, pkis: Pkis, tmp_path: Path
) -> None:
    paths = pkis.pki.paths()
    trust = TrustStore.from_pem_files([paths.root], [paths.intermediates])
    settings = fast_auth(throttle_base=0.25, throttle_cap=0.25, throttle_address_allowance=1)
    throttle = LoginThrottle.from_settings(settings)
    logins = CertificateLogins(db, trust, None, ListSink(), auth=settings, throttle=throttle)
    assert throttle.delay(address="203.0.113.7") == 0
    await logins.authenticate(None, None, peer=PEER, protocol="imap")
    assert throttle.delay(address="203.0.113.7") == 0  # within the address's allowance
    await logins.authenticate(None, None, peer=PEER, protocol="imap")
    assert throttle.delay(address="203.0.113.7") == 0.25
    assert throttle.delay(address="203.0.113.8") == 0
    assert throttle.in_flight() == 0


# -- organisation certificates and APP accounts --------------------------------------------------


async def test_an_organisation_certificate_opens_its_bound_app_account(world: World) -> None:
    _add_app(world)
    app_cert = _cert(world.pkis.app)
    assert await world.login(app_cert) is None  # not bound yet
    assert world.events("auth.login_failed")[-1]["reason"] == "not_bound"
    bindings = CertificateBindings(world.db)
    binding = bindings.bind(APP, dn_string(app_cert.subject).lower(), ADMIN)  # case is no matter
    result = await world.login(app_cert)
    assert result is not None
    assert result.login == APP and result.kind is CertificateKind.ORGANISATION
    assert result.id_nat_or_structure == STRUCT
    event = world.events("auth.login_succeeded")[-1]
    assert event["kind"] == "organisation" and event["structure_id"] == STRUCT
    [listed] = bindings.listing(APP)
    assert listed.id == binding.id and listed.last_used_at is not None
    events = [e.event for e in iter_entries(world.db)]
    assert "auth.certificate_bound" in events and "account.created" in events


async def test_an_unbound_organisation_certificate_is_refused(world: World) -> None:
    _add_app(world)
    app_cert = _cert(world.pkis.app)
    bindings = CertificateBindings(world.db)
    binding = bindings.bind(APP, app_cert.subject, ADMIN)
    assert await world.login(app_cert, APP) is not None
    bindings.unbind(APP, str(binding.id), ADMIN)
    assert await world.login(app_cert, APP) is None
    assert world.events("auth.login_failed")[-1]["reason"] == "not_bound"
    assert bindings.listing(APP) == []
    assert [b.active for b in bindings.listing(APP, include_revoked=True)] == [False]
    assert "auth.certificate_unbound" in [e.event for e in iter_entries(world.db)]


async def test_the_dn_survives_renewal_but_not_another_ca(world: World) -> None:
    _add_app(world)
    CertificateBindings(world.db).bind(APP, _cert(world.pkis.app).subject, ADMIN)
    renewed = world.pkis.pki.issue_application(
        "labo.hopital-nord.mssante.test", STRUCT, "HOPITAL NORD", "13"
    )
    assert await world.login(_cert(renewed)) is not None
    forged = world.pkis.other.issue_application(
        "labo.hopital-nord.mssante.test", STRUCT, "HOPITAL NORD", "13"
    )
    assert await world.login([_cert(forged), load_certificate(forged.chain)]) is None
    assert world.events("auth.login_failed")[-1]["reason"] == "unknown_issuer"


async def test_a_person_certificate_cannot_open_an_app_account(world: World) -> None:
    _add_app(world)
    card = _cert(world.pkis.martin)
    with pytest.raises(BindingError, match="names a professional"):
        CertificateBindings(world.db).bind(APP, card.subject, ADMIN)
    # Even a binding slipped into the database does not make a card an APP credential.
    with world.db.session() as session:
        app = session.query(Account).filter_by(login=APP).one()
        session.add(
            Credential(
                account_id=app.id, kind=CredentialKind.CERTIFICATE, secret=dn_string(card.subject)
            )
        )
    assert await world.login(card, APP) is None
    assert world.events("auth.login_failed")[-1]["reason"] == "login_not_owned"


async def test_an_organisation_certificate_opens_no_personal_account(world: World) -> None:
    with pytest.raises(BindingError, match="not an APP account"):
        CertificateBindings(world.db).bind(LOGIN, _cert(world.pkis.app).subject, ADMIN)
    assert await world.login(_cert(world.pkis.app), LOGIN) is None
    assert world.events("auth.login_failed")[-1]["reason"] == "not_bound"


async def test_a_disabled_app_account_is_refused(world: World) -> None:
    _add_app(world)
    CertificateBindings(world.db).bind(APP, _cert(world.pkis.app).subject, ADMIN)
    with world.db.session() as session:
        session.query(Account).filter_by(login=APP).one().disabled = True
    assert await world.login(_cert(world.pkis.app), APP) is None
    assert world.events("auth.login_failed")[-1]["reason"] == "account_disabled"


def test_binding_twice_is_refused(world: World) -> None:
    _add_app(world)
    bindings = CertificateBindings(world.db)
    bindings.bind(APP, _cert(world.pkis.app).subject, ADMIN)
    with pytest.raises(BindingError, match="already bound"):
        bindings.bind(APP, _cert(world.pkis.app).subject, ADMIN)


async def test_nothing_secret_is_audited(world: World) -> None:
    _add_app(world)
    CertificateBindings(world.db).bind(APP, _cert(world.pkis.app).subject, ADMIN)
    await world.login(_cert(world.pkis.app))
    await world.login(_cert(world.pkis.martin))
    dumped = json.dumps([asdict(r) for r in world.sink.records], default=str)
    for key in (world.pkis.app.key, world.pkis.martin.key):
        body = key.read_text().splitlines()[1]  # a line of the private key
        assert body not in dumped
    assert "BEGIN" not in dumped


# -- the command line ----------------------------------------------------------------------------


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
    yield config, db
    db.dispose()


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_cli_creates_an_app_account_and_binds_its_certificate(
    node: tuple[Path, Database], pkis: Pkis
) -> None:
    config, db = node
    cfg = ("--config", str(config))
    code, out, err = _run(
        "account", "add-app", "--address", APP, "--structure-id", STRUCT, "--json", *cfg
    )
    assert code == 0, err
    assert json.loads(out) == {"login": APP, "kind": "application", "mailboxes": [APP]}
    code, out, err = _run(
        "account", "certificate", "bind", APP, "--cert", str(pkis.app.cert), "--json", *cfg
    )
    assert code == 0, err
    bound = json.loads(out)
    assert bound["dn"] == pkis.app.subject and bound["revoked_at"] is None
    code, out, err = _run("account", "certificate", "list", APP, "--json", *cfg)
    assert code == 0, err
    assert [b["dn"] for b in json.loads(out)] == [pkis.app.subject]
    code, out, err = _run("account", "certificate", "list", APP, *cfg)
    assert pkis.app.subject in out and "last used: never" in out
    code, out, err = _run("account", "certificate", "unbind", APP, pkis.app.subject, *cfg)
    assert code == 0, err
    assert "unbound" in out
    code, out, _ = _run("account", "certificate", "list", APP, "--json", *cfg)
    assert json.loads(out) == []
    events = [e.event for e in iter_entries(db)]
    assert "auth.certificate_bound" in events and "auth.certificate_unbound" in events


def test_cli_refuses_a_person_certificate_and_bad_input(
    node: tuple[Path, Database], pkis: Pkis
) -> None:
    config, _ = node
    cfg = ("--config", str(config))
    assert _run("account", "add-app", "--address", APP, "--structure-id", STRUCT, *cfg)[0] == 0
    code, _, err = _run(
        "account", "certificate", "bind", APP, "--cert", str(pkis.martin.cert), *cfg
    )
    assert code == 1 and "names a professional" in err
    code, _, err = _run("account", "certificate", "bind", APP, *cfg)
    assert code == 2 and "exactly one of --dn and --cert" in err
    code, _, err = _run("account", "certificate", "bind", APP, "--dn", "CN=x;y", *cfg)
    assert code == 1 and "malformed DN" in err
    code, _, err = _run("account", "certificate", "unbind", APP, "CN=nothing,C=FR", *cfg)
    assert code == 1 and "no active certificate binding" in err
    code, _, err = _run(
        "account", "add-app", "--address", "x@y.test", "--structure-id", "999", *cfg
    )
    assert code == 1 and "structure" in err
