"""Keeping the operator's whitelist current.

Flow (docs/trust.md): fetch the list and its detached signature from the authority over HTTPS
(server certificate checked against the PKI's trust anchors), verify the signature and the
signer's chain with the project's one verification function (purpose SIGNER, revocation
included), then let the keeper store it as the new last good list. Any failure keeps the
previous list in force and is recorded in the audit log. Runs at start, then every
``whitelist.refresh_seconds``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
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
        self.crls.refresh()
        outcome = await self.keeper.refresh_async(
            lambda: fetch_https(url, ca_file=ca_file, max_bytes=limit), source=url
        )
        self.log.info("whitelist refresh", status=outcome.status.value, reason=outcome.reason)
        return outcome

    async def run(self, stop: asyncio.Event) -> None:
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
