from __future__ import annotations

import pytest

from mssante.audit.log import iter_entries, verify_chain
from mssante.authority.registry import (
    Actor,
    DomainSpec,
    OperatorSpec,
    Registry,
    RegistryError,
)
from mssante.errors import NotFoundError
from mssante.store.db import Database

DN_NORD = "CN=smtp.hopital-nord.mssante.test,OU=341459958900028,O=HOPITAL NORD,ST=Bouches-du-Rhône (13),C=FR"
DN_NORD_2 = "CN=smtp2.hopital-nord.mssante.test,OU=341459958900028,O=HOPITAL NORD,ST=Bouches-du-Rhône (13),C=FR"
DN_SUD = (
    "CN=mx.cabinet-sud.mssante.test,OU=318310021300028,O=CABINET SUD,ST=Haute-Garonne (31),C=FR"
)
ADMIN = Actor("tester", {"request_id": "t1"})


def nord(**changes: object) -> OperatorSpec:
    base: dict[str, object] = {
        "name": "HOPITAL NORD",
        "structure_id": "341459958900028",
        "domains": [DomainSpec("hopital-nord.mssante.test", "Hôpital Nord")],
        "certificate_dns": [DN_NORD],
        "responsable_contact": "01 02 03 04 05, dsi@hopital-nord.test",
        "support_contact": "support@hopital-nord.test",
    }
    base.update(changes)
    return OperatorSpec(**base)  # type: ignore[arg-type]


def test_register_then_whitelist_lists_domain_with_dns(db: Database) -> None:
    reg = Registry(db)
    reg.register(nord(), ADMIN)
    wl = reg.whitelist()
    (entry,) = wl.domain("hopital-nord.mssante.test")
    assert entry.operator_dns == (DN_NORD,)
    assert entry.description == "Hôpital Nord"
    assert wl.is_trusted("hopital-nord.mssante.test", DN_NORD).trusted
    events = [e.event for e in iter_entries(db)]
    assert events == ["authority.operator_registered"]


def test_re_registering_replaces_domains_and_dns(db: Database) -> None:
    reg = Registry(db)
    reg.register(nord(), ADMIN)
    reg.register(
        nord(
            domains=[
                DomainSpec("hopital-nord.mssante.test"),
                DomainSpec("urgences-nord.mssante.test"),
            ],
            certificate_dns=[DN_NORD_2],
        ),
        ADMIN,
    )
    view = reg.get("HOPITAL NORD")
    assert view.domains == ("hopital-nord.mssante.test", "urgences-nord.mssante.test")
    assert view.certificate_dns == (DN_NORD_2,)
    wl = reg.whitelist()
    assert not wl.is_trusted("hopital-nord.mssante.test", DN_NORD).trusted
    assert [e.event for e in iter_entries(db)][-1] == "authority.operator_updated"


def test_a_domain_belongs_to_one_operator(db: Database) -> None:
    reg = Registry(db)
    reg.register(nord(), ADMIN)
    sud = OperatorSpec(
        "CABINET SUD", "318310021300028", [DomainSpec("hopital-nord.mssante.test")], [DN_SUD]
    )
    with pytest.raises(RegistryError, match="already registered to operator 'HOPITAL NORD'"):
        reg.register(sud, ADMIN)
    assert [v.name for v in reg.operators()] == ["HOPITAL NORD"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"structure_id": "12345"}, "structure id"),
        ({"domains": []}, "at least one domain"),
        ({"domains": [DomainSpec("not a domain")]}, "not a valid domain name"),
        ({"domains": [DomainSpec("x..mssante.fr")]}, "not a valid domain name"),
        ({"certificate_dns": []}, "at least one certificate DN"),
        ({"certificate_dns": ["CN=only-a-cn"]}, "certificate DN 'CN=only-a-cn'"),
        ({"name": "  "}, "operator name is empty"),
    ],
)
def test_bad_registrations_are_refused_and_nothing_is_stored(
    db: Database, changes: dict[str, object], message: str
) -> None:
    reg = Registry(db)
    with pytest.raises(RegistryError, match=message):
        reg.register(nord(**changes), ADMIN)
    assert reg.operators() == []
    assert list(iter_entries(db)) == []


def test_remove(db: Database) -> None:
    reg = Registry(db)
    reg.register(nord(), ADMIN)
    reg.remove("HOPITAL NORD", ADMIN)
    assert reg.whitelist().domains == ()
    with pytest.raises(NotFoundError):
        reg.remove("HOPITAL NORD", ADMIN)
    assert verify_chain(db).ok
