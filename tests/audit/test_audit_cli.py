"""`mssante audit verify` on a real node's database: clean, then one row altered by hand."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from mssante.audit.events import AuditEvent, AuditRecord
from mssante.audit.log import DatabaseAuditLog
from mssante.store.db import open_database
from support import is_postgres, run_mssante


def _node_config(tmp_path: Path, url: str, schema: str) -> Path:
    config = tmp_path / "node.toml"
    lines = [f'data_dir = "{tmp_path / "data"}"']
    if is_postgres():
        lines += ["[database]", f'url = "{url}"', f'schema_name = "{schema}"']
    config.write_text("\n".join(lines) + "\n")
    return config


def test_verify_names_the_altered_entry(tmp_path: Path, database_settings: tuple[str, str]) -> None:
    url, schema = database_settings
    if not is_postgres():
        url = f"sqlite:///{tmp_path / 'data' / 'mssante.db'}"
    config = _node_config(tmp_path, url, schema)
    db = open_database(url, schema=schema)
    log = DatabaseAuditLog(db)
    for i in range(10):
        log.record(
            AuditRecord(AuditEvent.MAILBOX_CREATED, actor="admin", target=f"u{i}@x.mssante.fr")
        )

    clean = run_mssante("audit", "verify", "--config", str(config))
    assert clean.returncode == 0, clean.stderr
    assert "10 entries" in clean.stdout

    # An insider edits one row directly in the database.
    if is_postgres():
        with db.engine.begin() as conn:
            conn.exec_driver_sql(
                "UPDATE audit_log SET target = 'intrus@x.mssante.fr' WHERE seq = 7"
            )
    else:
        with sqlite3.connect(tmp_path / "data" / "mssante.db") as raw:
            raw.execute("UPDATE audit_log SET target = 'intrus@x.mssante.fr' WHERE seq = 7")
    db.dispose()

    tampered = run_mssante("audit", "verify", "--config", str(config))
    assert tampered.returncode == 1
    assert "TAMPERED: entry 7 (mailbox.created) was altered" in tampered.stdout
    as_json = json.loads(run_mssante("audit", "verify", "--config", str(config), "--json").stdout)
    assert [(p["seq"], p["kind"]) for p in as_json["problems"]] == [(7, "altered")]
