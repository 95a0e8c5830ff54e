"""End to end: the demo's trust space running, each operator publishes its mailboxes to the
authority's directory by FHIR PATCH over mutual TLS (its outbox worker, at start); a search at
the authority, from the other operator, finds them, and so does a search of the other
operator's own copy of the directory (downloaded from the authority); a mailbox put on liste
rouge at its operator disappears from the directory's search and extraction, and from the
copies (docs/publication.md, docs/directory.md)."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from mssante import demo
from mssante.audit.events import Actor
from mssante.config import load_settings
from mssante.ops.accounts import Accounts
from mssante.runtime import open_node
from support import run_mssante

Space = tuple[demo.DemoLayout, dict[str, Any]]
TIMEOUT = 45.0


def _as_operator(info: dict[str, Any], op: dict[str, Any]) -> httpx.Client:
    """An HTTPS client of the authority, presenting the operator's certificate and checking
    the authority's against the demo PKI."""
    settings = load_settings(Path(op["config"]))
    ctx = ssl.create_default_context(cafile=info["pki"]["trust_anchors"][0])
    assert settings.tls.certificate and settings.tls.key
    ctx.load_cert_chain(settings.tls.certificate, settings.tls.key)
    return httpx.Client(verify=ctx, timeout=10)


def _search(http: httpx.Client, info: dict[str, Any], q: str) -> list[str]:
    answer = http.get(info["authority"]["directory_search"], params={"q": q})
    assert answer.status_code == 200, answer.text
    return [r["address"] for r in answer.json()["results"]]


def _search_locally(info: dict[str, Any], op: dict[str, Any], q: str) -> list[str]:
    """The operator's own copy of the directory, as its users' type-ahead asks it."""
    ctx = ssl.create_default_context(cafile=info["pki"]["trust_anchors"][0])
    ctx.check_hostname = False  # 127.0.0.1; the operator's certificate names smtp.<domain>
    answer = httpx.get(op["directory_search"], params={"q": q}, verify=ctx, timeout=10)
    assert answer.status_code == 200, answer.text
    return [r["address"] for r in answer.json()["results"]]


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"not within {TIMEOUT} s: {what}")


def _outbox(op: dict[str, Any]) -> dict[str, Any]:
    listed = run_mssante("directory", "outbox", "--config", op["config"], "--json", "--all")
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)  # type: ignore[no-any-return]


def test_operators_publish_and_liste_rouge_hides(trust_space: Space) -> None:
    layout, info = trust_space
    nord, sud = info["operators"]
    assert _outbox(nord)["counts"]["pending"] == len(nord["accounts"])  # written before start
    demo.start(layout, info, log_dir=layout.root / "logs")
    demo.wait_until_operators_hold_the_list(info, layout)
    martin = nord["accounts"][0]["address"]
    durand = sud["accounts"][0]["address"]

    with _as_operator(info, sud) as from_sud, _as_operator(info, nord) as from_nord:
        _until(lambda: _search(from_sud, info, "helene martin") == [martin], "Martin published")
        _until(lambda: _search(from_nord, info, "paul durand") == [durand], "Durand published")
        # Each operator's copy (downloaded from the authority: operator/directory_sync.py)
        _until(lambda: _search_locally(info, sud, "helene martin") == [martin], "Sud's copy")
        _until(lambda: _search_locally(info, nord, "paul durand") == [durand], "Nord's copy")
        for op in (nord, sud):
            counts = _outbox(op)["counts"]
            assert counts == {"pending": 0, "sent": len(op["accounts"]), "failed": 0}

        node = open_node(load_settings(Path(nord["config"])))
        try:
            Accounts(node.db).set_liste_rouge(martin, True, Actor("e2e"))
        finally:
            node.close()
        _until(lambda: _search(from_sud, info, "martin") == [], "Martin hidden")
        _until(lambda: _search_locally(info, sud, "martin") == [], "Martin gone from Sud's copy")
        extraction = from_sud.get(f"https://{info['authority']['https']}/directory/extraction")
        assert extraction.status_code == 200
        assert martin not in extraction.text
        assert durand in extraction.text
        # Names come with a professional's other entries (the agency's file), not with the
        # PATCH: a mailbox new to the directory is found by the words of its address.
        assert _search(from_sud, info, "secretariat cardio") == [nord["accounts"][1]["address"]]
