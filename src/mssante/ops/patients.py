"""Patients' oppositions to the exchange of their data (BRIEF §7: "the patient's opposition
to exchanges about them must be recorded and honoured").

An opposition is recorded at the operator, by INS (the 15 characters, key included), with
who recorded it; while it stands, a message about that patient is refused before it is built
(the webmail's patient option, ``web/compose.py``), and the refusal is audited. Lifting it is
audited too. The INS is checked (its key) before anything is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from mssante.audit.events import Actor, AuditEvent, AuditRecord
from mssante.audit.log import append
from mssante.errors import MssanteError
from mssante.mail.patient import Ins, InsKind
from mssante.store.db import Database
from mssante.store.models import PatientOpposition, utcnow


class OppositionError(MssanteError):
    pass


@dataclass(frozen=True)
class Opposition:
    ins: str
    recorded_by: str
    note: str
    recorded_at: datetime


class Oppositions:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, ins: str, actor: Actor, *, note: str = "", kind: InsKind = InsKind.NIR) -> str:
        """Record the patient's opposition; the INS as stored. Recording it again keeps the
        first record (and says nothing new in the audit log)."""
        value = Ins.parse(ins, kind=kind).value
        with self.db.session() as session:
            if session.get(PatientOpposition, value) is not None:
                return value
            session.add(
                PatientOpposition(
                    ins=value, recorded_by=actor.name, note=note[:500], recorded_at=utcnow()
                )
            )
            _audit(session, AuditEvent.PATIENT_OPPOSITION_RECORDED, actor, value, note)
        return value

    def lift(self, ins: str, actor: Actor, *, kind: InsKind = InsKind.NIR) -> None:
        value = Ins.parse(ins, kind=kind).value
        with self.db.session() as session:
            row = session.get(PatientOpposition, value)
            if row is None:
                raise OppositionError(f"aucune opposition enregistrée pour l'INS {value}")
            session.delete(row)
            _audit(session, AuditEvent.PATIENT_OPPOSITION_LIFTED, actor, value, "")

    def find(self, ins: str) -> Opposition | None:
        with self.db.session() as session:
            row = session.get(PatientOpposition, ins)
            if row is None:
                return None
            return Opposition(row.ins, row.recorded_by, row.note, row.recorded_at)

    def listing(self) -> list[Opposition]:
        with self.db.session() as session:
            rows = session.execute(
                select(PatientOpposition).order_by(PatientOpposition.recorded_at)
            ).scalars()
            return [Opposition(r.ins, r.recorded_by, r.note, r.recorded_at) for r in rows]


def _audit(session: Session, event: AuditEvent, actor: Actor, ins: str, note: str) -> None:
    context = {**actor.context, **({"note": note[:200]} if note else {})}
    append(session, AuditRecord(event, actor=actor.name, target=ins, context=context))
