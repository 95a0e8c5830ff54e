"""Certificate revocation lists: fetch, validate, keep the last valid one on disk.

A :class:`CrlCache` knows a list of sources (file paths, ``file://`` URIs, ``http(s)://`` URLs).
:meth:`CrlCache.refresh` fetches each one and accepts a CRL only if it is well formed, signed by
a CA of the trust store, issued in the past and not older than the one already held. An accepted
CRL is written to ``cache_dir``; when a source cannot be read, or serves something invalid, the
last valid CRL stays in use (and survives a restart), and verification results say so.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mssante.audit.events import SYSTEM_ACTOR, AuditEvent, AuditRecord, AuditSink
from mssante.logging import get_logger
from mssante.pki.errors import CertificateError
from mssante.pki.loading import load_crl
from mssante.pki.names import dn_string
from mssante.pki.truststore import TrustStore, key_id

if TYPE_CHECKING:
    from mssante.config import Settings

_CLOCK_SKEW = timedelta(minutes=5)
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_TIMEOUT = 15.0
# RFC 5280 §5.2: CRL extensions this code understands; an unknown critical one voids the CRL.
_UNDERSTOOD = (
    x509.CRLNumber,
    x509.AuthorityKeyIdentifier,
    x509.IssuerAlternativeName,
    x509.IssuingDistributionPoint,
)


class RefreshStatus(StrEnum):
    UPDATED = "updated"  # a new valid CRL was accepted and cached
    UNCHANGED = "unchanged"  # the source serves the CRL already held
    KEPT_LAST_VALID = "kept_last_valid"  # fetch or validation failed; the last valid CRL stays
    FAILED = "failed"  # fetch or validation failed and no valid CRL is held for the source


@dataclass(frozen=True)
class CrlRefresh:
    """What happened to one source during :meth:`CrlCache.refresh`."""

    source: str
    status: RefreshStatus
    detail: str = ""
    issuer: str | None = None
    number: int | None = None
    next_update: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "status": self.status.value,
            "detail": self.detail,
            "issuer": self.issuer,
            "number": self.number,
            "next_update": self.next_update.isoformat() if self.next_update else None,
        }


@dataclass(frozen=True)
class CrlEntry:
    """A validated CRL held for one source."""

    source: str
    crl: x509.CertificateRevocationList
    der: bytes
    issuer_key: bytes  # key_id() of the CA certificate whose key verified the signature
    number: int
    this_update: datetime
    next_update: datetime
    last_error: str | None = None  # why the last refresh of the source did not replace it

    @property
    def issuer(self) -> str:
        return dn_string(self.crl.issuer)


@dataclass(frozen=True)
class CrlStatus:
    """The CRL that answers for one issuer at one time, with what a reader should know of it."""

    entry: CrlEntry
    stale: bool  # ``at`` is past its nextUpdate

    @property
    def crl(self) -> x509.CertificateRevocationList:
        return self.entry.crl

    def note(self) -> str:
        """Empty for a fresh CRL; else why this is the last valid CRL and not a fresh one."""
        parts: list[str] = []
        if self.stale:
            parts.append(f"past its nextUpdate {self.entry.next_update:%Y-%m-%d %H:%M}Z")
        if self.entry.last_error:
            parts.append(f"last refresh failed: {self.entry.last_error}")
        if not parts:
            return ""
        return f"using the last valid CRL of '{self.entry.issuer}' ({'; '.join(parts)})"


class CrlError(Exception):
    """Internal: why a fetched CRL was not accepted (becomes a CrlRefresh detail)."""


class CrlCache:
    """CRLs from configured sources, validated against ``trust``, kept in ``cache_dir``."""

    def __init__(
        self,
        cache_dir: Path,
        sources: Sequence[str],
        trust: TrustStore,
        *,
        require_revocation_check: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        audit: AuditSink | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.sources = tuple(sources)
        self.trust = trust
        self.require_revocation_check = require_revocation_check
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._audit = audit
        self._log = get_logger("mssante.pki.crl")
        self._entries: dict[str, CrlEntry] = self._load_cached()
        self._refreshing = threading.Lock()  # the CRL clock and a whitelist refresh may meet
        # Moves whenever a refresh accepts a new CRL: whoever cached a verification (an inbound
        # session, the revocation watcher) checks again (docs/revocation.md).
        self.generation = 0

    @classmethod
    def from_settings(
        cls, settings: Settings, trust: TrustStore, *, audit: AuditSink | None = None
    ) -> CrlCache:
        return cls(
            settings.crl_cache_dir(),
            settings.pki.crl_sources,
            trust,
            require_revocation_check=settings.pki.require_revocation_check,
            audit=audit,
        )

    # -- reading -------------------------------------------------------------------------------
    def entries(self) -> tuple[CrlEntry, ...]:
        return tuple(self._entries.values())

    def lookup(
        self, issuer: x509.Certificate, at: datetime, subject: x509.Certificate | None = None
    ) -> CrlStatus | None:
        """The newest CRL signed by ``issuer``'s key (and covering ``subject``, if given).

        RFC 5280 §6.3.3 (b): the CRL's issuer and scope match; (f): its signer is the issuer.
        """
        wanted = key_id(issuer)
        matching = [
            e
            for e in self._entries.values()
            if e.crl.issuer == issuer.subject
            and e.issuer_key == wanted
            and (subject is None or _covers(e.crl, subject))
        ]
        if not matching:
            return None
        newest = max(matching, key=lambda e: (e.number, e.this_update))
        return CrlStatus(newest, stale=newest.next_update < at)

    def is_listed(self, issuer_dn: str, serial: int) -> bool:
        """Whether a CRL held of the issuer named ``issuer_dn`` (as :func:`dn_string` writes
        it) lists ``serial``: an open session of that certificate must end."""
        return any(
            e.issuer == issuer_dn and e.crl.get_revoked_certificate_by_serial_number(serial)
            for e in self._entries.values()
        )

    def earliest_next_update(self) -> datetime | None:
        """When the first CRL held says a newer one will be out (RFC 5280 §5.1.2.5)."""
        return min((e.next_update for e in self._entries.values()), default=None)

    # -- refreshing ----------------------------------------------------------------------------
    def refresh(self) -> list[CrlRefresh]:
        """Fetch every source once; returns what happened to each."""
        with self._refreshing:
            now = datetime.now(UTC)
            outcomes = [self._refresh_one(source, now) for source in self.sources]
            if any(o.status is RefreshStatus.UPDATED for o in outcomes):
                self.generation += 1
        for outcome in outcomes:
            self._report(outcome)
        return outcomes

    def _refresh_one(self, source: str, now: datetime) -> CrlRefresh:
        held = self._entries.get(source)
        try:
            entry = self._validate(source, self._fetch(source), now)
            if held is not None:
                _check_not_older(entry, held)
        except CrlError as exc:
            return self._keep(source, held, str(exc))
        if held is not None and held.der == entry.der:
            self._entries = {**self._entries, source: entry}
            return _outcome(source, RefreshStatus.UNCHANGED, entry)
        self._store(entry)
        self._entries = {**self._entries, source: entry}
        return _outcome(source, RefreshStatus.UPDATED, entry)

    def _keep(self, source: str, held: CrlEntry | None, error: str) -> CrlRefresh:
        if held is None:
            return CrlRefresh(source, RefreshStatus.FAILED, error)
        self._entries = {**self._entries, source: replace(held, last_error=error)}
        return _outcome(source, RefreshStatus.KEPT_LAST_VALID, held, error)

    def _report(self, outcome: CrlRefresh) -> None:
        failed = outcome.status in (RefreshStatus.KEPT_LAST_VALID, RefreshStatus.FAILED)
        if failed:
            self._log.warning(
                "crl.refresh_failed", source=_shown(outcome.source),
                status=outcome.status.value, error=outcome.detail,
            )  # fmt: skip
        if self._audit is not None:
            event = AuditEvent.CRL_REFRESH_FAILED if failed else AuditEvent.CRL_REFRESHED
            context = {**outcome.as_dict(), "source": _shown(outcome.source)}
            self._audit.record(AuditRecord(event, SYSTEM_ACTOR, _shown(outcome.source), context))

    # -- fetching ------------------------------------------------------------------------------
    def _fetch(self, source: str) -> bytes:
        parsed = urlparse(source)
        if parsed.scheme in ("http", "https"):
            return self._fetch_http(source)
        path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(source)
        try:
            with path.open("rb") as fh:
                data = fh.read(self._max_bytes + 1)
        except OSError as exc:
            raise CrlError(f"cannot read: {exc.strerror or exc}") from None
        return self._bounded(data)

    def _fetch_http(self, url: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            with httpx.stream("GET", url, timeout=self._timeout, follow_redirects=True) as reply:
                if reply.status_code != 200:
                    raise CrlError(f"HTTP status {reply.status_code}")
                for chunk in reply.iter_bytes():
                    size += len(chunk)
                    if size > self._max_bytes:
                        raise CrlError(f"larger than {self._max_bytes} bytes")
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise CrlError(f"cannot fetch: {type(exc).__name__}") from None
        return b"".join(chunks)

    def _bounded(self, data: bytes) -> bytes:
        if len(data) > self._max_bytes:
            raise CrlError(f"larger than {self._max_bytes} bytes")
        return data

    # -- validating: RFC 5280 §6.3.3 -------------------------------------------------------------
    def _validate(self, source: str, data: bytes, now: datetime) -> CrlEntry:
        try:
            crl = load_crl(data)
        except CertificateError:
            raise CrlError("not a valid PEM or DER CRL") from None
        _check_extensions(crl)
        issuer = self._issuer_of(crl)
        this_update = crl.last_update_utc
        next_update = crl.next_update_utc
        if next_update is None:  # RFC 5280 §5.1.2.5: conforming CRLs carry nextUpdate
            raise CrlError("the CRL has no nextUpdate")
        if this_update > now + _CLOCK_SKEW:
            raise CrlError(f"the CRL's thisUpdate {this_update:%Y-%m-%d %H:%M}Z is in the future")
        return CrlEntry(
            source=source,
            crl=crl,
            der=crl.public_bytes(Encoding.DER),
            issuer_key=key_id(issuer),
            number=_crl_number(crl),
            this_update=this_update,
            next_update=next_update,
        )

    def _issuer_of(self, crl: x509.CertificateRevocationList) -> x509.Certificate:
        """The trusted CA whose key signed ``crl`` (RFC 5280 §6.3.3 (f), (g))."""
        candidates = self.trust.named(crl.issuer)
        if not candidates:
            raise CrlError(f"issuer '{dn_string(crl.issuer)}' is not a CA of the trust store")
        for candidate in candidates:
            if crl.is_signature_valid(candidate.public_key()):  # type: ignore[arg-type]
                if not _may_sign_crls(candidate):
                    raise CrlError("the issuer's key usage does not include cRLSign")
                return candidate
        raise CrlError(f"signature does not verify with the key of '{dn_string(crl.issuer)}'")

    # -- the cache on disk ---------------------------------------------------------------------
    def _cache_file(self, source: str) -> Path:
        return self.cache_dir / (hashlib.sha256(source.encode("utf-8")).hexdigest()[:32] + ".crl")

    def _store(self, entry: CrlEntry) -> None:
        path = self._cache_file(entry.source)
        _write_atomic(path, entry.der)
        meta = {"source": entry.source, "stored_at": datetime.now(UTC).isoformat()}
        _write_atomic(path.with_suffix(".json"), json.dumps(meta).encode("utf-8"))

    def _load_cached(self) -> dict[str, CrlEntry]:
        """The CRLs kept by earlier runs, re-validated (a damaged file is ignored)."""
        entries: dict[str, CrlEntry] = {}
        now = datetime.now(UTC)
        for source in self.sources:
            path = self._cache_file(source)
            if not path.is_file():
                continue
            try:
                entries[source] = self._validate(source, path.read_bytes(), now)
            except (CrlError, OSError) as exc:
                self._log.warning("crl.cache_ignored", source=_shown(source), error=str(exc))
        return entries


def _shown(source: str) -> str:
    """A source as logged: the user and password of a URL, if any, are left out."""
    parsed = urlparse(source)
    if parsed.password is None and parsed.username is None:
        return source
    host = parsed.hostname or ""
    netloc = f"{host}:{parsed.port}" if parsed.port else host
    return parsed._replace(netloc=netloc).geturl()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _outcome(source: str, status: RefreshStatus, entry: CrlEntry, detail: str = "") -> CrlRefresh:
    return CrlRefresh(source, status, detail, entry.issuer, entry.number, entry.next_update)


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


def _check_extensions(crl: x509.CertificateRevocationList) -> None:
    """RFC 5280 §5.2: refuse a CRL with a critical extension not understood here.

    Delta CRLs and indirect or partitioned CRLs are not supported (§5.2.4, §5.2.5).
    """
    try:
        extensions = list(crl.extensions)
    except ValueError:
        raise CrlError("the CRL's extensions are malformed") from None
    for extension in extensions:
        if extension.critical and not isinstance(extension.value, _UNDERSTOOD):
            raise CrlError(f"unsupported critical CRL extension {extension.oid.dotted_string}")
        value = extension.value
        if isinstance(value, x509.IssuingDistributionPoint) and (
            value.indirect_crl or value.only_some_reasons or value.only_contains_attribute_certs
        ):
            raise CrlError("indirect, partitioned or attribute CRLs are not supported")


def _covers(crl: x509.CertificateRevocationList, subject: x509.Certificate) -> bool:
    """RFC 5280 §5.2.5: a CRL limited to user (or CA) certificates covers only those."""
    try:
        scope = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return True
    is_ca = _is_ca(subject)
    return not (scope.only_contains_user_certs and is_ca) and not (
        scope.only_contains_ca_certs and not is_ca
    )


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _check_not_older(candidate: CrlEntry, held: CrlEntry) -> None:
    """Never replace a CRL by an older one (a replayed CRL could hide a revocation)."""
    if (candidate.number, candidate.this_update) < (held.number, held.this_update):
        raise CrlError(
            f"the CRL served (number {candidate.number}) is older than the one held "
            f"(number {held.number})"
        )


def _may_sign_crls(certificate: x509.Certificate) -> bool:
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return bool(usage.crl_sign)
