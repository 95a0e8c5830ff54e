"""End to end: a running authority publishes the signed whitelist over HTTPS; an operator
process fetches it, verifies it and keeps it; a tampered list is refused and the previous one
stays in force; a registration through the JSON API reaches the operator on its next refresh."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import httpx

from mssante import demo
from mssante.config import load_settings
from support import run_mssante

Space = tuple[demo.DemoLayout, dict[str, Any]]


def _start_authority(layout: demo.DemoLayout, info: dict[str, Any]) -> None:
    demo._spawn(layout, Path(info["authority"]["config"]), layout.root / "authority.log")
    demo._wait_for_port(layout.authority_port)


def _refresh(op: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    result = run_mssante("operator", "refresh-whitelist", "--config", op["config"], "--json")
    return result.returncode, json.loads(result.stdout) if result.stdout else {
        "stderr": result.stderr
    }


def _audit_events(config: str) -> list[str]:
    result = run_mssante("audit", "list", "--config", config, "--json", check=True)
    return [e["event"] for e in json.loads(result.stdout)]


def test_operator_fetches_verifies_and_keeps_the_list(trust_space: Space) -> None:
    layout, info = trust_space
    _start_authority(layout, info)
    nord, sud = info["operators"]

    code, out = _refresh(nord)
    assert (code, out["status"], out["domains_in_force"]) == (0, "accepted", 2)
    check = run_mssante(
        "trust", "check", sud["domain"], "--dn", sud["certificate_dn"], "--config", nord["config"]
    )
    assert check.returncode == 0, check.stdout + check.stderr

    # Tamper with one byte of the published list on the authority's disk.
    settings = load_settings(Path(info["authority"]["config"]))
    published = (settings.data_dir / "published" / "current" / "listeblanchemssante.xml").resolve()
    data = bytearray(published.read_bytes())
    data[data.index(b"cabinet-sud")] = ord("k")
    published.write_bytes(bytes(data))

    code, out = _refresh(nord)
    assert code == 1
    assert out["status"] == "rejected"
    assert "signature" in out["reason"]
    assert out["domains_in_force"] == 2  # the previous list stays in force
    check = run_mssante(
        "trust", "check", sud["domain"], "--dn", sud["certificate_dn"], "--config", nord["config"]
    )
    assert check.returncode == 0
    whitelist_events = [e for e in _audit_events(nord["config"]) if e.startswith("whitelist.")]
    assert whitelist_events == ["whitelist.accepted", "whitelist.rejected"]


def test_registration_through_the_api_reaches_operators(trust_space: Space) -> None:
    layout, info = trust_space
    _start_authority(layout, info)
    nord = info["operators"][0]
    assert _refresh(nord)[0] == 0

    token = Path(info["authority"]["admin_token_file"]).read_text().strip()
    settings = load_settings(Path(nord["config"]))
    body = {
        "structure_id": "341459958900028",
        "domains": [{"name": "clinique-est.mssante.test", "description": "Clinique Est"}],
        "certificate_dns": [
            "CN=mx.clinique-est.mssante.test,OU=341459958900028,O=CLINIQUE EST,ST=Bas-Rhin (67),C=FR"
        ],
    }
    url = f"https://localhost:{layout.authority_port}/api/v1/operators/CLINIQUE%20EST"
    ctx = ssl.create_default_context(cafile=str(settings.pki.trust_anchors[0]))
    refused = httpx.put(url, json=body, verify=ctx)
    assert refused.status_code == 401
    bad = httpx.put(
        url,
        json={**body, "structure_id": "999"},
        verify=ctx,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert bad.status_code == 422 and "structure id" in bad.json()["error"]
    ok = httpx.put(url, json=body, verify=ctx, headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200, ok.text

    code, out = _refresh(nord)
    assert (code, out["status"], out["domains_in_force"]) == (0, "accepted", 3)
    events = _audit_events(info["authority"]["config"])
    assert "authority.admin_access_denied" in events
    assert events.count("authority.whitelist_published") == 3
