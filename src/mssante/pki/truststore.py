"""The certificates a node trusts: anchors (roots) and known intermediate CAs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import verification

from mssante.config import PkiSettings
from mssante.pki.errors import PkiError
from mssante.pki.loading import load_certificates


def key_id(certificate: x509.Certificate) -> bytes:
    """SHA-256 of the certificate's SubjectPublicKeyInfo: identifies its key."""
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return digest.finalize()


@dataclass(frozen=True)
class TrustStore:
    """Trust anchors and intermediates. Anchors are trusted as they are (RFC 5280 §6.1.1 (d))."""

    anchors: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...] = ()
    _anchor_ders: frozenset[bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.anchors:
            raise PkiError("no trust anchor: configure at least one root certificate")
        ders = frozenset(c.public_bytes(serialization.Encoding.DER) for c in self.anchors)
        object.__setattr__(self, "_anchor_ders", ders)

    @classmethod
    def from_certificates(
        cls, anchors: Iterable[x509.Certificate], intermediates: Iterable[x509.Certificate] = ()
    ) -> TrustStore:
        return cls(tuple(anchors), tuple(intermediates))

    @classmethod
    def from_pem_files(
        cls, anchors: Sequence[Path], intermediates: Sequence[Path] = ()
    ) -> TrustStore:
        """Each file may hold several PEM certificates (a bundle)."""
        return cls(
            tuple(c for path in anchors for c in load_certificates(Path(path))),
            tuple(c for path in intermediates for c in load_certificates(Path(path))),
        )

    @classmethod
    def from_settings(cls, settings: PkiSettings) -> TrustStore:
        if not settings.trust_anchors:
            raise PkiError("no trust anchor configured (pki.trust_anchors)")
        return cls.from_pem_files(settings.trust_anchors, settings.intermediates)

    def is_anchor(self, certificate: x509.Certificate) -> bool:
        return certificate.public_bytes(serialization.Encoding.DER) in self._anchor_ders

    def named(self, name: x509.Name) -> list[x509.Certificate]:
        """Anchors then intermediates whose subject is ``name``."""
        return [c for c in (*self.anchors, *self.intermediates) if c.subject == name]

    def library_store(self) -> verification.Store:
        return verification.Store(list(self.anchors))
