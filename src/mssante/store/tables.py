"""Core ``Table`` handles of the ORM models, for the hot paths written as Core statements
(typed as ``Table`` so that insert/update/returning type-check)."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table

from mssante.store.models import AuditEntry, AuditHead, Folder, MailboxEntry, Message

audit_log = cast(Table, AuditEntry.__table__)
audit_head = cast(Table, AuditHead.__table__)
folders = cast(Table, Folder.__table__)
mailbox_entries = cast(Table, MailboxEntry.__table__)
messages = cast(Table, Message.__table__)
