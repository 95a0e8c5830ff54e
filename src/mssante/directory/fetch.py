"""Operator side: download the authority's current extraction (``GET /directory/extraction``)
and import it with the same importer as the authority (docs/directory.md, "Operators' copy").

Over HTTPS only, the server's certificate checked against ``pki.trust_anchors``; streamed to a
temporary file under ``data_dir/directory`` (never held in memory), bounded by
``directory.max_extraction_bytes``; conditional on the last download's ``ETag``, so an
unchanged directory costs one request. The running operator does a round a day
(``operator/directory_sync.py``); ``mssante directory fetch`` runs one round now.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx

from mssante.audit.events import AuditEvent, AuditRecord
from mssante.config import Settings
from mssante.directory.importer import ImportObserver, ImportSummary, import_extraction
from mssante.errors import ConfigError, MssanteError
from mssante.runtime import Node


class FetchError(MssanteError):
    """The extraction could not be downloaded; the directory in force is kept."""


@dataclass(frozen=True)
class FetchOutcome:
    unchanged: bool
    summary: ImportSummary | None = None


def directory_dir(settings: Settings) -> Path:
    return settings.data_dir / "directory"


def fetch_and_import(
    node: Node, *, actor: str, observer: ImportObserver | None = None
) -> FetchOutcome:
    """One round: download (unless unchanged), then import. Failures are audited."""
    settings = node.settings
    url = settings.directory.extraction_url
    if not url.lower().startswith("https://"):
        raise ConfigError("directory.extraction_url must be an https URL")
    folder = directory_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        path, etag = _download(url, folder, settings)
    except FetchError as exc:
        node.audit.record(
            AuditRecord(AuditEvent.DIRECTORY_FETCH_FAILED, actor, url, {"reason": exc.public})
        )
        raise
    if path is None:
        return FetchOutcome(unchanged=True)
    node.audit.record(AuditRecord(AuditEvent.DIRECTORY_FETCHED, actor, url, {"etag": etag}))
    try:
        summary = import_extraction(
            node.db, path, settings.directory, actor=actor, observer=observer
        )
    finally:
        path.unlink(missing_ok=True)
    (folder / "extraction.etag").write_text(etag)
    return FetchOutcome(unchanged=False, summary=summary)


def _download(url: str, folder: Path, settings: Settings) -> tuple[Path | None, str]:
    etag_file = folder / "extraction.etag"
    headers = {"If-None-Match": etag_file.read_text().strip()} if etag_file.exists() else {}
    target = folder / "extraction.part"
    limit = settings.directory.max_extraction_bytes
    try:
        with (
            httpx.Client(
                verify=_tls_context(settings), timeout=60, follow_redirects=False
            ) as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            if response.status_code == httpx.codes.NOT_MODIFIED:
                return None, headers.get("If-None-Match", "")
            if response.status_code != httpx.codes.OK:
                raise FetchError(
                    f"téléchargement refusé / download refused: HTTP {response.status_code}"
                )
            _save(response, target, limit)
            return target, response.headers.get("etag", "")
    except httpx.HTTPError as exc:
        target.unlink(missing_ok=True)
        raise FetchError(
            f"téléchargement impossible / download failed: {type(exc).__name__}"
        ) from None


def _save(response: httpx.Response, target: Path, limit: int) -> None:
    written = 0
    with target.open("wb") as out:
        for chunk in response.iter_bytes(1 << 20):
            written += len(chunk)
            if written > limit:
                out.close()
                target.unlink(missing_ok=True)
                raise FetchError(
                    f"extraction trop grosse (plus de {limit} octets) / "
                    f"extraction too large (over {limit} bytes)"
                )
            out.write(chunk)


def _tls_context(settings: Settings) -> ssl.SSLContext:
    if not settings.pki.trust_anchors:
        raise ConfigError("pki.trust_anchors must name the root(s) of the authority's certificate")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # hostname checked, no system roots
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    for anchor in settings.pki.trust_anchors:
        context.load_verify_locations(cafile=str(anchor))
    return context
