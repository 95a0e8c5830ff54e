"""A real Postfix as a third operator of the trust space: its domain and certificate DN on the
authority's signed whitelist, mail flowing Postfix → mssante and mssante → Postfix, both ways
over mutual TLS with certificates from the test health PKI."""

from __future__ import annotations

import json
import os
import smtplib
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mssante import demo
from mssante.authority.publish import Signer
from mssante.authority.registry import Actor, DomainSpec, OperatorSpec
from mssante.authority.service import AuthorityService
from mssante.config import load_settings
from mssante.pki import TestPki
from mssante.pki.names import departement_label
from mssante.runtime import open_node
from peers.postfix import PostfixInstance, Route, peer_workdir, postfix_skip_reason
from support import run_mssante

pytestmark = pytest.mark.skipif(
    postfix_skip_reason() is not None, reason=postfix_skip_reason() or ""
)

DOMAIN, HOST, STRUCT = (
    "clinique-postfix.mssante.test",
    "smtp.clinique-postfix.mssante.test",
    "318310021300028",
)
DN = f"CN={HOST},OU={STRUCT},O=CLINIQUE POSTFIX,ST={departement_label('69')},C=FR"


def _register_postfix(info: dict[str, Any]) -> None:
    settings = load_settings(Path(info["authority"]["config"]))
    node = open_node(settings)
    try:
        spec = OperatorSpec(
            "CLINIQUE POSTFIX", STRUCT, [DomainSpec(DOMAIN, "Clinique (Postfix)")], [DN]
        )
        AuthorityService(node, Signer.from_settings(settings.authority)).register(
            spec, Actor("test")
        )
    finally:
        node.close()


def _add_route(op: dict[str, Any], domain: str, port: int) -> None:
    path = Path(op["config"])
    config = tomllib.loads(path.read_text())
    config["smtp"]["routes"][domain] = f"127.0.0.1:{port}"
    path.write_text(demo._toml(config))


@pytest.fixture
def postfix_peer(
    trust_space: tuple[demo.DemoLayout, dict[str, Any]],
) -> Iterator[tuple[PostfixInstance, int]]:
    layout, info = trust_space
    nord = info["operators"][0]
    pki = TestPki.load(layout.root / "pki")
    cert = pki.issue_server(HOST, STRUCT, "CLINIQUE POSTFIX", "69")
    port, inject = layout.base_port + 35, layout.base_port + 36  # inside the space's free block
    _register_postfix(info)
    _add_route(nord, DOMAIN, port)
    nord_port = int(nord["endpoints"]["smtp"].split(":")[1])
    with (
        peer_workdir("mssante-interop-") as root,
        PostfixInstance(
            root / "postfix",
            hostname=HOST,
            domain=DOMAIN,
            listen_port=port,
            inject_port=inject,
            cert=cert.fullchain,
            key=cert.key,
            ca_bundle=pki.paths().bundle,
            routes={nord["domain"]: Route("127.0.0.1", nord_port, f"smtp.{nord['domain']}")},
            users=("secretariat",),
        ) as postfix,
    ):
        demo.start(layout, info, log_dir=layout.root / "logs")
        demo.wait_until_operators_hold_the_list(info, layout)
        yield postfix, inject


def test_mssante_to_postfix_over_mutual_tls(
    trust_space: tuple[demo.DemoLayout, dict[str, Any]], postfix_peer: tuple[PostfixInstance, int]
) -> None:
    _, info = trust_space
    postfix, _ = postfix_peer
    nord = info["operators"][0]
    helene = nord["accounts"][0]
    os.environ["MSSANTE_PASSWORD"] = helene["password"]
    try:
        sent = run_mssante(
            "send",
            "--config",
            nord["config"],
            "--from",
            helene["address"],
            "--to",
            f"secretariat@{DOMAIN}",
            "--subject",
            "Vers Postfix",
            "--body",
            "Bonjour",
        )
    finally:
        del os.environ["MSSANTE_PASSWORD"]
    assert sent.returncode == 0, sent.stdout + sent.stderr
    (raw,) = postfix.wait_for_messages("secretariat", 1, timeout=60)
    head = raw.split(b"\n\n")[0].decode()
    assert "Subject: Vers Postfix" in head
    # Postfix records the client certificate it verified (smtpd_tls_received_header)
    assert f'Client CN "smtp.{nord["domain"]}"' in head
    assert "(verified OK)" in head


def test_postfix_to_mssante_over_mutual_tls(
    trust_space: tuple[demo.DemoLayout, dict[str, Any]], postfix_peer: tuple[PostfixInstance, int]
) -> None:
    _, info = trust_space
    _, inject = postfix_peer
    nord = info["operators"][0]
    helene = nord["accounts"][0]
    body = (
        f"From: secretariat@{DOMAIN}\r\nTo: {helene['address']}\r\nSubject: Depuis Postfix\r\n"
        f"Message-ID: <interop-1@{DOMAIN}>\r\n\r\nCompte rendu.\r\n"
    )
    with smtplib.SMTP("127.0.0.1", inject, timeout=30) as smtp:
        smtp.sendmail(f"secretariat@{DOMAIN}", [helene["address"]], body.encode())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listed = run_mssante(
            "mail", "list", helene["address"], "--config", nord["config"], "--json", check=True
        )
        found = [m for m in json.loads(listed.stdout) if m["subject"] == "Depuis Postfix"]
        if found:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the message from Postfix never arrived")
    assert found[0]["trace"]["mutual-tls"] == "yes"
    assert found[0]["trace"]["dn"] == DN
