"""The operator's current whitelist: verified, cached on disk, and kept when a refresh fails.

BRIEF §3: the authority signs the list; operators fetch it regularly (inferred: daily) and keep
the last good list when a download or a signature check fails. :class:`WhitelistKeeper` does the
keeping; the caller owns the schedule and calls :meth:`WhitelistKeeper.refresh` (or
:meth:`~WhitelistKeeper.refresh_async` with :func:`fetch_https`).

On disk, ``cache_dir`` holds ``listeblanche.xml`` and ``listeblanche.xml.p7s`` exactly as the
authority published them, plus the pair before them (``*.previous``). Each file is replaced
atomically (temporary file, fsync, rename, fsync of the folder); the previous pair is saved
before the current one is replaced, so after a crash at any point one of the two pairs is whole
and verifies. Every cached list is verified again when the keeper starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import ssl
import tempfile
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx

from mssante.audit.events import SYSTEM_ACTOR, AuditEvent, AuditRecord, AuditSink
from mssante.errors import MssanteError
from mssante.logging import get_logger
from mssante.trust.model import Whitelist, dn_key
from mssante.trust.signature import SignatureError, SignerVerifier, verify_detached
from mssante.trust.xmlformat import WhitelistFormatError, format_date, parse

XML_NAME = "listeblanche.xml"
SIGNATURE_NAME = XML_NAME + ".p7s"
PREVIOUS_SUFFIX = ".previous"
DEFAULT_TIMEOUT = 60.0  # seconds, for each network step of a download
SIGNATURE_MAX_BYTES = 1_000_000  # a CMS signature with its chain is a few kilobytes
_AUDIT_TARGET = "whitelist"

WhitelistVerify = Callable[[bytes, bytes], Whitelist]
"""Checks (xml, signature) and returns the list; raises MssanteError when either is refused."""
Fetch = Callable[[], tuple[bytes, bytes]]
AsyncFetch = Callable[[], Awaitable[tuple[bytes, bytes]]]


class WhitelistFetchError(MssanteError):
    """The whitelist or its signature could not be downloaded."""


class RefreshStatus(StrEnum):
    ACCEPTED = "accepted"  # a new list is in force
    UNCHANGED = "unchanged"  # the same list was offered again, and verified again
    REJECTED = "rejected"  # refused (format, signature, signer, older list); previous kept
    FETCH_FAILED = "fetch_failed"  # nothing could be downloaded; previous kept


@dataclass(frozen=True)
class RefreshOutcome:
    """What an accept or a refresh did, and the list in force afterwards (None: no list yet)."""

    status: RefreshStatus
    whitelist: Whitelist | None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in (RefreshStatus.ACCEPTED, RefreshStatus.UNCHANGED)


@dataclass(frozen=True)
class _Held:
    xml: bytes
    signature: bytes
    whitelist: Whitelist


class WhitelistKeeper:
    """Holds the whitelist in force for this operator. Safe to read from several threads."""

    def __init__(self, cache_dir: Path, *, verify: WhitelistVerify, audit: AuditSink) -> None:
        self._dir = cache_dir
        self._verify = verify
        self._audit = audit
        self._lock = threading.Lock()
        self._log = get_logger("mssante.trust.keeper")
        self._held = self._load_cached()

    def current(self) -> Whitelist | None:
        """The list in force, or None when no good list was ever accepted."""
        held = self._held
        return held.whitelist if held else None

    def accept(self, xml: bytes, signature: bytes, *, source: str = "") -> RefreshOutcome:
        """Verify ``xml`` and its detached ``signature``; if good, make them the list in force
        and cache them. If not, keep the list in force and say why."""
        with self._lock:
            previous = self._held
            try:
                whitelist = self._verify(xml, signature)
                _check_not_older(whitelist, previous)
            except MssanteError as exc:
                return self._rejected(exc.public, source, previous)
            held = _Held(xml, signature, whitelist)
            cache_error = self._store(held, previous)
            self._held = held
            unchanged = previous is not None and previous.xml == xml
            return self._accepted(held, source, unchanged=unchanged, cache_error=cache_error)

    def refresh(self, fetch: Fetch, *, source: str = "") -> RefreshOutcome:
        """Fetch (xml, signature) and :meth:`accept` them. Any error from ``fetch`` is a fetch
        failure: recorded, and the list in force is kept."""
        try:
            xml, signature = fetch()
        except Exception as exc:  # whatever the transport raised, the outcome is the same
            return self._fetch_failed(exc, source)
        return self.accept(xml, signature, source=source)

    async def refresh_async(self, fetch: AsyncFetch, *, source: str = "") -> RefreshOutcome:
        """:meth:`refresh` with an async ``fetch`` such as :func:`fetch_https`. Verification and
        parsing (a tenth of a second for a real list) run in a worker thread."""
        try:
            xml, signature = await fetch()
        except Exception as exc:  # see refresh
            return self._fetch_failed(exc, source)
        return await asyncio.to_thread(self.accept, xml, signature, source=source)

    # -- outcomes ---------------------------------------------------------------------------------

    def _rejected(self, reason: str, source: str, previous: _Held | None) -> RefreshOutcome:
        self._record(AuditEvent.WHITELIST_REJECTED, {"source": source, "reason": reason})
        self._log.warning("whitelist rejected", source=source, reason=reason)
        return RefreshOutcome(
            RefreshStatus.REJECTED, previous.whitelist if previous else None, reason
        )

    def _accepted(
        self, held: _Held, source: str, *, unchanged: bool, cache_error: str | None
    ) -> RefreshOutcome:
        event = AuditEvent.WHITELIST_UNCHANGED if unchanged else AuditEvent.WHITELIST_ACCEPTED
        context: dict[str, Any] = {"source": source, **_describe(held)}
        if cache_error:
            context["cache_error"] = cache_error
        self._record(event, context)
        self._log.info("whitelist " + event.value.split(".")[-1], **context)
        status = RefreshStatus.UNCHANGED if unchanged else RefreshStatus.ACCEPTED
        return RefreshOutcome(status, held.whitelist, cache_error)

    def _fetch_failed(self, exc: Exception, source: str) -> RefreshOutcome:
        reason = exc.public if isinstance(exc, MssanteError) else _one_line(exc)
        self._record(AuditEvent.WHITELIST_FETCH_FAILED, {"source": source, "reason": reason})
        self._log.warning("whitelist fetch failed", source=source, reason=reason)
        return RefreshOutcome(RefreshStatus.FETCH_FAILED, self.current(), reason)

    def _record(self, event: AuditEvent, context: Mapping[str, Any]) -> None:
        self._audit.record(AuditRecord(event, SYSTEM_ACTOR, _AUDIT_TARGET, dict(context)))

    # -- the cache --------------------------------------------------------------------------------

    def _load_cached(self) -> _Held | None:
        """The last good pair in ``cache_dir``, verified again; else the pair before it."""
        for suffix in ("", PREVIOUS_SUFFIX):
            pair = self._read_pair(suffix)
            if pair is None:
                continue
            try:
                whitelist = self._verify(*pair)
            except MssanteError as exc:
                reason = f"cached {XML_NAME}{suffix}: {exc.public}"
                self._record(AuditEvent.WHITELIST_REJECTED, {"source": "cache", "reason": reason})
                self._log.warning("cached whitelist refused", reason=reason)
                continue
            self._log.info("whitelist loaded from cache", file=XML_NAME + suffix)
            return _Held(pair[0], pair[1], whitelist)
        return None

    def _read_pair(self, suffix: str) -> tuple[bytes, bytes] | None:
        try:
            xml = (self._dir / (XML_NAME + suffix)).read_bytes()
            signature = (self._dir / (SIGNATURE_NAME + suffix)).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:  # unreadable: start without it, and say so
            reason = f"cannot read cached {XML_NAME}{suffix}: {exc.strerror or exc}"
            self._record(AuditEvent.WHITELIST_REJECTED, {"source": "cache", "reason": reason})
            return None
        return xml, signature

    def _store(self, held: _Held, previous: _Held | None) -> str | None:
        """Write ``held`` to the cache; None on success, else why it could not be cached (the
        list still comes into force: it was verified)."""
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            if previous is not None and previous.xml == held.xml:
                if previous.signature != held.signature:  # same list, signed anew
                    write_atomic(self._dir / SIGNATURE_NAME, held.signature)
                return None
            if previous is not None:  # saved first: from here on, one pair is always whole
                write_atomic(self._dir / (XML_NAME + PREVIOUS_SUFFIX), previous.xml)
                write_atomic(self._dir / (SIGNATURE_NAME + PREVIOUS_SUFFIX), previous.signature)
            write_atomic(self._dir / SIGNATURE_NAME, held.signature)
            write_atomic(self._dir / XML_NAME, held.xml)
        except OSError as exc:
            self._log.error("whitelist cache not written", error=str(exc))
            return f"accepted, but could not be cached: {exc.strerror or exc}"
        return None


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` so that a reader or a crash sees the old or the new content,
    never a mix: temporary file in the same folder, fsync, rename, fsync of the folder."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_not_older(whitelist: Whitelist, previous: _Held | None) -> None:
    """Refuse a list generated before the one in force: a replayed old list, even correctly
    signed, must not bring back a domain or a certificate that was removed since."""
    if previous is not None and whitelist.generated_at < previous.whitelist.generated_at:
        raise WhitelistFormatError(
            f"whitelist is older than the list in force (generated "
            f"{format_date(whitelist.generated_at)}, in force: "
            f"{format_date(previous.whitelist.generated_at)})"
        )


def _describe(held: _Held) -> dict[str, Any]:
    return {
        "generated_at": format_date(held.whitelist.generated_at),
        "entries": len(held.whitelist.domains),
        "domains": len(held.whitelist.names()),
        "sha256": hashlib.sha256(held.xml).hexdigest(),
    }


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


# -- verification ----------------------------------------------------------------------------------


def whitelist_verifier(
    trust_check: SignerVerifier, max_bytes: int, *, signer_dn: str = ""
) -> WhitelistVerify:
    """The ``verify`` a keeper needs: size bound, detached signature (signer checked by
    ``trust_check``, and its subject equal to ``signer_dn`` if given), then parsing. Only
    authenticated bytes reach the XML parser."""
    expected_dn = dn_key(signer_dn) if signer_dn else None

    def verify(xml: bytes, signature: bytes) -> Whitelist:
        if len(xml) > max_bytes:
            raise WhitelistFormatError(
                f"whitelist is too large: more than {max_bytes} bytes (the configured limit)"
            )
        signer = verify_detached(xml, signature, verify_signer=trust_check)
        if expected_dn is not None and dn_key(signer.subject.rfc4514_string()) != expected_dn:
            raise SignatureError(
                f"signer not trusted: {signer.subject.rfc4514_string()} is not the configured "
                "whitelist signer"
            )
        return parse(xml, max_bytes=max_bytes)

    return verify


# -- download --------------------------------------------------------------------------------------


async def fetch_https(
    url: str, *, ca_file: Path, max_bytes: int, timeout: float = DEFAULT_TIMEOUT
) -> tuple[bytes, bytes]:
    """Download the whitelist at ``url`` and its signature at ``url + ".p7s"`` over HTTPS, the
    server's certificate checked against ``ca_file``; nothing larger than ``max_bytes`` is read.
    Raises :class:`WhitelistFetchError`."""
    if not url.lower().startswith("https://"):
        raise WhitelistFetchError("the whitelist URL must be https", detail=url)
    context = _tls_context(ca_file)
    async with httpx.AsyncClient(verify=context, timeout=timeout, follow_redirects=False) as client:
        xml = await _download(client, url, max_bytes)
        signature = await _download(client, url + ".p7s", min(max_bytes, SIGNATURE_MAX_BYTES))
    return xml, signature


def _tls_context(ca_file: Path) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise WhitelistFetchError(
            "cannot read the CA file for the whitelist server", detail=f"{ca_file}: {exc}"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


async def _download(client: httpx.AsyncClient, url: str, limit: int) -> bytes:
    what = "signature" if url.endswith(".p7s") else "whitelist"
    try:
        async with client.stream("GET", url) as response:
            if response.status_code != httpx.codes.OK:
                raise WhitelistFetchError(
                    f"cannot fetch the {what}: HTTP {response.status_code}", detail=url
                )
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise _too_large(what, limit, url)
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > limit:
                    raise _too_large(what, limit, url)
    except httpx.HTTPError as exc:
        raise WhitelistFetchError(
            f"cannot fetch the {what}: {_one_line(exc)}", detail=url
        ) from None
    return bytes(body)


def _too_large(what: str, limit: int, url: str) -> WhitelistFetchError:
    return WhitelistFetchError(f"the {what} is too large: more than {limit} bytes", detail=url)
