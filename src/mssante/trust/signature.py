"""The whitelist's signature: a detached CMS SignedData (RFC 5652) over the file's exact bytes.

The authority signs each published list ("sign and publish", BRIEF §3) and publishes the DER
signature next to it as ``<file>.p7s``. The XML is left byte for byte in the real format, and
anyone can check the pair independently::

    openssl cms -verify -binary -inform DER -content listeblanche.xml \\
        -in listeblanche.xml.p7s -CAfile roots.pem -purpose any

Signing uses cryptography's PKCS#7 builder. cryptography has no API to *verify* PKCS#7/CMS, so
:func:`verify_detached` is written by hand on top of asn1crypto's parser and cryptography's
primitives, implementing the few steps of RFC 5652 §5.4 and §5.6 a detached signature needs and
refusing everything else. Whether the signer certificate is trusted (chain, validity,
revocation) is not decided here: the caller's ``verify_signer`` decides (mssante.pki.verify).
See docs/decisions/0001-whitelist-signature.md.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from asn1crypto import cms
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from mssante.errors import MssanteError

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

# Digest algorithms accepted in a SignerInfo. Anything else (MD5, SHA-1, …) is refused.
_DIGESTS: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_SET_OF_TAG = 0x31  # universal, constructed, SET (X.690 §8.12)
_IMPLICIT_0_TAG = 0xA0  # context-specific, constructed, [0]: how signedAttrs is tagged
# What asn1crypto raises on a structure it cannot decode, or with fields it cannot find.
_DECODING_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError)


class SignatureError(MssanteError):
    """A signature was refused: malformed, not matching the data, or its signer not trusted."""


class SignerCheck(Protocol):
    """The verdict on a signer certificate, e.g. mssante.pki.verify's result."""

    @property
    def ok(self) -> bool: ...

    @property
    def reason(self) -> str: ...


SignerVerifier = Callable[[x509.Certificate, Sequence[x509.Certificate]], SignerCheck]
"""Given the signer certificate and the other certificates in the signature, says whether the
signer chains to a trust anchor (and is valid, unrevoked, allowed to sign)."""


# -- signing ---------------------------------------------------------------------------------------


def sign_detached(
    data: bytes,
    certificate: x509.Certificate,
    private_key: SigningKey,
    chain: Sequence[x509.Certificate] = (),
) -> bytes:
    """A DER detached CMS SignedData over ``data`` (SHA-256, binary, signed attributes), with
    the signer certificate and ``chain`` embedded."""
    if certificate.public_key() != private_key.public_key():
        raise SignatureError("the signing key does not match the signing certificate")
    builder = pkcs7.PKCS7SignatureBuilder().set_data(data)
    builder = builder.add_signer(certificate, private_key, hashes.SHA256())
    for extra in chain:
        builder = builder.add_certificate(extra)
    options = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
    return builder.sign(serialization.Encoding.DER, options)


# -- verifying (by hand: cryptography has no PKCS#7/CMS verification API) -------------------------


@dataclass(frozen=True)
class _Signed:
    """The parts of a SignedData that verification uses."""

    signer_info: Any  # asn1crypto.cms.SignerInfo
    content_type: str
    certificates: list[tuple[Any, x509.Certificate]]  # (asn1crypto form, cryptography form)


def verify_detached(
    data: bytes, signature: bytes, *, verify_signer: SignerVerifier
) -> x509.Certificate:
    """Check that ``signature`` (DER CMS SignedData) signs exactly ``data`` and that its signer
    is trusted. Returns the signer certificate; raises :class:`SignatureError` otherwise."""
    try:
        signed = _load(signature)
        signer = _check_signer_info(signed, data)
    except _DECODING_ERRORS:
        raise SignatureError("malformed signature: not a valid CMS SignedData structure") from None
    others = [cert for _, cert in signed.certificates if cert != signer]
    verdict = verify_signer(signer, others)
    if not verdict.ok:
        raise SignatureError(f"signer not trusted: {verdict.reason}")
    return signer


def _load(signature: bytes) -> _Signed:
    if signature.lstrip().startswith(b"-----BEGIN"):
        raise SignatureError("malformed signature: expected DER, found PEM")
    info = cms.ContentInfo.load(signature, strict=True)
    if info["content_type"].native != "signed_data":
        raise SignatureError("malformed signature: not a CMS SignedData")
    signed_data = info["content"]
    encap = signed_data["encap_content_info"]
    if encap["content"].native is not None:
        raise SignatureError("malformed signature: not detached (it embeds content)")
    infos = signed_data["signer_infos"]
    if len(infos) != 1:
        raise SignatureError(f"malformed signature: {len(infos)} signers, exactly one expected")
    return _Signed(infos[0], encap["content_type"].native, _certificates(signed_data))


def _certificates(signed_data: Any) -> list[tuple[Any, x509.Certificate]]:
    found = []
    for choice in signed_data["certificates"] or []:
        if choice.name == "certificate":
            cert = choice.chosen
            found.append((cert, x509.load_der_x509_certificate(cert.dump())))
    return found


def _check_signer_info(signed: _Signed, data: bytes) -> x509.Certificate:
    """RFC 5652 §5.4 and §5.6 for one SignerInfo over detached ``data``."""
    signer_info = signed.signer_info
    signer = _find_signer(signer_info["sid"], signed.certificates)
    digest = signer_info["digest_algorithm"]["algorithm"].native
    if digest not in _DIGESTS:
        raise SignatureError(f"unsupported digest algorithm in signature: {digest}")
    attributes = _signed_attributes(signer_info)
    _check_content_type(attributes, signed.content_type)
    _check_message_digest(attributes, data, digest)
    _check_signature_value(signer_info, signer, digest)
    return signer


def _find_signer(sid: Any, certificates: list[tuple[Any, x509.Certificate]]) -> x509.Certificate:
    """The embedded certificate the SignerIdentifier names (RFC 5652 §5.3)."""
    for asn1_cert, cert in certificates:
        if sid.name == "issuer_and_serial_number":
            wanted = sid.chosen
            if (
                asn1_cert.serial_number == wanted["serial_number"].native
                and asn1_cert.issuer == wanted["issuer"]
            ):
                return cert
        elif asn1_cert.key_identifier is not None and asn1_cert.key_identifier == sid.native:
            return cert
    raise SignatureError("malformed signature: the signer certificate is not included")


def _signed_attributes(signer_info: Any) -> dict[str, list[Any]]:
    attributes = signer_info["signed_attrs"]
    if not attributes or attributes.native is None:
        raise SignatureError("malformed signature: it has no signed attributes")
    found: dict[str, list[Any]] = {}
    for attribute in attributes:
        found.setdefault(attribute["type"].native, []).append(attribute["values"])
    return found


def _single_value(attributes: dict[str, list[Any]], name: str) -> Any:
    """RFC 5652 §11.1/§11.2: present once, with exactly one value."""
    instances = attributes.get(name, [])
    if len(instances) != 1 or len(instances[0]) != 1:
        raise SignatureError(f"malformed signature: the {name} attribute must appear once")
    return instances[0][0]


def _check_content_type(attributes: dict[str, list[Any]], content_type: str) -> None:
    if content_type != "data":
        raise SignatureError(f"malformed signature: signed content type is {content_type}")
    if _single_value(attributes, "content_type").native != content_type:
        raise SignatureError("malformed signature: the content-type attribute does not match")


def _check_message_digest(attributes: dict[str, list[Any]], data: bytes, digest: str) -> None:
    expected = _single_value(attributes, "message_digest").native
    actual = hashlib.new(digest, data).digest()
    if not isinstance(expected, bytes) or not hmac.compare_digest(expected, actual):
        raise SignatureError("signature does not match the whitelist content")


def _check_signature_value(signer_info: Any, signer: x509.Certificate, digest: str) -> None:
    """Verify the signature over the DER of signedAttrs, re-tagged as a SET OF (§5.4)."""
    encoded = signer_info["signed_attrs"].dump()
    if encoded[0] != _IMPLICIT_0_TAG:
        raise SignatureError("malformed signature: signed attributes are badly tagged")
    message = bytes([_SET_OF_TAG]) + encoded[1:]
    algorithm = signer_info["signature_algorithm"]
    _check_hash_agrees(algorithm, digest)
    hash_algorithm = _DIGESTS[digest]()
    key = signer.public_key()
    kind = algorithm.signature_algo
    value = signer_info["signature"].native
    try:
        if kind == "rsassa_pkcs1v15" and isinstance(key, rsa.RSAPublicKey):
            key.verify(value, message, padding.PKCS1v15(), hash_algorithm)
        elif kind == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(value, message, ec.ECDSA(hash_algorithm))
        else:
            name = algorithm["algorithm"].native
            raise SignatureError(f"unsupported signature algorithm: {name}")
    except (InvalidSignature, UnsupportedAlgorithm):
        raise SignatureError(
            "signature is not valid: the signer's key did not sign these attributes"
        ) from None


def _check_hash_agrees(algorithm: Any, digest: str) -> None:
    """A combined OID (sha256WithRSAEncryption, ecdsa-with-SHA256) must name the same hash as
    the SignerInfo's digestAlgorithm; a bare one (rsaEncryption) takes it from there."""
    try:
        named = algorithm.hash_algo
    except ValueError:
        return
    if named != digest:
        raise SignatureError(
            f"malformed signature: signature algorithm uses {named}, digest algorithm {digest}"
        )
