"""Errors of the PKI package (identifier and DN errors live beside their parsers)."""

from __future__ import annotations

from mssante.errors import MssanteError


class CertificateError(MssanteError):
    """A certificate (or a CRL) could not be read: not PEM, not DER, or truncated."""


class PkiError(MssanteError):
    """The test PKI's folder is missing, incomplete, or an operation on it is not possible."""
