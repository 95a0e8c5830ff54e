"""The authority's HTTPS server: the signed whitelist, and a JSON API for the operator registry.

Public (no authentication, like the agency's site):
  GET /listeblanchemssante.xml        the current list (real format)
  GET /listeblanchemssante.xml.p7s    its detached CMS signature
  GET /listeblanchemssante.xml.sha256 its checksum
Administration (``Authorization: Bearer <token>``, token in ``authority.admin_token_file``):
  GET    /api/v1/operators
  GET    /api/v1/operators/{name}
  PUT    /api/v1/operators/{name}    register or replace; re-signs and publishes the list
  DELETE /api/v1/operators/{name}    remove; re-signs and publishes the list
Publication by operators (mutual TLS; mssante.authority.publication_api, docs/publication.md):
  PATCH /fhir/Practitioner?identifier=…, /fhir/Organization?identifier=…
The national directory (public; mssante.directory.api, docs/directory.md):
  GET /directory/search, /fhir/Practitioner, /fhir/Organization, /directory/extraction
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from mssante.audit.events import AuditEvent, AuditRecord
from mssante.authority.publication_api import PublicationDoor, publication_router
from mssante.authority.publish import CHECKSUM_NAME, LIST_NAME, SIGNATURE_NAME, current_release
from mssante.authority.registry import Actor, DomainSpec, OperatorSpec
from mssante.authority.service import AuthorityService, published_dir
from mssante.directory.api import directory_router
from mssante.errors import MssanteError, NotFoundError

_MEDIA = {
    LIST_NAME: "application/xml",
    SIGNATURE_NAME: "application/pkcs7-signature",
    CHECKSUM_NAME: "text/plain; charset=utf-8",
}


class DomainIn(BaseModel):
    name: str = Field(max_length=253)
    description: str = Field("", max_length=500)


class OperatorIn(BaseModel):
    structure_id: str = Field(max_length=32)
    domains: list[DomainIn] = Field(min_length=1, max_length=10_000)
    certificate_dns: list[str] = Field(min_length=1, max_length=50)
    responsable_contact: str = Field("", max_length=300)
    support_contact: str = Field("", max_length=300)


def load_or_create_token(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = path.open("x")
    path.chmod(0o600)
    with fd:
        fd.write(token + "\n")
    return token


def _admin(request: Request) -> Actor:
    """The JSON API's only door: a bearer token, compared in constant time; refusals audited."""
    state = request.app.state
    given = request.headers.get("authorization", "")
    expected = f"Bearer {state.admin_token}"
    client = request.client.host if request.client else "?"
    if not hmac.compare_digest(given.encode(), expected.encode()):
        state.service.node.audit.record(
            AuditRecord(
                AuditEvent.ADMIN_ACCESS_DENIED,
                actor="anonymous",
                target=request.url.path,
                context={"remote": client},
            )
        )
        raise HTTPException(401, "authentication required", headers={"WWW-Authenticate": "Bearer"})
    return Actor("admin-api", {"remote": client, "method": request.method})


AdminActor = Annotated[Actor, Depends(_admin)]


def _add_publication(app: FastAPI, door: PublicationDoor | None) -> None:
    if door is not None:
        app.include_router(publication_router(door))


def create_app(
    service: AuthorityService, admin_token: str, publication: PublicationDoor | None = None
) -> FastAPI:
    """The authority's app; ``publication`` adds the operators' FHIR PATCH routes."""
    app = FastAPI(title="mssante authority", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.state.admin_token = admin_token
    out_dir = published_dir(service.node)

    @app.exception_handler(MssanteError)
    async def _refused(_: Request, exc: MssanteError) -> JSONResponse:
        status = 404 if isinstance(exc, NotFoundError) else 422
        return JSONResponse({"error": exc.public}, status_code=status)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(directory_router(service.node.db, service.node.settings.directory))
    _add_publication(app, publication)

    def _published(name: str) -> FileResponse:
        folder = current_release(out_dir)
        if folder is None:
            raise HTTPException(503, "no whitelist has been published yet")
        return FileResponse(
            folder / name, media_type=_MEDIA[name], headers={"Cache-Control": "max-age=300"}
        )

    for name in _MEDIA:
        app.add_api_route(f"/{name}", lambda n=name: _published(n), methods=["GET"], name=name)

    @app.get("/api/v1/operators")
    def list_operators(_: AdminActor) -> list[dict[str, Any]]:
        return [op.as_dict() for op in service.registry.operators()]

    @app.get("/api/v1/operators/{name}")
    def get_operator(name: str, _: AdminActor) -> dict[str, Any]:
        return service.registry.get(name).as_dict()

    @app.put("/api/v1/operators/{name}")
    def put_operator(name: str, body: OperatorIn, actor: AdminActor) -> dict[str, Any]:
        spec = OperatorSpec(
            name=name,
            structure_id=body.structure_id,
            domains=[DomainSpec(d.name, d.description) for d in body.domains],
            certificate_dns=body.certificate_dns,
            responsable_contact=body.responsable_contact,
            support_contact=body.support_contact,
        )
        view, release = service.register(spec, actor)
        return {"operator": view.as_dict(), "whitelist_sha256": release.sha256}

    @app.delete("/api/v1/operators/{name}")
    def delete_operator(name: str, actor: AdminActor) -> dict[str, Any]:
        release = service.remove(name, actor)
        return {"removed": name, "whitelist_sha256": release.sha256}

    return app
