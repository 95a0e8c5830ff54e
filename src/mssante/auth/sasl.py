"""SASL messages that carry an OAuth 2.0 bearer token: XOAUTH2 and OAUTHBEARER (RFC 7628).

Pure functions: bytes in, :class:`BearerCredentials` or bytes out, no I/O. The protocol servers
(submission, IMAP) decode base64 themselves and hand the raw client response here.

XOAUTH2 (Google's mechanism, which the MSSanté client référentiel of 2023 names)::

    "user=" login ^A "auth=Bearer " token ^A ^A

OAUTHBEARER (RFC 7628 §3.1)::

    gs2-header ^A *(key "=" value ^A) ^A        e.g.  "n,a=login,^Ahost=…^Aauth=Bearer t^A^A"

On a refused token both answer with the same JSON error challenge (RFC 7628 §3.2.2), after which
the client sends a dummy response (``^A`` for OAUTHBEARER, RFC 7628 §3.2.3; an empty one for
XOAUTH2) and the server ends the exchange with a failure.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

KVSEP = "\x01"  # RFC 7628 §3.1: kvsep = %x01
DUMMY_RESPONSE = b"\x01"  # RFC 7628 §3.2.3: what a client sends after an error challenge
DEFAULT_SCOPE = "openid scope_all"  # what Pro Santé Connect grants mail clients (BRIEF §5)
MAX_MESSAGE_BYTES = 16384  # a JWT is about 1 KB; anything far larger is not a token

# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# RFC 7628 §3.1: key = 1*(ALPHA); value = *(VCHAR / SP / HTAB / CR / LF), and UTF-8 letters
# beyond ASCII (an internationalised login, RFC 6531)
_KEY = re.compile(r"[A-Za-z]+")
_VALUE = re.compile(r"[\x21-\x7e \t\r\n\u0080-\U0010ffff]*")
# RFC 5801 §4: saslname = 1*(UTF8-char-safe / "=2C" / "=3D"); a bare "=" or "," is not allowed
_SASLNAME = re.compile(r"(?:[^=,]|=2C|=3D)+")


class SaslError(ValueError):
    """The client response is not a well-formed message of the mechanism."""


@dataclass(frozen=True)
class BearerCredentials:
    """What a client sent: the token, and the login it asks to act as (if it said one)."""

    token: str
    login: str | None = None
    host: str | None = None  # OAUTHBEARER only (RFC 7628 §3.1), informational
    port: int | None = None

    def __repr__(self) -> str:  # never print the token (logs, tracebacks)
        return f"BearerCredentials(login={self.login!r}, token=<{len(self.token)} chars>)"


def parse_xoauth2(message: bytes) -> BearerCredentials:
    """Read an XOAUTH2 initial response: ``user=…^Aauth=Bearer …^A^A``."""
    text = _text(message)
    if not text.endswith(KVSEP * 2):
        raise SaslError("XOAUTH2: the message must end with two ^A")
    pairs = _pairs(text[:-2].split(KVSEP))
    user, auth = pairs.get("user"), pairs.get("auth")
    if user is None or auth is None or set(pairs) - {"user", "auth"}:
        raise SaslError("XOAUTH2: expected exactly 'user' and 'auth'")
    login = user.strip()
    return BearerCredentials(_bearer_token(auth), login or None)


def parse_oauthbearer(message: bytes) -> BearerCredentials:
    """Read an OAUTHBEARER client response (RFC 7628 §3.1).

    A response of just ``^A`` is the dummy a client sends after an error (RFC 7628 §3.2.3):
    it is refused here like any malformed message.
    """
    text = _text(message)
    header, sep, rest = text.partition(KVSEP)
    if not sep or (rest != KVSEP and not rest.endswith(KVSEP * 2)):
        raise SaslError("OAUTHBEARER: the message must be gs2-header ^A kvpairs ^A")
    login = _gs2_authzid(header)
    pairs = _pairs(rest[:-2].split(KVSEP)) if rest != KVSEP else {}
    if "auth" not in pairs:
        raise SaslError("OAUTHBEARER: no 'auth' key")
    return BearerCredentials(
        _bearer_token(pairs["auth"]), login, pairs.get("host"), _port(pairs.get("port"))
    )


def error_challenge(
    scope: str = DEFAULT_SCOPE,
    *,
    status: str = "invalid_token",
    openid_configuration: str | None = None,
) -> bytes:
    """The server's JSON error challenge (RFC 7628 §3.2.2), before base64.

    ``status`` is an RFC 6750 §3.1 error code; ``openid_configuration`` the discovery URL a
    client may use to find the issuer (optional).
    """
    body: dict[str, str] = {"status": status, "schemes": "bearer", "scope": scope}
    if openid_configuration:
        body["openid-configuration"] = openid_configuration
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def build_xoauth2(login: str, token: str) -> bytes:
    """A client's XOAUTH2 message (tests, and the webmail acting as a client)."""
    return f"user={login}{KVSEP}auth=Bearer {token}{KVSEP}{KVSEP}".encode()


def build_oauthbearer(
    token: str, login: str | None = None, host: str | None = None, port: int | None = None
) -> bytes:
    """A client's OAUTHBEARER message (RFC 7628 §3.1)."""
    authzid = "a=" + login.replace("=", "=3D").replace(",", "=2C") if login else ""
    pairs = ""
    if host is not None:
        pairs += f"host={host}{KVSEP}"
    if port is not None:
        pairs += f"port={port}{KVSEP}"
    return f"n,{authzid},{KVSEP}{pairs}auth=Bearer {token}{KVSEP}{KVSEP}".encode()


# -- pieces ------------------------------------------------------------------------------------


def _text(message: bytes) -> str:
    if len(message) > MAX_MESSAGE_BYTES:
        raise SaslError("message too long")
    try:
        return message.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError("message is not UTF-8") from None


def _pairs(items: list[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not _KEY.fullmatch(key) or not _VALUE.fullmatch(value):
            raise SaslError("malformed key=value pair")
        if key in pairs:
            raise SaslError(f"key '{key}' given twice")
        pairs[key] = value
    return pairs


def _bearer_token(auth: str) -> str:
    """``Bearer`` 1*SP b64token (RFC 6750 §2.1; the scheme is case-insensitive, RFC 7235)."""
    scheme, _, rest = auth.partition(" ")
    token = rest.lstrip(" ")
    if scheme.lower() != "bearer" or not _B64TOKEN.fullmatch(token):
        raise SaslError("'auth' must be 'Bearer <token>'")
    return token


def _gs2_authzid(header: str) -> str | None:
    """RFC 7628 §3.1 / RFC 5801 §4: ``gs2-cbind-flag "," [authzid] ","``.

    Channel binding is not supported by OAUTHBEARER: the flag must be ``n`` or ``y``."""
    parts = header.split(",")
    if len(parts) != 3 or parts[2] != "":
        raise SaslError("OAUTHBEARER: malformed gs2 header")
    flag, authzid = parts[0], parts[1]
    if flag not in ("n", "y"):
        raise SaslError("OAUTHBEARER: channel binding is not supported")
    if not authzid:
        return None
    if not authzid.startswith("a=") or not _SASLNAME.fullmatch(authzid[2:]):
        raise SaslError("OAUTHBEARER: malformed authzid")
    return authzid[2:].replace("=2C", ",").replace("=3D", "=")


def _port(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or len(value) > 5 or int(value) > 65535:
        raise SaslError("OAUTHBEARER: malformed port")
    return int(value)
