"""End to end, as a new user follows the README: the demo's trust space is running; a user of one
operator sends with `mssante send`; the message is listed at the other operator by `mssante mail
list`, with the trace showing it crossed over mutual TLS; and a reply comes back."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from mssante import demo
from support import run_mssante

Space = tuple[demo.DemoLayout, dict[str, Any]]


def _start(layout: demo.DemoLayout, info: dict[str, Any]) -> None:
    demo.start(layout, info, log_dir=layout.root / "logs")
    demo.wait_until_operators_hold_the_list(info, layout)


def _send(op: dict[str, Any], account: dict[str, str], to: str, subject: str) -> None:
    os.environ["MSSANTE_PASSWORD"] = account["password"]
    try:
        result = run_mssante(
            "send",
            "--config",
            op["config"],
            "--from",
            account["address"],
            "--to",
            to,
            "--subject",
            subject,
            "--body",
            "Compte rendu de consultation.",
        )
    finally:
        del os.environ["MSSANTE_PASSWORD"]
    assert result.returncode == 0, result.stdout + result.stderr
    assert "envoyé / sent" in result.stdout


def _wait_for(
    op: dict[str, Any], address: str, subject: str, timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = run_mssante(
            "mail", "list", address, "--config", op["config"], "--json", check=True
        )
        for message in json.loads(listed.stdout):
            if message["subject"] == subject:
                return message  # type: ignore[no-any-return]
        time.sleep(0.3)
    raise AssertionError(f"{subject!r} never reached {address}")


def test_a_message_crosses_the_trust_space_and_a_reply_comes_back(trust_space: Space) -> None:
    layout, info = trust_space
    _start(layout, info)
    nord, sud = info["operators"]
    helene, paul = nord["accounts"][0], sud["accounts"][0]

    _send(nord, helene, paul["address"], "Patient M. Bernard")
    got = _wait_for(sud, paul["address"], "Patient M. Bernard")
    assert got["from"] == helene["address"]
    assert got["trace"]["mutual-tls"] == "yes"
    assert got["trace"]["dn"] == nord["certificate_dn"]
    assert got["trace"]["tls"] in {"TLSv1.2", "TLSv1.3"}

    text = run_mssante(
        "mail", "list", paul["address"], "--config", sud["config"], check=True
    ).stdout
    assert "Patient M. Bernard" in text and f"via mutual TLS from {nord['certificate_dn']}" in text

    _send(sud, paul, helene["address"], "Re: Patient M. Bernard")
    back = _wait_for(nord, helene["address"], "Re: Patient M. Bernard")
    assert back["trace"]["dn"] == sud["certificate_dn"]


def test_a_recipient_outside_the_trust_space_is_refused_at_once(trust_space: Space) -> None:
    layout, info = trust_space
    _start(layout, info)
    nord = info["operators"][0]
    helene = nord["accounts"][0]
    os.environ["MSSANTE_PASSWORD"] = helene["password"]
    try:
        result = run_mssante(
            "send",
            "--config",
            nord["config"],
            "--from",
            helene["address"],
            "--to",
            "jean.dupont@gmail.com",
            "--subject",
            "x",
            "--body",
            "y",
        )
    finally:
        del os.environ["MSSANTE_PASSWORD"]
    assert result.returncode == 1
    assert (
        "jean.dupont@gmail.com: 550 5.7.1 jean.dupont@gmail.com n'appartient pas a l'espace de confiance MSSante"
        in result.stderr
    )


def test_a_mail_client_configures_itself_from_the_address_alone(trust_space: Space) -> None:
    """Thunderbird's request (docs/autoconfig.md): the operator's HTTPS listener answers with
    the IMAP and submission servers of the demo, and nothing for a domain it does not serve."""
    import ssl
    from xml.etree import ElementTree

    import httpx

    from mssante.config import load_settings

    layout, info = trust_space
    _start(layout, info)
    nord = info["operators"][0]
    address = nord["accounts"][0]["address"]
    ctx = ssl.create_default_context(
        cafile=str(load_settings(Path(nord["config"])).pki.trust_anchors[0])
    )
    ctx.check_hostname = False
    base = f"https://{nord['endpoints']['web']}/.well-known/autoconfig/mail/config-v1.1.xml"
    answer = httpx.get(base, params={"emailaddress": address}, verify=ctx)
    assert answer.status_code == 200
    root = ElementTree.fromstring(answer.content)
    servers = {
        (s.get("type"), s.findtext("port"), s.findtext("socketType"))
        for s in root.iter()
        if s.tag.endswith("Server")
    }
    imap_port = nord["endpoints"]["imap"].split(":")[1]
    submission_port = nord["endpoints"]["submission"].split(":")[1]
    assert ("imap", imap_port, "STARTTLS") in servers
    assert ("smtp", submission_port, "STARTTLS") in servers
    other = httpx.get(base, params={"emailaddress": "x@gmail.com"}, verify=ctx)
    assert other.status_code == 404
