"""The provider's signing key: RSA, RS256 (RFC 7518 §3.3), published as a JWKS (RFC 7517 §5).

Kept as a PEM file (mode 0600) that is created on first start. Its ``kid`` is the key's RFC 7638
thumbprint, so that the same key always has the same id and a new key a new one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import KeySet, RSAKey

from mssante.errors import ConfigError

ALGORITHM = "RS256"
KEY_BITS = 3072


def load_or_create_key(path: Path) -> RSAKey:
    """The signing key in ``path``; a new one is written there if the file does not exist."""
    if not path.exists():
        _write_new_key(path)
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"the OIDC signing key {path} is not a PEM private key") from exc
    if not isinstance(private, rsa.RSAPrivateKey):
        raise ConfigError(f"the OIDC signing key {path} is not an RSA key")
    return _with_kid(RSAKey.import_key(private))


def key_set(key: RSAKey) -> KeySet:
    """A set of one key: joserfc then writes its ``kid`` into every header it signs."""
    return KeySet([key])


def public_jwks(key: RSAKey) -> dict[str, Any]:
    """The JWKS document (RFC 7517 §5): public parts only."""
    return {"keys": [key.as_dict(private=False)]}


def _with_kid(key: RSAKey) -> RSAKey:
    parameters = {"kid": key.thumbprint(), "use": "sig", "alg": ALGORITHM}
    return RSAKey.import_key(key.as_dict(private=True), parameters)  # type: ignore[arg-type]


def _write_new_key(path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
