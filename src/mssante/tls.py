"""TLS contexts of the listeners: SMTP, IMAP, HTTPS (TLS 1.2 minimum, as MSSanté requires).

Inbound from operators: a client certificate is asked for (``CERT_OPTIONAL``, so that a missing
one earns an SMTP reply rather than a dropped connection) and its chain is checked by OpenSSL
against the PKI's anchors and intermediates during the handshake. OpenSSL is told not to check
dates (``X509_V_FLAG_NO_CHECK_TIME``): an expired certificate then reaches the project's own
verification (``pki.verify``), which refuses it with its own reply and audit event.
Revocation, key usage and the whitelist DN are checked there too, after the handshake.
See docs/decisions/0003-inbound-tls-refusals.md.

Submission, for mail clients: a client certificate is asked for too, but optional, so that a
client without one connects as before (and logs in with a password or a token); one that
presents a CPS-like or organisation certificate may log in with it (SASL EXTERNAL,
docs/auth.md). Dates are again left to ``pki.verify`` (an expired card gets a 535 and an audit
entry, not a dropped connection); a certificate of a CA outside the PKI fails the handshake.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509

from mssante.auth.certificates import presented_chain
from mssante.config import Settings
from mssante.errors import ConfigError

# OpenSSL's X509_V_FLAG_NO_CHECK_TIME; Python's ssl.VerifyFlags does not name it.
X509_V_FLAG_NO_CHECK_TIME = 0x200000


def _base_server_context(settings: Settings) -> ssl.SSLContext:
    if not settings.tls.certificate or not settings.tls.key:
        raise ConfigError("tls.certificate and tls.key must be set for the SMTP listeners")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(settings.tls.certificate, settings.tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("cannot load the TLS certificate or key", detail=str(exc)) from None
    return ctx


def _ask_client_certificate(ctx: ssl.SSLContext, settings: Settings) -> None:
    """Ask for a client certificate (optional), chained by OpenSSL to the PKI's anchors."""
    ctx.verify_mode = ssl.CERT_OPTIONAL
    for path in [*settings.pki.trust_anchors, *settings.pki.intermediates]:
        try:
            ctx.load_verify_locations(cafile=str(path))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the PKI certificates {path}", detail=str(exc)) from None
    ctx.verify_flags = ssl.VerifyFlags(int(ctx.verify_flags) | X509_V_FLAG_NO_CHECK_TIME)


def inbound_context(settings: Settings) -> ssl.SSLContext:
    """For SMTP between operators: mutual TLS."""
    ctx = _base_server_context(settings)
    _ask_client_certificate(ctx, settings)
    return ctx


def submission_context(settings: Settings, *, client_certificates: bool = True) -> ssl.SSLContext:
    """For mail clients (587 STARTTLS and 465). With ``client_certificates`` and trust anchors
    configured, a client certificate is asked for, optionally (SASL EXTERNAL)."""
    ctx = _base_server_context(settings)
    if client_certificates and settings.pki.trust_anchors:
        _ask_client_certificate(ctx, settings)
    return ctx


def peer_certificate(ssl_info: dict[str, object] | None) -> x509.Certificate | None:
    """The client's certificate from aiosmtpd's ``session.ssl`` (after STARTTLS or on 465)."""
    if not ssl_info:
        return None
    ssl_object = ssl_info.get("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der) if der else None


def peer_chain(ssl_info: dict[str, object] | None) -> list[x509.Certificate]:
    """What the client presented, leaf first (the leaf alone before Python 3.13)."""
    if not ssl_info:
        return []
    ssl_object = ssl_info.get("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return []
    return presented_chain(ssl_object)


def tls_description(ssl_info: dict[str, object] | None) -> tuple[str, str]:
    """(protocol version, cipher name) of the session, for trace headers."""
    if not ssl_info:
        return "", ""
    ssl_object = ssl_info.get("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return "", ""
    cipher = ssl_object.cipher()
    return ssl_object.version() or "", cipher[0] if cipher else ""


def combined_pem(paths: list[Path]) -> bytes:
    return b"".join(p.read_bytes() for p in paths)
