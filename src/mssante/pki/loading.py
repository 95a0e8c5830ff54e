"""Reading certificates and CRLs from PEM or DER, with a clear error on anything else."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from mssante.pki.errors import CertificateError

_PEM_MARK = b"-----BEGIN"


def _read(source: bytes | str | Path, what: str) -> tuple[bytes, str]:
    """The bytes of ``source`` and a label for messages. ``str`` is PEM text or a file path."""
    if isinstance(source, bytes):
        return source, what
    if isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        return source.encode("ascii", errors="replace"), what
    path = Path(source)
    try:
        return path.read_bytes(), f"{what} file {path.name!r}"
    except FileNotFoundError:
        raise CertificateError(f"{what} file not found: {path}") from None
    except OSError as exc:
        raise CertificateError(f"cannot read {what} file {path}: {exc.strerror}") from None


def load_certificates(source: bytes | str | Path) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, or the one certificate of a DER file."""
    data, label = _read(source, "certificate")
    try:
        if _PEM_MARK in data:
            certificates = x509.load_pem_x509_certificates(data)
        else:
            certificates = [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise CertificateError(f"{label} is not a valid PEM or DER certificate") from None
    return certificates


def load_certificate(source: bytes | str | Path) -> x509.Certificate:
    """One certificate (the first of a PEM bundle). Raises :class:`CertificateError`."""
    return load_certificates(source)[0]


def load_crl(source: bytes | str | Path) -> x509.CertificateRevocationList:
    """A CRL in PEM or DER. Raises :class:`CertificateError`."""
    data, label = _read(source, "CRL")
    try:
        if data.lstrip().startswith(_PEM_MARK):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise CertificateError(f"{label} is not a valid PEM or DER CRL") from None
