"""Operators publish their mailboxes: the authority's FHIR PATCH routes (docs/publication.md).

  PATCH /fhir/Practitioner?identifier=…   PER and CAB mailboxes of one professional
  PATCH /fhir/Organization?identifier=…   ORG and APP mailboxes of one structure

Source: ``data/openapi-balmss.yaml``, the "FHIR PATCH Conditionnel" paths. The agency's API
takes an API key (``ESANTE-API-KEY``); here the caller is an operator of the trust space, so it
proves itself as it does between MTAs (BRIEF §2): with its IGC-Santé certificate, by mutual TLS.

A request goes through named stages; the first that fails answers with a FHIR OperationOutcome
and its status, and the refusal is audited (``directory.patch_refused``):

1. **certificate** — one was presented (401), :func:`verify_certificate` accepts it for TLS
   client authentication, revocation included (401), and its subject DN is registered for an
   operator in the registry (403);
2. **request** — one ``identifier`` parameter (400), a FHIR JSON body (415) of at most
   ``publication.max_patch_bytes`` (413);
3. **body** — a Parameters resource of known operations on mailboxes (400, 422; fhirpatch.py);
4. **apply** — domains (403), resource (404, 412), rules (422), one transaction with its audit
   entry ``directory.patch_accepted`` (publication.py); 200 with the resource.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError

from mssante.audit.events import AuditEvent, AuditRecord, AuditSink
from mssante.authority.mtls import peer_chain
from mssante.config import PublicationSettings
from mssante.directory.fhirpatch import FHIR_JSON, PatchError, operation_outcome, parse_patch
from mssante.directory.publication import PatchRequest, PatchResult, Publisher, apply_patch
from mssante.errors import MssanteError
from mssante.pki.crl import CrlCache
from mssante.pki.names import normalise_dn
from mssante.pki.profiles import Purpose
from mssante.pki.truststore import TrustStore
from mssante.pki.verify import verify_certificate
from mssante.store.db import Database
from mssante.store.models import Domain, Operator, OperatorCertificate

_MEDIA_TYPES = frozenset({FHIR_JSON, "application/json"})


@dataclass(frozen=True)
class PublicationDoor:
    """What the routes need: the store, the audit log, and the PKI to check operators by."""

    db: Database
    audit: AuditSink
    settings: PublicationSettings
    trust: TrustStore | None  # None: no anchors configured, every PATCH is refused (401)
    crls: CrlCache | None


@dataclass
class _Attempt:
    """What is known of a request so far, for its audit entry."""

    resource: str
    identifier: str
    remote: str
    dn: str = ""
    publisher: Publisher | None = None

    @property
    def actor(self) -> str:
        if self.publisher is not None:
            return self.publisher.name
        return self.dn or "anonymous"


def publication_router(door: PublicationDoor) -> APIRouter:
    router = APIRouter()

    @router.patch("/fhir/Practitioner")
    async def practitioner(request: Request) -> Response:
        return await handle_patch(door, request, "Practitioner")

    @router.patch("/fhir/Organization")
    async def organization(request: Request) -> Response:
        return await handle_patch(door, request, "Organization")

    return router


async def handle_patch(door: PublicationDoor, request: Request, resource: str) -> Response:
    attempt = _Attempt(
        resource,
        request.query_params.get("identifier", "")[:200],
        request.client.host if request.client else "",
    )
    try:
        result = await _stages(door, request, attempt)
    except PatchError as refusal:
        await asyncio.to_thread(_audit_refusal, door.audit, attempt, refusal)
        return _outcome(refusal)
    return JSONResponse(result.resource, media_type=FHIR_JSON)


async def _stages(door: PublicationDoor, request: Request, attempt: _Attempt) -> PatchResult:
    chain = peer_chain(request)
    attempt.dn = _subject(chain)
    attempt.publisher = await asyncio.to_thread(authenticate, door, chain)
    identifier = _identifier(request)
    body = await _body(request, door.settings.max_patch_bytes)
    operations = parse_patch(attempt.resource, body, max_operations=door.settings.max_operations)
    patch = PatchRequest(
        attempt.resource, identifier, operations, attempt.publisher, remote=attempt.remote
    )
    return await asyncio.to_thread(_apply, door.db, patch)


# -- 1. certificate ----------------------------------------------------------------------------


def authenticate(door: PublicationDoor, chain: Sequence[x509.Certificate]) -> Publisher:
    """The operator behind the client certificate ``chain`` (leaf first)."""
    if not chain:
        raise PatchError(
            "a client certificate is required: the operator's IGC-Santé certificate, "
            "presented in the TLS handshake",
            status=401,
            issue="login",
        )
    if door.trust is None:
        raise PatchError("this authority does not accept publications", status=401, issue="login")
    result = verify_certificate(
        chain[0], purpose=Purpose.CLIENT, trust=door.trust, crls=door.crls,
        presented_chain=chain[1:],
    )  # fmt: skip
    if not result.ok:
        raise PatchError(f"certificate refused: {result.reason}", status=401, issue="security")
    publisher = registered_operator(door.db, chain[0].subject)
    if publisher is None:
        raise PatchError(
            f"the certificate {result.subject_dn} is not registered for any operator",
            status=403,
            issue="forbidden",
        )
    return publisher


def registered_operator(db: Database, subject: x509.Name) -> Publisher | None:
    """The operator(s) whose registered DNs include ``subject`` (a DN may be listed for
    several operators, BRIEF §3: their domains are then all its to publish)."""
    wanted = normalise_dn(subject)
    with db.session() as session:
        rows = session.execute(
            select(OperatorCertificate.dn, Operator.id, Operator.name, Operator.structure_id)
            .join(Operator, OperatorCertificate.operator_id == Operator.id)
            .order_by(Operator.name)
        ).all()
        matched = [r for r in rows if _same_dn(r.dn, wanted)]
        if not matched:
            return None
        domains = session.execute(
            select(Domain.name).where(Domain.operator_id.in_({r.id for r in matched}))
        ).scalars()
        return Publisher(
            name=matched[0].name,
            structure_id=matched[0].structure_id,
            domains=frozenset(domains),
            dn=str(matched[0].dn),
        )


def _same_dn(stored: str, wanted: str) -> bool:
    try:
        return normalise_dn(stored) == wanted
    except (MssanteError, ValueError):
        return False


def _subject(chain: Sequence[x509.Certificate]) -> str:
    if not chain:
        return ""
    try:
        return chain[0].subject.rfc4514_string()[:300]
    except ValueError:
        return "?"


# -- 2. request --------------------------------------------------------------------------------


def _identifier(request: Request) -> str:
    """openapi-balmss.yaml: the conditional PATCH takes one ``identifier`` parameter."""
    names = [name for name, _ in request.query_params.multi_items()]
    unknown = sorted(set(names) - {"identifier"})
    if unknown:
        raise PatchError(f"unknown parameter {unknown[0][:40]!r}", issue="not-supported")
    if names.count("identifier") != 1 or not request.query_params["identifier"].strip():
        raise PatchError("one identifier=system|value parameter is required", issue="required")
    return request.query_params["identifier"]


async def _body(request: Request, limit: int) -> bytes:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in _MEDIA_TYPES:
        raise PatchError(
            f"the body must be {FHIR_JSON} (given: {media[:60] or 'none'})",
            status=415,
            issue="not-supported",
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


def _too_large(limit: int) -> PatchError:
    return PatchError(f"the body is larger than {limit} bytes", status=413, issue="too-long")


# -- 4. apply ----------------------------------------------------------------------------------


def _apply(db: Database, patch: PatchRequest) -> PatchResult:
    try:
        with db.session() as session:
            return apply_patch(session, patch)
    except (IntegrityError, OperationalError):
        # Two publications of the same new address at once (unique index), or a lock that
        # did not come in time: nothing was kept; the operator tries again.
        raise PatchError(
            "a concurrent change of the same mailbox: try again", status=409, issue="conflict"
        ) from None


# -- answers -----------------------------------------------------------------------------------


def _outcome(refusal: PatchError) -> JSONResponse:
    return JSONResponse(
        operation_outcome(refusal.public, refusal.issue),
        status_code=refusal.status,
        media_type=FHIR_JSON,
    )


def _audit_refusal(audit: AuditSink, attempt: _Attempt, refusal: PatchError) -> None:
    audit.record(
        AuditRecord(
            AuditEvent.DIRECTORY_PATCH_REFUSED,
            actor=attempt.actor,
            target=f"{attempt.resource}?identifier={attempt.identifier}",
            context={
                "status": refusal.status,
                "issue": refusal.issue,
                "reason": refusal.public,
                "dn": attempt.dn,
                "remote": attempt.remote,
            },
        )
    )
