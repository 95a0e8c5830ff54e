"""A real mail client: mbsync (isync) syncs the mailbox both ways over STARTTLS on port 143.

Down: what SMTP delivered lands in a local Maildir. Up: a message written locally is
appended to the server, and a flag set locally (seen) reaches MailboxEntry.flags."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from imap_fixtures import MARTIN, PASSWORD, Operator, Trust, message, require_binary


def _config(op: Operator, trust: Trust, folder: Path) -> Path:
    maildir = folder / "mail"
    maildir.mkdir(parents=True)
    leaf = folder / "server.pem"  # isync trusts a certificate listed here as it is
    leaf.write_bytes(trust.cert.read_bytes())
    config = folder / "mbsyncrc"
    config.write_text(
        f"""IMAPAccount b
Host 127.0.0.1
Port {op.imap_port}
User {MARTIN}
Pass {PASSWORD}
SSLType STARTTLS
CertificateFile {leaf}
AuthMechs LOGIN

IMAPStore b-remote
Account b

MaildirStore b-local
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel b
Far :b-remote:
Near :b-local:
Patterns INBOX Archive
Create Both
Expunge Both
SyncState *
Sync All
"""
    )
    return config


def _mbsync(config: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["mbsync", "-c", str(config), "-a"], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _files(folder: Path) -> list[Path]:
    return sorted(p for sub in ("cur", "new") for p in (folder / sub).glob("*"))


async def test_mbsync_both_ways(operator: Operator, trust: Trust, tmp_path: Path) -> None:
    require_binary("mbsync", "isync")
    for subject in ("Compte rendu", "Résultats"):
        await asyncio.to_thread(operator.deliver, message(subject))
    config = _config(operator, trust, tmp_path / "client")
    inbox = tmp_path / "client" / "mail" / "INBOX"

    await asyncio.to_thread(_mbsync, config)  # down
    downloaded = _files(inbox)
    assert len(downloaded) == 2
    assert b"Subject: Compte rendu" in b"".join(p.read_bytes() for p in downloaded)

    first = next(p for p in downloaded if b"Compte rendu" in p.read_bytes())
    first.rename(inbox / "cur" / (first.name.split(":2,")[0] + ":2,FS"))  # seen, flagged
    (inbox / "new" / "1700000000.local.host").write_bytes(message("Écrit hors ligne"))

    await asyncio.to_thread(_mbsync, config)  # up
    stored = {m.subject: m.flags for m in operator.rt.store.list_messages(MARTIN)}
    assert stored == {
        "Compte rendu": ("\\Flagged", "\\Seen"),
        "Résultats": (),
        "Écrit hors ligne": (),
    }
    assert len(_files(inbox)) == 3
    await asyncio.to_thread(_mbsync, config)  # a third run changes nothing
    assert len(operator.rt.store.list_messages(MARTIN)) == 3
