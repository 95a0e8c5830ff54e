"""The detached CMS signature of the whitelist: signing, hand-written verification, openssl."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from trust_helpers import Check, TestPki

from mssante.trust.signature import (
    SignatureError,
    SignerVerifier,
    sign_detached,
    verify_detached,
)

DATA = (
    '<?xml version="1.0" encoding="UTF-8"?><ListeBlancheMSSante '
    'xmlns="https://listeblanche.mssante.fr/schema">\n    <Nom>hôpital</Nom>\n'
).encode()

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")


def sign(pki: TestPki, data: bytes = DATA, *, ec_key: bool = False) -> bytes:
    signer = pki.ec_signer if ec_key else pki.signer
    return sign_detached(data, signer.certificate, signer.key, [pki.intermediate.certificate])


def refused(data: bytes, signature: bytes, verify_signer: SignerVerifier) -> str:
    with pytest.raises(SignatureError) as caught:
        verify_detached(data, signature, verify_signer=verify_signer)
    message = str(caught.value)
    assert "\n" not in message
    return message


def builder_signature(pki: TestPki, options: list[pkcs7.PKCS7Options], digest: object) -> bytes:
    builder = pkcs7.PKCS7SignatureBuilder().set_data(DATA)
    builder = builder.add_signer(pki.signer.certificate, pki.signer.key, digest)  # type: ignore[arg-type]
    builder = builder.add_certificate(pki.intermediate.certificate)
    return builder.sign(serialization.Encoding.DER, options)


# -- good signatures -------------------------------------------------------------------------------


def test_good_rsa_signature_is_accepted(pki: TestPki, verify_signer: SignerVerifier) -> None:
    signer = verify_detached(DATA, sign(pki), verify_signer=verify_signer)
    assert signer == pki.signer.certificate


def test_good_ecdsa_signature_is_accepted(pki: TestPki, verify_signer: SignerVerifier) -> None:
    signer = verify_detached(DATA, sign(pki, ec_key=True), verify_signer=verify_signer)
    assert signer == pki.ec_signer.certificate


def test_verify_signer_gets_the_signer_and_the_rest_of_the_chain(pki: TestPki) -> None:
    seen: list[tuple[x509.Certificate, list[x509.Certificate]]] = []

    def spy(signer: x509.Certificate, others: Sequence[x509.Certificate]) -> Check:
        seen.append((signer, list(others)))
        return Check(True, "")

    verify_detached(DATA, sign(pki), verify_signer=spy)
    assert seen == [(pki.signer.certificate, [pki.intermediate.certificate])]


def test_empty_content_can_be_signed(pki: TestPki, verify_signer: SignerVerifier) -> None:
    verify_detached(b"", sign(pki, b""), verify_signer=verify_signer)


# -- refusals --------------------------------------------------------------------------------------


def test_data_changed_by_one_byte_is_refused(pki: TestPki, verify_signer: SignerVerifier) -> None:
    changed = DATA.replace(b"h\xc3\xb4pital", b"h\xc3\xb4pitaL")
    assert refused(changed, sign(pki), verify_signer) == (
        "signature does not match the whitelist content"
    )


def test_one_byte_appended_is_refused(pki: TestPki, verify_signer: SignerVerifier) -> None:
    assert refused(DATA + b"\n", sign(pki), verify_signer) == (
        "signature does not match the whitelist content"
    )


@pytest.mark.parametrize("ec_key", [False, True], ids=["rsa", "ecdsa"])
def test_signature_value_changed_is_refused(
    pki: TestPki, verify_signer: SignerVerifier, ec_key: bool
) -> None:
    signature = bytearray(sign(pki, ec_key=ec_key))
    signature[-3] ^= 0x01  # the signature value closes the SignerInfo, hence the structure
    message = refused(DATA, bytes(signature), verify_signer)
    assert message in (
        "signature is not valid: the signer's key did not sign these attributes",
        "malformed signature: not a valid CMS SignedData structure",  # ECDSA's DER may break
    )
    if not ec_key:
        assert message.startswith("signature is not valid")


def test_signed_attribute_changed_is_refused(pki: TestPki, verify_signer: SignerVerifier) -> None:
    signature = sign(pki)
    signing_time = signature.rindex(b"\x17\x0d")  # the last UTCTime: the signing-time attribute
    tampered = bytearray(signature)
    tampered[signing_time + 2] = ord("0") if tampered[signing_time + 2] != ord("0") else ord("1")
    assert refused(DATA, bytes(tampered), verify_signer) == (
        "signature is not valid: the signer's key did not sign these attributes"
    )


def test_signer_from_another_ca_is_refused(
    pki: TestPki, rogue_pki: TestPki, verify_signer: SignerVerifier
) -> None:
    rogue = sign(rogue_pki)
    assert refused(DATA, rogue, verify_signer) == (
        "signer not trusted: no issuer found for "
        "CN=ROGUE AC ORGANISATIONS,OU=IGC-SANTE TEST,O=TEST MSSANTE,C=FR"
    )


def test_rogue_signer_claiming_a_trusted_issuer_is_refused(
    pki: TestPki, rogue_pki: TestPki, verify_signer: SignerVerifier
) -> None:
    """The rogue signature embeds the real intermediate; the rogue certificate's issuer
    signature still does not verify."""
    forged = sign_detached(
        DATA,
        rogue_pki.signer.certificate,
        rogue_pki.signer.key,
        [pki.intermediate.certificate, rogue_pki.intermediate.certificate],
    )
    assert refused(DATA, forged, verify_signer).startswith("signer not trusted: ")


@pytest.mark.parametrize(
    "garbage",
    [b"", b"not a signature", b"\x30\x03\x02\x01\x01", b"\x30\x82\xff\xff" + b"\x00" * 10],
    ids=["empty", "text", "wrong-structure", "bad-length"],
)
def test_garbage_signature_is_refused(garbage: bytes, verify_signer: SignerVerifier) -> None:
    assert refused(DATA, garbage, verify_signer).startswith("malformed signature")


def test_truncated_signature_is_refused(pki: TestPki, verify_signer: SignerVerifier) -> None:
    assert refused(DATA, sign(pki)[:-20], verify_signer).startswith("malformed signature")


def test_trailing_bytes_after_the_signature_are_refused(
    pki: TestPki, verify_signer: SignerVerifier
) -> None:
    assert refused(DATA, sign(pki) + b"\x00", verify_signer).startswith("malformed signature")


def test_pem_signature_is_refused_with_a_hint(pki: TestPki, verify_signer: SignerVerifier) -> None:
    pem = builder_signature(pki, [pkcs7.PKCS7Options.DetachedSignature], hashes.SHA256())
    pem = b"-----BEGIN PKCS7-----\n" + pem + b"\n-----END PKCS7-----\n"
    assert refused(DATA, pem, verify_signer) == "malformed signature: expected DER, found PEM"


def test_embedded_content_is_refused(pki: TestPki, verify_signer: SignerVerifier) -> None:
    attached = builder_signature(pki, [pkcs7.PKCS7Options.Binary], hashes.SHA256())
    assert refused(DATA, attached, verify_signer) == (
        "malformed signature: not detached (it embeds content)"
    )


@pytest.mark.parametrize("algorithm", ["sha1", "md5"])
def test_weak_digest_is_refused(
    pki: TestPki, verify_signer: SignerVerifier, algorithm: str
) -> None:
    """cryptography will not sign with SHA-1: the SignerInfo is edited instead."""
    info = cms.ContentInfo.load(sign(pki))
    info["content"]["signer_infos"][0]["digest_algorithm"] = {"algorithm": algorithm}
    weak = bytes(info.dump(force=True))
    assert refused(DATA, weak, verify_signer) == (
        f"unsupported digest algorithm in signature: {algorithm}"
    )


def test_sha512_digest_is_accepted(pki: TestPki, verify_signer: SignerVerifier) -> None:
    options = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
    signature = builder_signature(pki, options, hashes.SHA512())
    assert verify_detached(DATA, signature, verify_signer=verify_signer) == pki.signer.certificate


def test_signature_without_signed_attributes_is_refused(
    pki: TestPki, verify_signer: SignerVerifier
) -> None:
    options = [
        pkcs7.PKCS7Options.DetachedSignature,
        pkcs7.PKCS7Options.Binary,
        pkcs7.PKCS7Options.NoAttributes,
    ]
    bare = builder_signature(pki, options, hashes.SHA256())
    assert refused(DATA, bare, verify_signer) == "malformed signature: it has no signed attributes"


def test_signature_without_the_signer_certificate_is_refused(
    pki: TestPki, verify_signer: SignerVerifier
) -> None:
    options = [
        pkcs7.PKCS7Options.DetachedSignature,
        pkcs7.PKCS7Options.Binary,
        pkcs7.PKCS7Options.NoCerts,
    ]
    no_certs = builder_signature(pki, options, hashes.SHA256())
    assert refused(DATA, no_certs, verify_signer) == (
        "malformed signature: the signer certificate is not included"
    )


def test_signing_with_a_key_that_is_not_the_certificate_s_is_refused(pki: TestPki) -> None:
    with pytest.raises(SignatureError, match="does not match the signing certificate"):
        sign_detached(DATA, pki.signer.certificate, pki.ec_signer.key)


# -- independent check with openssl ----------------------------------------------------------------


def _openssl_verify(tmp_path: Path, pki: TestPki, data: bytes, signature: bytes) -> int:
    (tmp_path / "listeblanche.xml").write_bytes(data)
    (tmp_path / "listeblanche.xml.p7s").write_bytes(signature)
    (tmp_path / "ca.pem").write_bytes(pki.root.pem())
    result = subprocess.run(
        [
            "openssl", "cms", "-verify", "-binary", "-inform", "DER",
            "-content", str(tmp_path / "listeblanche.xml"),
            "-in", str(tmp_path / "listeblanche.xml.p7s"),
            "-CAfile", str(tmp_path / "ca.pem"),
            "-purpose", "any", "-out", str(tmp_path / "out.bin"),
        ],
        capture_output=True,
        check=False,
    )  # fmt: skip
    return result.returncode


@needs_openssl
@pytest.mark.parametrize("ec_key", [False, True], ids=["rsa", "ecdsa"])
def test_openssl_accepts_what_sign_detached_writes(
    tmp_path: Path, pki: TestPki, ec_key: bool
) -> None:
    assert _openssl_verify(tmp_path, pki, DATA, sign(pki, ec_key=ec_key)) == 0
    assert (tmp_path / "out.bin").read_bytes() == DATA


@needs_openssl
def test_openssl_refuses_changed_data(tmp_path: Path, pki: TestPki) -> None:
    assert _openssl_verify(tmp_path, pki, DATA + b" ", sign(pki)) != 0


@needs_openssl
def test_verify_detached_accepts_what_openssl_signs(
    tmp_path: Path, pki: TestPki, verify_signer: SignerVerifier
) -> None:
    (tmp_path / "data.xml").write_bytes(DATA)
    (tmp_path / "signer.pem").write_bytes(pki.signer.pem())
    (tmp_path / "signer.key").write_bytes(pki.signer.key_pem())
    (tmp_path / "chain.pem").write_bytes(pki.intermediate.pem())
    subprocess.run(
        [
            "openssl", "cms", "-sign", "-binary", "-outform", "DER", "-md", "sha256",
            "-in", str(tmp_path / "data.xml"),
            "-signer", str(tmp_path / "signer.pem"), "-inkey", str(tmp_path / "signer.key"),
            "-certfile", str(tmp_path / "chain.pem"),
            "-out", str(tmp_path / "data.xml.p7s"),
        ],
        capture_output=True,
        check=True,
    )  # fmt: skip
    signature = (tmp_path / "data.xml.p7s").read_bytes()
    assert verify_detached(DATA, signature, verify_signer=verify_signer) == pki.signer.certificate
    assert refused(DATA[:-1], signature, verify_signer) == (
        "signature does not match the whitelist content"
    )


def _edited(signature: bytes, edit: Callable[[cms.SignerInfo], None]) -> bytes:
    info = cms.ContentInfo.load(signature)
    edit(info["content"]["signer_infos"][0])
    return bytes(info.dump(force=True))


def test_second_message_digest_attribute_is_refused(
    pki: TestPki, verify_signer: SignerVerifier
) -> None:
    def add_digest(signer_info: cms.SignerInfo) -> None:
        attributes = list(signer_info["signed_attrs"])
        attributes.append(cms.CMSAttribute({"type": "message_digest", "values": [b"\x00" * 32]}))
        signer_info["signed_attrs"] = cms.CMSAttributes(attributes)

    doubled = _edited(sign(pki), add_digest)
    assert refused(DATA, doubled, verify_signer) == (
        "malformed signature: the message_digest attribute must appear once"
    )


def test_content_type_attribute_must_say_data(pki: TestPki, verify_signer: SignerVerifier) -> None:
    def retype(signer_info: cms.SignerInfo) -> None:
        attributes = [
            cms.CMSAttribute({"type": "content_type", "values": ["signed_data"]})
            if a["type"].native == "content_type"
            else a
            for a in signer_info["signed_attrs"]
        ]
        signer_info["signed_attrs"] = cms.CMSAttributes(attributes)

    assert refused(DATA, _edited(sign(pki), retype), verify_signer) == (
        "malformed signature: the content-type attribute does not match"
    )


def test_signature_algorithm_naming_another_hash_is_refused(
    pki: TestPki, verify_signer: SignerVerifier
) -> None:
    def rename(signer_info: cms.SignerInfo) -> None:
        signer_info["signature_algorithm"] = {"algorithm": "sha384_rsa"}

    assert refused(DATA, _edited(sign(pki), rename), verify_signer) == (
        "malformed signature: signature algorithm uses sha384, digest algorithm sha256"
    )
