"""The directory's routes on the authority's HTTPS app (public, like the agency's directory):

  GET /directory/search?q=…&limit=…   type-ahead, JSON (docs/directory.md, "Search")
  GET /fhir/Practitioner?…            FHIR Bundle of PER/CAB mailboxes (fhir.py)
  GET /fhir/Organization?…            FHIR Bundle of ORG/APP mailboxes
  GET /directory/extraction           the current extraction, streamed (operators' daily copy)

Bad input is a 400 with a one-line reason (``{"error": …}``, or an OperationOutcome for FHIR),
never a 500. Liste rouge mailboxes appear in none of them. Searches are limited per client
address (``directory.searches_per_second`` after ``directory.search_burst``): beyond, a 429
with ``Retry-After``. The data is public (the extraction is a download): the limit keeps the
service up for everyone, it does not hide anything.
"""

from __future__ import annotations

import math
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
from mssante.ratelimit import TokenBuckets
from mssante.store.db import Database

FHIR_JSON = "application/fhir+json"


def directory_router(db: Database, settings: DirectorySettings) -> APIRouter:
    router = APIRouter()
    searcher = DirectorySearch(db, settings)
    buckets = TokenBuckets(settings.searches_per_second, settings.search_burst)

    def too_many(request: Request) -> float:
        return buckets.take(request.client.host if request.client else "?")

    @router.get("/directory/search")
    def search(request: Request) -> JSONResponse:
        if wait := too_many(request):
            return _slow_down(wait, {"error": _SLOW_DOWN})
        return _type_ahead(searcher, request)

    def fhir(request: Request, resource: Resource) -> JSONResponse:
        if wait := too_many(request):
            return _slow_down(wait, operation_outcome(_SLOW_DOWN, "throttled"), FHIR_JSON)
        return _fhir_search(db, settings, request, resource)

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


def _type_ahead(searcher: DirectorySearch, request: Request) -> JSONResponse:
    q = request.query_params.get("q")
    try:
        results = searcher.search(q, request.query_params.get("limit"))
    except QueryError as exc:
        return JSONResponse({"error": exc.public}, status_code=400)
    return JSONResponse({"query": q, "results": [r.as_dict() for r in results]})


def _fhir_search(
    db: Database, settings: DirectorySettings, request: Request, resource: Resource
) -> JSONResponse:
    params = dict(request.query_params)
    if len(params) != len(request.query_params.multi_items()):
        return _fhir_error("paramètre répété / repeated search parameter")
    try:
        bundle = search_bundle(db, resource, params, settings, str(request.url))
    except FhirQueryError as exc:
        return _fhir_error(exc.public)
    return JSONResponse(bundle, media_type=FHIR_JSON)


_SLOW_DOWN = "trop de recherches, réessayez plus tard / too many searches, retry later"


def _slow_down(wait: float, body: dict[str, Any], media_type: str | None = None) -> JSONResponse:
    """429 (RFC 6585 §4) with the seconds to wait (RFC 9110 §10.2.3)."""
    headers = {"Retry-After": str(max(1, math.ceil(wait)))}
    return JSONResponse(body, status_code=429, headers=headers, media_type=media_type)


def _fhir_error(message: str) -> JSONResponse:
    body: dict[str, Any] = operation_outcome(message)
    return JSONResponse(body, status_code=400, media_type=FHIR_JSON)
