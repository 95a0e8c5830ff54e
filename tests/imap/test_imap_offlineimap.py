"""A real mail client: offlineimap3 syncs the mailbox both ways over implicit TLS (993).

offlineimap checks the server's chain against ``sslcacertfile`` (the test PKI's CA bundle)
and the name it connects to against the certificate, so operator B runs here with a
certificate for ``localhost`` from the same PKI.

Down: what SMTP delivered lands in a local Maildir. Up: a message marked seen, one deleted and
one written locally reach the server (STORE, STORE \\Deleted + EXPUNGE, APPEND)."""

from __future__ import annotations

import asyncio
import email
import email.header
import email.policy
import subprocess
from pathlib import Path

from imap_fixtures import (
    MARTIN,
    PASSWORD,
    Operator,
    Trust,
    localhost_trust,
    message,
    require_binary,
    running_operator,
)


def _config(op: Operator, trust: Trust, folder: Path) -> Path:
    (folder / "mail").mkdir(parents=True)
    config = folder / "offlineimaprc"
    config.write_text(
        f"""[general]
accounts = b
metadata = {folder}/metadata
ui = basic
maxsyncaccounts = 1

[Account b]
localrepository = b-local
remoterepository = b-remote

[Repository b-local]
type = Maildir
localfolders = {folder}/mail

[Repository b-remote]
type = IMAP
remotehost = localhost
remoteport = {op.imaps_port}
ipv6 = no
ssl = yes
sslcacertfile = {trust.ca}
remoteuser = {MARTIN}
remotepass = {PASSWORD}
folderfilter = lambda name: name in ["INBOX"]
maxconnections = 1
"""
    )
    return config


def _offlineimap(binary: str, config: Path) -> str:
    result = subprocess.run(
        [binary, "-c", str(config), "-o", "-1", "-u", "basic"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "ERROR" not in output, output
    return output


def _subjects(folder: Path) -> dict[str, Path]:
    """Subject → file of each message of a Maildir folder."""
    found = {}
    for path in sorted(p for sub in ("cur", "new") for p in (folder / sub).glob("*")):
        parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        found[str(parsed["Subject"])] = path
    return found


async def test_offlineimap_syncs_both_ways(
    trust: Trust, tmp_path: Path, b_database: dict[str, str]
) -> None:
    binary = require_binary("offlineimap", "offlineimap3")
    local_trust = localhost_trust(trust)
    async with running_operator(local_trust, tmp_path / "b", b_database) as op:
        for subject in ("Compte rendu", "Résultats", "Ordonnance"):
            await asyncio.to_thread(op.deliver, message(subject))
        config = _config(op, local_trust, tmp_path / "client")
        inbox = tmp_path / "client" / "mail" / "INBOX"

        await asyncio.to_thread(_offlineimap, binary, config)  # down
        local = _subjects(inbox)
        assert sorted(local) == ["Compte rendu", "Ordonnance", "Résultats"]
        assert b"Cordialement." in local["Compte rendu"].read_bytes()

        seen = local["Compte rendu"]  # read locally: the Maildir flag S
        seen.rename(seen.parent.parent / "cur" / (seen.name.split(":2,")[0] + ":2,S"))
        local["Résultats"].unlink()  # deleted locally
        (inbox / "new" / "1700000000.1.local").write_bytes(message("Écrit hors ligne"))

        await asyncio.to_thread(_offlineimap, binary, config)  # up
        stored = {m.subject: m.flags for m in op.rt.store.list_messages(MARTIN)}
        assert stored == {
            "Compte rendu": ("\\Seen",),
            "Ordonnance": (),
            "Écrit hors ligne": (),
        }
        await asyncio.to_thread(_offlineimap, binary, config)  # a third run changes nothing
        assert len(op.rt.store.list_messages(MARTIN)) == 3
        assert sorted(_subjects(inbox)) == ["Compte rendu", "Ordonnance", "Écrit hors ligne"]
