"""Signing and publishing the whitelist.

A publication is a release folder holding the list, its detached CMS signature (``.p7s``, see
docs/decisions/0001-whitelist-signature.md) and its SHA-256 checksum (as ``sha256sum`` prints
it, like the agency's public copy). The ``current`` link is switched atomically to the new
release, so the HTTPS server never serves a half-written list. A few old releases are kept.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from mssante.config import AuthoritySettings
from mssante.errors import ConfigError
from mssante.trust.model import Whitelist
from mssante.trust.signature import sign_detached
from mssante.trust.xmlformat import write as write_whitelist

LIST_NAME = "listeblanchemssante.xml"  # the real file name published by the agency
SIGNATURE_NAME = LIST_NAME + ".p7s"
CHECKSUM_NAME = LIST_NAME + ".sha256"
KEEP_RELEASES = 5


@dataclass(frozen=True)
class Signer:
    certificate: x509.Certificate
    key: PrivateKeyTypes
    chain: Sequence[x509.Certificate]

    @classmethod
    def from_settings(cls, settings: AuthoritySettings) -> Signer:
        if not settings.signing_certificate or not settings.signing_key:
            raise ConfigError("authority.signing_certificate and authority.signing_key must be set")
        try:
            cert = x509.load_pem_x509_certificate(settings.signing_certificate.read_bytes())
            key = load_pem_private_key(settings.signing_key.read_bytes(), password=None)
            chain = (
                x509.load_pem_x509_certificates(settings.signing_chain.read_bytes())
                if settings.signing_chain
                else []
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(
                "cannot load the whitelist signing certificate or key", detail=str(exc)
            ) from None
        return cls(cert, key, chain)


@dataclass(frozen=True)
class Release:
    folder: Path
    list_path: Path
    signature_path: Path
    checksum_path: Path
    sha256: str
    domains: int


def publish(whitelist: Whitelist, signer: Signer, out_dir: Path) -> Release:
    """Write, sign and switch to a new release; return where it is."""
    data = write_whitelist(whitelist)
    signature = sign_detached(data, signer.certificate, signer.key, signer.chain)  # type: ignore[arg-type]
    digest = hashlib.sha256(data).hexdigest()
    folder = _new_release_folder(out_dir, digest)
    files = {
        LIST_NAME: data,
        SIGNATURE_NAME: signature,
        CHECKSUM_NAME: f"{digest}  {LIST_NAME}\n".encode(),
    }
    for name, content in files.items():
        _write_durably(folder / name, content)
    _switch_current(out_dir, folder)
    _prune(out_dir)
    return Release(
        folder=folder,
        list_path=folder / LIST_NAME,
        signature_path=folder / SIGNATURE_NAME,
        checksum_path=folder / CHECKSUM_NAME,
        sha256=digest,
        domains=len(whitelist.domains),
    )


def current_release(out_dir: Path) -> Path | None:
    link = out_dir / "current"
    return link.resolve() if link.exists() else None


def _new_release_folder(out_dir: Path, digest: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    folder = out_dir / "releases" / f"{stamp}-{digest[:12]}"
    folder.mkdir(parents=True)
    return folder


def _write_durably(path: Path, content: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())


def _switch_current(out_dir: Path, folder: Path) -> None:
    tmp = out_dir / f".current-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(folder.relative_to(out_dir))
    os.replace(tmp, out_dir / "current")  # rename(2) is atomic: readers see old or new
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune(out_dir: Path) -> None:
    releases = sorted((out_dir / "releases").iterdir())
    current = current_release(out_dir)
    for old in releases[:-KEEP_RELEASES]:
        if old.resolve() != current:
            shutil.rmtree(old, ignore_errors=True)
