"""`mssante demo`: a whole local trust space on loopback.

Stages: make a fresh test PKI; write the authority's, the OIDC provider's (the stand-in for Pro
Santé Connect) and two operators' configuration; register both operators at the authority (which
signs and publishes the whitelist); start one process per role (``mssante serve``, ``mssante oidc
serve``); wait until every operator holds the verified list; write ``demo.json``; wait for Ctrl-C
and stop every process. The accounts created at build time wait in each operator's directory
outbox; each operator's publisher sends them to the authority by FHIR PATCH once it runs, so a
search of the authority's directory finds the other operator's people (docs/publication.md).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mssante.audit.events import Actor as AccountActor
from mssante.authority.publish import LIST_NAME, Signer
from mssante.authority.registry import Actor, DomainSpec, OperatorSpec
from mssante.authority.service import AuthorityService
from mssante.config import Settings, load_settings, toml_value
from mssante.errors import MssanteError
from mssante.oidc.models import digest
from mssante.ops.accounts import Accounts, NewPerson
from mssante.pki.ca import TestPki
from mssante.pki.ids import luhn_key
from mssante.pki.names import departement_label
from mssante.runtime import open_node

READY_TIMEOUT = 60.0
DEMO_CLIENT_ID = "mssante-demo"  # a public client (PKCE) for trying the provider by hand
DEMO_REDIRECT_URI = "http://127.0.0.1/callback"  # RFC 8252 §7.3 loopback redirect
DatabaseFor = Callable[[str], dict[str, str]]


@dataclass(frozen=True)
class DemoPerson:
    local_part: str
    last_name: str
    first_name: str
    rpps: str  # 10 digits; the Luhn key is added

    @property
    def id_nat(self) -> str:
        return "8" + self.rpps + luhn_key(self.rpps)


@dataclass(frozen=True)
class DemoOperator:
    slug: str
    organisation: str
    domain: str
    departement: str
    finess: str  # 8 digits; the Luhn key is added
    people: tuple[DemoPerson, ...] = ()

    @property
    def structure_id(self) -> str:
        return "1" + self.finess + luhn_key(self.finess)

    @property
    def mta_host(self) -> str:
        return f"smtp.{self.domain}"


OPERATORS = (
    DemoOperator(
        "hopital-nord",
        "HOPITAL NORD",
        "hopital-nord.mssante.test",
        "13",
        "13000001",
        (
            DemoPerson("helene.martin", "Martin", "Hélène", "1000100010"),
            DemoPerson("secretariat.cardiologie", "Lefèvre", "Sophie", "1000100020"),
        ),
    ),
    DemoOperator(
        "cabinet-sud",
        "CABINET SUD",
        "cabinet-sud.mssante.test",
        "31",
        "31000002",
        (DemoPerson("paul.durand", "Durand", "Paul", "1000200010"),),
    ),
)


@dataclass
class DemoLayout:
    root: Path
    base_port: int
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    by_config: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)  # latest per node
    database_for: DatabaseFor | None = None

    def database(self, node: str) -> dict[str, Any]:
        return {"database": self.database_for(node)} if self.database_for else {}

    @property
    def authority_port(self) -> int:
        return self.base_port

    def operator_ports(self, index: int) -> dict[str, int]:
        first = self.base_port + 10 * (index + 1)
        return {
            "smtp": first,
            "submission": first + 1,
            "submissions": first + 2,
            "imap": first + 3,
            "imaps": first + 4,
            "web": first + 5,
        }

    def process_of(self, config: str | Path) -> subprocess.Popen[bytes]:
        """The running process of the node configured by ``config`` (the last one started)."""
        return self.by_config[str(config)]

    @property
    def oidc_port(self) -> int:
        return self.base_port + 1

    @property
    def oidc_issuer(self) -> str:
        return f"https://localhost:{self.oidc_port}"

    @property
    def whitelist_url(self) -> str:
        return f"https://localhost:{self.authority_port}/{LIST_NAME}"

    @property
    def extraction_url(self) -> str:
        """The authority's current extraction: operators keep their copy from it."""
        return f"https://localhost:{self.authority_port}/directory/extraction"

    @property
    def fhir_url(self) -> str:
        """The authority's FHIR base: operators PATCH their mailboxes there."""
        return f"https://localhost:{self.authority_port}/fhir"


def _toml(data: dict[str, Any]) -> str:
    lines: list[str] = []
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    for key, value in data.items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {toml_value(value)}")
    for name, table in tables.items():
        lines.append(f"\n[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def build(layout: DemoLayout, database_for: DatabaseFor | None = None) -> dict[str, Any]:
    """Write the PKI, the configurations and the registry; return the demo.json content.

    ``database_for(node_name)`` may give a node a ``[database]`` section (tests run the trust
    space on PostgreSQL that way); by default each node has SQLite in its data folder."""
    layout.database_for = database_for
    pki = TestPki.init(layout.root / "pki")
    paths = pki.paths()
    pki_section = {
        "trust_anchors": [str(paths.root)],
        "intermediates": [str(paths.intermediates)],
        "crl_sources": pki.crl_sources(),
    }
    authority_cfg = _write_authority(layout, pki, pki_section)
    operators = [_write_operator(layout, pki, pki_section, i, op) for i, op in enumerate(OPERATORS)]
    oidc_cfg = _write_oidc(layout, pki_section, authority_cfg, operators)
    _register(authority_cfg, pki)
    for op, entry in zip(OPERATORS, operators, strict=True):
        entry["accounts"] = _create_accounts(Path(entry["config"]), op)
    return {
        "dir": str(layout.root),
        "pki": {"dir": str(pki.directory), **pki_section},
        "authority": {
            "config": str(authority_cfg),
            "https": f"localhost:{layout.authority_port}",
            "whitelist_url": layout.whitelist_url,
            "admin_token_file": str(layout.root / "authority" / "data" / "authority-admin.token"),
            "fhir": layout.fhir_url,
            "directory_search": f"https://localhost:{layout.authority_port}/directory/search",
        },
        "whitelist_url": layout.whitelist_url,
        "oidc": {
            "config": str(oidc_cfg),
            "issuer": layout.oidc_issuer,
            "discovery": f"{layout.oidc_issuer}/.well-known/openid-configuration",
            "https": f"localhost:{layout.oidc_port}",
            "client_id": DEMO_CLIENT_ID,
            "redirect_uri": DEMO_REDIRECT_URI,
        },
        "operators": operators,
    }


def _write_oidc(
    layout: DemoLayout,
    pki_section: dict[str, Any],
    authority_cfg: Path,
    operators: list[dict[str, Any]],
) -> Path:
    """The provider standing in for Pro Santé Connect: it checks the operators' accounts
    (password and TOTP) and CPS-like certificates, and lets each operator check tokens
    (introspection, session status) with a secret of its own."""
    folder = layout.root / "oidc"
    folder.mkdir(parents=True, exist_ok=True)
    authority_tls = load_settings(authority_cfg).tls  # the same "localhost" certificate
    resource_servers = {}
    webmail_clients = {
        webmail_client_id(Path(e["config"]).parent.name): [f"{e['webmail']}oidc/callback"]
        for e in operators
    }
    for entry in operators:
        secret = secrets.token_urlsafe(32)
        secret_file = Path(entry["config"]).parent / "oidc-client-secret"
        secret_file.write_text(secret + "\n")
        secret_file.chmod(0o600)
        client_id = f"operator-{Path(entry['config']).parent.name}"
        resource_servers[client_id] = digest(secret)
        _append_oidc_client(Path(entry["config"]), layout.oidc_issuer, client_id, secret_file)
    config = {
        "role": "operator",
        "data_dir": str(folder / "data"),
        **layout.database("oidc"),
        "pki": pki_section,
        "tls": {"certificate": str(authority_tls.certificate), "key": str(authority_tls.key)},
        "oidc": {
            "issuer": layout.oidc_issuer,
            "listen_host": "127.0.0.1",
            "listen_port": layout.oidc_port,
            "clients": {DEMO_CLIENT_ID: [DEMO_REDIRECT_URI], **webmail_clients},
            "resource_servers": resource_servers,
            "account_configs": [entry["config"] for entry in operators],
        },
    }
    (folder / "oidc.toml").write_text(_toml(config))
    return folder / "oidc.toml"


def webmail_client_id(slug: str) -> str:
    return f"webmail-{slug}"


def _append_oidc_client(config: Path, issuer: str, client_id: str, secret_file: Path) -> None:
    """The operator accepts the provider's access tokens (XOAUTH2, OAUTHBEARER)."""
    section = {
        "issuer": issuer,
        "client_id": client_id,
        "client_secret_file": str(secret_file),
        # A revoked token ends IMAP and webmail sessions within seconds in the demo (60 s by
        # default), so that trying it shows it.
        "recheck_seconds": 5.0,
    }
    with config.open("a", encoding="utf-8") as out:
        out.write("\n[oidc]\n" + "\n".join(f"{k} = {toml_value(v)}" for k, v in section.items()))
        out.write("\n")


def _write_authority(layout: DemoLayout, pki: TestPki, pki_section: dict[str, Any]) -> Path:
    folder = layout.root / "authority"
    https = pki.issue_server("localhost", OPERATORS[0].structure_id, "AUTORITE DEMO", "75")
    signer = pki.issue_signer(
        "listeblanche.autorite.mssante.test", OPERATORS[0].structure_id, "AUTORITE DEMO", "75"
    )
    config = {
        "role": "authority",
        "data_dir": str(folder / "data"),
        **layout.database("authority"),
        "pki": pki_section,
        "tls": {"certificate": str(https.fullchain), "key": str(https.key)},
        "authority": {
            "listen_host": "127.0.0.1",
            "listen_port": layout.authority_port,
            "signing_certificate": str(signer.cert),
            "signing_key": str(signer.key),
            "signing_chain": str(signer.chain),
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "authority.toml").write_text(_toml(config))
    return folder / "authority.toml"


def _write_operator(
    layout: DemoLayout, pki: TestPki, pki_section: dict[str, Any], index: int, op: DemoOperator
) -> dict[str, Any]:
    folder = layout.root / op.slug
    cert = pki.issue_server(op.mta_host, op.structure_id, op.organisation, op.departement)
    ports = layout.operator_ports(index)
    routes = {
        other.domain: f"127.0.0.1:{layout.operator_ports(j)['smtp']}"
        for j, other in enumerate(OPERATORS)
        if other is not op
    }
    config = {
        "role": "operator",
        "data_dir": str(folder / "data"),
        **layout.database(op.slug),
        "pki": pki_section,
        "tls": {"certificate": str(cert.fullchain), "key": str(cert.key)},
        "whitelist": {"url": layout.whitelist_url, "refresh_seconds": 300},
        # Mailboxes are published to the authority's directory (docs/publication.md).
        "publication": {
            "authority_url": layout.fhir_url,
            "poll_seconds": 1.0,
            "retry_schedule": [1, 2, 5, 15, 60],
        },
        # The operator's copy of the national directory, searched by its users; refreshed
        # often in the demo so that publications show up in a few seconds (a day by default).
        "directory": {
            "extraction_url": layout.extraction_url,
            "refresh_seconds": 5.0,
            "retry_seconds": 2.0,
        },
        "operator": {
            "name": op.organisation,
            "structure_id": op.structure_id,
            "domains": [op.domain],
        },
        "smtp": {
            "hostname": op.mta_host,
            "listen_host": "127.0.0.1",
            "inbound_port": ports["smtp"],
            "submission_port": ports["submission"],
            "submissions_port": ports["submissions"],
            "routes": routes,
            "retry_schedule": [5, 15, 60, 300],
        },
        # The webmail logs in with the local provider too (a public client, PKCE).
        "web": {
            "listen_host": "127.0.0.1",
            "port": ports["web"],
            "oidc_client_id": webmail_client_id(op.slug),
        },
        "imap": {
            "listen_host": "127.0.0.1",
            "port": ports["imap"],  # STARTTLS
            "tls_port": ports["imaps"],  # implicit TLS
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "operator.toml").write_text(_toml(config))
    return {
        "name": op.organisation,
        "domain": op.domain,
        "config": str(folder / "operator.toml"),
        "structure_id": op.structure_id,
        "certificate_dn": _dn(op),
        "certificate": str(cert.cert),
        "endpoints": {k: f"127.0.0.1:{v}" for k, v in ports.items()},
        "directory_search": f"https://127.0.0.1:{ports['web']}/directory/search",
        "webmail": f"https://127.0.0.1:{ports['web']}/webmail/",
        "accounts": [],
    }


def _create_accounts(config: Path, op: DemoOperator) -> list[dict[str, str]]:
    node = open_node(load_settings(config))
    accounts = Accounts(node.db)
    created = []
    try:
        for person in op.people:
            address = f"{person.local_part}@{op.domain}"
            password = secrets.token_urlsafe(12)
            accounts.create_person(
                NewPerson(
                    address,
                    password,
                    person.id_nat,
                    person.last_name,
                    person.first_name,
                    profession_code="10",
                    profession_label="Médecin",
                ),
                AccountActor("demo", {"via": "mssante demo"}),
                domains=[op.domain],
            )
            created.append(
                {
                    "address": address,
                    "password": password,
                    "id_nat": person.id_nat,
                    "name": f"{person.first_name} {person.last_name}",
                }
            )
    finally:
        node.close()
    return created


def _dn(op: DemoOperator) -> str:
    return f"CN={op.mta_host},OU={op.structure_id},O={op.organisation},ST={departement_label(op.departement)},C=FR"


def _register(authority_cfg: Path, pki: TestPki) -> None:
    settings = load_settings(authority_cfg)
    node = open_node(settings)
    try:
        service = AuthorityService(node, Signer.from_settings(settings.authority))
        actor = Actor("demo", {"via": "mssante demo"})
        for op in OPERATORS:
            spec = OperatorSpec(
                op.organisation,
                op.structure_id,
                [DomainSpec(op.domain, op.organisation)],
                [_dn(op)],
                "demo@localhost",
                "support@localhost",
            )
            service.register(spec, actor)
    finally:
        node.close()


def start(layout: DemoLayout, info: dict[str, Any], *, log_dir: Path) -> None:
    """Start the authority, wait until it serves, then the operators."""
    log_dir.mkdir(parents=True, exist_ok=True)
    _spawn(layout, Path(info["authority"]["config"]), log_dir / "authority.log")
    _spawn(layout, Path(info["oidc"]["config"]), log_dir / "oidc.log", ("oidc", "serve"))
    _wait_for_port(layout.authority_port)
    _wait_for_port(layout.oidc_port)
    for op in info["operators"]:
        _spawn(layout, Path(op["config"]), log_dir / f"{Path(op['config']).parent.name}.log")


def _spawn(
    layout: DemoLayout, config: Path, log: Path, command: tuple[str, ...] = ("serve",)
) -> None:
    out = log.open("ab")
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "mssante", *command, "--config", str(config)],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    layout.processes.append(proc)
    layout.by_config[str(config)] = proc


def _wait_for_port(port: int) -> None:
    import socket  # noqa: PLC0415

    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise MssanteError(f"nothing started listening on port {port}: see the logs")


def wait_until_operators_hold_the_list(info: dict[str, Any], layout: DemoLayout) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    pending = {op["config"] for op in info["operators"]}
    while pending and time.monotonic() < deadline:
        for config in list(pending):
            settings = load_settings(Path(config))
            if (settings.whitelist_cache_dir() / "listeblanche.xml").exists():
                pending.discard(config)
        _check_alive(layout)
        time.sleep(0.2)
    if pending:
        raise MssanteError(
            "an operator did not receive the whitelist in time; see the logs in "
            + str(layout.root / "logs")
        )


def _check_alive(layout: DemoLayout) -> None:
    for proc in layout.processes:
        if proc.poll() is not None:
            raise MssanteError(
                f"a demo process stopped (exit {proc.returncode}); see {layout.root / 'logs'}"
            )


def stop(layout: DemoLayout) -> None:
    for proc in layout.processes:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in layout.processes:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def settings_of(path: str) -> Settings:
    return load_settings(Path(path))
