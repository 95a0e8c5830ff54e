"""The directory's routes on the authority's HTTPS app (public, like the agency's directory):

  GET /directory/search?q=…&limit=…   type-ahead, JSON (docs/directory.md, "Search")
  GET /fhir/Practitioner?…            FHIR Bundle of PER/CAB mailboxes (fhir.py)
  GET /fhir/Organization?…            FHIR Bundle of ORG/APP mailboxes
  GET /directory/extraction           the current extraction, streamed (operators' daily copy)

Bad input is a 400 with a one-line reason (``{"error": …}``, or an OperationOutcome for FHIR),
never a 500. Liste rouge mailboxes appear in none of them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from mssante.config import DirectorySettings
from mssante.directory.export import export_chunks, export_format
from mssante.directory.fhir import (
    ORGANIZATION,
    PRACTITIONER,
    FhirQueryError,
    Resource,
    operation_outcome,
    search_bundle,
)
from mssante.directory.search import DirectorySearch, QueryError
from mssante.store.db import Database

FHIR_JSON = "application/fhir+json"


def directory_router(db: Database, settings: DirectorySettings) -> APIRouter:
    router = APIRouter()
    searcher = DirectorySearch(db, settings)

    @router.get("/directory/search")
    def search(request: Request) -> JSONResponse:
        q = request.query_params.get("q")
        try:
            results = searcher.search(q, request.query_params.get("limit"))
        except QueryError as exc:
            return JSONResponse({"error": exc.public}, status_code=400)
        return JSONResponse({"query": q, "results": [r.as_dict() for r in results]})

    def fhir(request: Request, resource: Resource) -> JSONResponse:
        params = dict(request.query_params)
        if len(params) != len(request.query_params.multi_items()):
            return _fhir_error("paramètre répété / repeated search parameter")
        try:
            bundle = search_bundle(db, resource, params, settings, str(request.url))
        except FhirQueryError as exc:
            return _fhir_error(exc.public)
        return JSONResponse(bundle, media_type=FHIR_JSON)

    @router.get("/fhir/Practitioner")
    def practitioners(request: Request) -> JSONResponse:
        return fhir(request, PRACTITIONER)

    @router.get("/fhir/Organization")
    def organizations(request: Request) -> JSONResponse:
        return fhir(request, ORGANIZATION)

    @router.get("/directory/extraction")
    def extraction(request: Request) -> Response:
        form = export_format(db)
        etag = f'"{form.version}"'
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        headers["Content-Disposition"] = f'attachment; filename="{form.file_name}"'
        return StreamingResponse(
            export_chunks(db, form), media_type="text/plain; charset=utf-8", headers=headers
        )

    return router


def _fhir_error(message: str) -> JSONResponse:
    body: dict[str, Any] = operation_outcome(message)
    return JSONResponse(body, status_code=400, media_type=FHIR_JSON)
