"""Keeping the operator's whitelist current.

Flow (docs/trust.md): fetch the list and its detached signature from the authority over HTTPS
(server certificate checked against the PKI's trust anchors), verify the signature and the
signer's chain with the project's one verification function (purpose SIGNER, revocation
included), then let the keeper store it as the new last good list. Any failure keeps the
previous list in force and is recorded in the audit log. Runs at start, then every
``whitelist.refresh_seconds``.

The CRLs have their own clock (docs/revocation.md): every ``pki.crl_refresh_seconds`` (an hour
by default) and at the earliest ``nextUpdate`` of those held, whether or not a whitelist is
configured, so that a revoked peer or card is refused within that delay, not at the next
whitelist refresh (a day).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from mssante.audit.events import AuditSink
from mssante.config import Settings
from mssante.errors import ConfigError
from mssante.logging import get_logger
from mssante.pki.crl import CrlCache
from mssante.pki.truststore import TrustStore
from mssante.pki.verify import Purpose, VerificationResult, verify_certificate
from mssante.trust.keeper import RefreshOutcome, WhitelistKeeper, fetch_https, whitelist_verifier

SignerCheck = Callable[[x509.Certificate, Sequence[x509.Certificate]], VerificationResult]


def signer_check(trust: TrustStore, crls: CrlCache | None) -> SignerCheck:
    """The whitelist signer must chain to our anchors, be valid and unrevoked, and be allowed
    to sign (purpose SIGNER)."""

    def check(cert: x509.Certificate, chain: Sequence[x509.Certificate]) -> VerificationResult:
        return verify_certificate(
            cert, purpose=Purpose.SIGNER, trust=trust, crls=crls, presented_chain=chain
        )

    return check


class WhitelistSync:
    def __init__(self, settings: Settings, audit: AuditSink) -> None:
        if not settings.pki.trust_anchors:
            raise ConfigError("pki.trust_anchors must name the PKI root(s) to verify the whitelist")
        self.settings = settings
        self.trust = TrustStore.from_settings(settings.pki)
        self.crls = CrlCache.from_settings(settings, self.trust, audit=audit)
        verify = whitelist_verifier(
            signer_check(self.trust, self.crls),
            settings.whitelist.max_bytes,
            signer_dn=settings.whitelist.signer_dn,
        )
        self.keeper = WhitelistKeeper(settings.whitelist_cache_dir(), verify=verify, audit=audit)
        self.log = get_logger("mssante.whitelist")

    def ca_bundle(self) -> Path:
        """The anchors as one PEM file, for the HTTPS client."""
        bundle = self.settings.whitelist_cache_dir() / "https-anchors.pem"
        bundle.parent.mkdir(parents=True, exist_ok=True)
        bundle.write_bytes(b"".join(p.read_bytes() for p in self.settings.pki.trust_anchors))
        return bundle

    async def refresh_once(self) -> RefreshOutcome:
        if not self.settings.whitelist.url:
            raise ConfigError("whitelist.url is not set")
        url, ca_file, limit = (
            self.settings.whitelist.url,
            self.ca_bundle(),
            self.settings.whitelist.max_bytes,
        )
        await self.refresh_crls()
        outcome = await self.keeper.refresh_async(
            lambda: fetch_https(url, ca_file=ca_file, max_bytes=limit), source=url
        )
        self.log.info("whitelist refresh", status=outcome.status.value, reason=outcome.reason)
        return outcome

    async def refresh_crls(self) -> None:
        """Fetch the CRLs now (blocking I/O: in a worker thread)."""
        await asyncio.to_thread(self.crls.refresh)

    async def refresh_now(self) -> None:
        """CRLs, then the whitelist if one is configured: what ``mssante operator
        refresh-whitelist`` asks of running servers (through the revocation watcher)."""
        await self.refresh_crls()
        if self.settings.whitelist.url:
            await self.refresh_once()

    async def run(self, stop: asyncio.Event) -> None:
        """The whitelist and the CRLs, each on its own schedule, until ``stop`` is set."""
        await asyncio.gather(self._run_whitelist(stop), self.run_crls(stop))

    async def run_crls(self, stop: asyncio.Event) -> None:
        """Every ``pki.crl_refresh_seconds`` and at the earliest nextUpdate held; at start too
        unless the whitelist's own first refresh fetches them."""
        if self.settings.whitelist.url and await _stopped(stop, self._crl_delay()):
            return
        while not stop.is_set():
            try:
                await self.refresh_crls()
            except Exception as exc:
                self.log.warning("crl refresh failed; keeping the last valid CRLs", error=str(exc))
            if await _stopped(stop, self._crl_delay()):
                return

    def _crl_delay(self) -> float:
        period = self.settings.pki.crl_refresh_seconds
        due = self.crls.earliest_next_update()
        if due is None:
            return period
        until = (due - datetime.now(UTC)).total_seconds()
        return max(min(period, 60.0), min(period, until))  # a past nextUpdate: no busy loop

    async def _run_whitelist(self, stop: asyncio.Event) -> None:
        """Refresh now, then on schedule, until ``stop`` is set. Never raises on a bad fetch."""
        while not stop.is_set():
            try:
                await self.refresh_once()
            except Exception as exc:
                self.log.warning(
                    "whitelist refresh failed; keeping the last good list", error=str(exc)
                )
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.settings.whitelist.refresh_seconds)
            except TimeoutError:
                continue


async def _stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds``; True if ``stop`` was set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True
