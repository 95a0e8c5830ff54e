"""verify_certificate: what it accepts, and each reason it refuses, one test per reason."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from pki_helpers import NOW, SERVER_HOST, trust_of

from mssante.config import PkiSettings
from mssante.pki import (
    CaName,
    CertificateError,
    CrlCache,
    Failure,
    IssuedPaths,
    PkiError,
    Purpose,
    TestPki,
    TrustStore,
    VerificationResult,
    dn_string,
    load_certificate,
    load_certificates,
    verify_certificate,
)
from mssante.pki.ca import PERSON_KEY_USAGE, _key_usage

CrlFactory = Callable[..., CrlCache]


def check(
    cert: x509.Certificate | Path,
    purpose: Purpose,
    trust: TrustStore,
    crls: CrlCache | None = None,
    **options: object,
) -> VerificationResult:
    certificate = cert if isinstance(cert, x509.Certificate) else load_certificate(cert)
    return verify_certificate(certificate, purpose=purpose, trust=trust, crls=crls, **options)  # type: ignore[arg-type]


def refused(result: VerificationResult, failure: Failure) -> None:
    assert not result.ok, result
    assert result.failure is failure, result
    assert result.reason and "\n" not in result.reason


# -- accepted ----------------------------------------------------------------------------------


def test_an_operator_certificate_is_valid_as_server_and_client(
    pki: TestPki, server: IssuedPaths, trust: TrustStore, crl_cache: CrlFactory
) -> None:
    crls = crl_cache(pki)
    for purpose in (Purpose.SERVER, Purpose.CLIENT):
        result = check(server.cert, purpose, trust, crls)
        assert result.ok and result.failure is None, result
        assert result.subject_dn == server.subject
        assert [c.subject for c in result.chain] == [
            load_certificate(server.cert).subject,
            pki.certificate(CaName.ORGANISATIONS).subject,
            pki.certificate(CaName.ROOT).subject,
        ]
        assert result.detail == ""
    assert check(server.cert, Purpose.SERVER, trust, crls).reason == (
        "certificate valid for TLS server authentication"
    )


def test_person_and_signer_certificates_are_valid_for_their_purpose(
    pki: TestPki, person: IssuedPaths, signer: IssuedPaths, trust: TrustStore, crl_cache: CrlFactory
) -> None:
    crls = crl_cache(pki)
    assert check(person.cert, Purpose.PERSON, trust, crls).ok
    assert check(signer.cert, Purpose.SIGNER, trust, crls).ok


def test_the_host_name_is_checked_when_given(server: IssuedPaths, trust: TrustStore) -> None:
    assert check(server.cert, Purpose.SERVER, trust, dns_name=SERVER_HOST).ok
    result = check(server.cert, Purpose.SERVER, trust, dns_name="other.example.com")
    refused(result, Failure.NAME_MISMATCH)
    assert "other.example.com" in result.reason
    refused(check(server.cert, Purpose.SERVER, trust, dns_name="not a host"), Failure.NAME_MISMATCH)


def test_presented_intermediates_are_used(pki: TestPki, server: IssuedPaths) -> None:
    only_root = TrustStore.from_certificates([pki.certificate(CaName.ROOT)])
    result = check(server.cert, Purpose.SERVER, only_root)
    refused(result, Failure.UNKNOWN_ISSUER)
    assert "TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS" in result.reason
    presented = load_certificates(server.chain)
    assert check(server.cert, Purpose.SERVER, only_root, presented_chain=presented).ok


def test_without_a_crl_cache_revocation_is_not_checked_and_said_so(
    server: IssuedPaths, trust: TrustStore
) -> None:
    result = check(server.cert, Purpose.SERVER, trust, None)
    assert result.ok
    assert result.detail == "revocation not checked"


# -- refused, one reason each ------------------------------------------------------------------


def test_expired(pki: TestPki, trust: TrustStore) -> None:
    issued = pki.issue_server(
        "expired.example.fr", "1630013605", "X", "63",
        not_before=NOW - timedelta(days=1200), not_after=NOW - timedelta(days=100),
    )  # fmt: skip
    result = check(issued.cert, Purpose.SERVER, trust)
    refused(result, Failure.EXPIRED)
    assert result.reason == f"certificate expired on {NOW - timedelta(days=100):%Y-%m-%d}"


def test_expired_at_the_time_asked(server: IssuedPaths, trust: TrustStore) -> None:
    result = check(server.cert, Purpose.SERVER, trust, at=NOW + timedelta(days=1200))
    refused(result, Failure.EXPIRED)


def test_not_yet_valid(pki: TestPki, trust: TrustStore) -> None:
    issued = pki.issue_server(
        "future.example.fr", "1630013605", "X", "63", not_before=NOW + timedelta(days=2)
    )
    result = check(issued.cert, Purpose.SERVER, trust)
    refused(result, Failure.NOT_YET_VALID)
    assert result.reason.startswith("certificate is not valid before ")


def test_revoked(fresh_pki: TestPki, crl_cache: CrlFactory) -> None:
    issued = fresh_pki.issue_server("revoked.example.fr", "1630013605", "X", "63")
    trust = trust_of(fresh_pki)
    assert check(issued.cert, Purpose.SERVER, trust, crl_cache(fresh_pki)).ok
    fresh_pki.revoke(issued.cert, "keyCompromise", publish=False, at=NOW)
    fresh_pki.publish_crls()
    result = check(issued.cert, Purpose.SERVER, trust, crl_cache(fresh_pki))
    refused(result, Failure.REVOKED)
    assert result.reason == f"certificate revoked on {NOW:%Y-%m-%d} (keyCompromise)"
    assert len(result.chain) == 3


def test_revoked_issuing_ca(fresh_pki: TestPki, crl_cache: CrlFactory) -> None:
    issued = fresh_pki.issue_person("810002909371", "Dupont", "Jean")
    fresh_pki.revoke(fresh_pki.certificate(CaName.PERSONNES).serial_number, "cACompromise")
    result = check(issued.cert, Purpose.PERSON, trust_of(fresh_pki), crl_cache(fresh_pki))
    refused(result, Failure.REVOKED)
    assert result.reason.startswith("issuing CA 'TEST AC IGC-SANTE ELEMENTAIRE PERSONNES' revoked")


def test_wrong_key_usage(pki: TestPki, trust: TrustStore) -> None:
    issued = pki.issue_server(
        "noSig.example.fr", "1630013605", "X", "63", key_usage=_key_usage("key_encipherment")
    )
    result = check(issued.cert, Purpose.SERVER, trust)
    refused(result, Failure.WRONG_KEY_USAGE)
    assert result.reason == "key usage does not allow digitalSignature"


def test_an_end_entity_that_may_sign_certificates_is_refused(
    pki: TestPki, trust: TrustStore
) -> None:
    usage = _key_usage("digital_signature", "key_cert_sign")
    issued = pki.issue_person("810002909371", "Dupont", "Jean", key_usage=usage)
    refused(check(issued.cert, Purpose.PERSON, trust), Failure.WRONG_KEY_USAGE)


def test_wrong_purpose(
    server: IssuedPaths, person: IssuedPaths, signer: IssuedPaths, trust: TrustStore
) -> None:
    result = check(person.cert, Purpose.SERVER, trust)
    refused(result, Failure.WRONG_PURPOSE)
    assert result.reason == "certificate is not for TLS server authentication (extended key usage)"
    refused(check(server.cert, Purpose.SIGNER, trust), Failure.WRONG_PURPOSE)
    refused(check(signer.cert, Purpose.CLIENT, trust), Failure.WRONG_PURPOSE)


def test_an_operator_certificate_is_not_a_person(server: IssuedPaths, trust: TrustStore) -> None:
    result = check(server.cert, Purpose.PERSON, trust)
    refused(result, Failure.WRONG_PURPOSE)
    assert result.reason == "certificate carries no professional idNat"


def test_without_extended_key_usage(pki: TestPki, trust: TrustStore) -> None:
    issued = pki.issue_person(
        "810002909371", "Dupont", "Jean", key_usage=PERSON_KEY_USAGE, extended_key_usage=[]
    )
    refused(check(issued.cert, Purpose.PERSON, trust), Failure.WRONG_PURPOSE)


def test_a_certificate_of_another_pki_with_the_same_names(
    other_pki: TestPki, trust: TrustStore
) -> None:
    issued = other_pki.issue_server(SERVER_HOST, "341459958900028", "EXAMPLE HEALTH", "33")
    result = check(issued.cert, Purpose.SERVER, trust)
    refused(result, Failure.UNKNOWN_ISSUER)
    assert "unknown CA named 'TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS'" in result.reason
    with_chain = check(
        issued.cert, Purpose.SERVER, trust, presented_chain=load_certificates(issued.chain)
    )
    refused(with_chain, Failure.UNKNOWN_ISSUER)


def test_a_ca_unknown_by_name(trust: TrustStore) -> None:
    leaf = issued_by(self_signed("Some Other CA"))
    result = check(leaf, Purpose.SERVER, trust)
    refused(result, Failure.UNKNOWN_ISSUER)
    assert result.reason == "certificate: issuer 'Some Other CA' is not trusted"


def test_self_signed(trust: TrustStore) -> None:
    result = check(self_signed(SERVER_HOST), Purpose.SERVER, trust)
    refused(result, Failure.SELF_SIGNED)
    assert result.subject_dn == f"CN={SERVER_HOST}"


def test_a_trust_anchor_is_not_an_end_entity(pki: TestPki, trust: TrustStore) -> None:
    refused(check(pki.certificate(CaName.ROOT), Purpose.SERVER, trust), Failure.WRONG_PURPOSE)


def test_bad_signature(server_cert: x509.Certificate, trust: TrustStore) -> None:
    der = bytearray(server_cert.public_bytes(Encoding.DER))
    der[-10] ^= 0xFF  # inside the signature value
    result = check(x509.load_der_x509_certificate(bytes(der)), Purpose.SERVER, trust)
    refused(result, Failure.BAD_SIGNATURE)


def test_malformed_extensions(server_cert: x509.Certificate, trust: TrustStore) -> None:
    parsed = asn1_x509.Certificate.load(server_cert.public_bytes(Encoding.DER))
    tbs = parsed["tbs_certificate"]
    extensions = list(tbs["extensions"])
    tbs["extensions"] = asn1_x509.Extensions([*extensions, extensions[0]])  # duplicated
    damaged = x509.load_der_x509_certificate(parsed.dump(force=True))
    result = check(damaged, Purpose.SERVER, trust)
    refused(result, Failure.MALFORMED)
    assert result.subject_dn == dn_of(server_cert)


def test_missing_crl_when_revocation_is_required(
    pki: TestPki, server: IssuedPaths, trust: TrustStore, tmp_path: Path
) -> None:
    no_crls = CrlCache(tmp_path / "empty", [], trust)
    result = check(server.cert, Purpose.SERVER, trust, no_crls)
    refused(result, Failure.NO_CRL)
    assert result.reason == "no valid CRL of 'TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS' at hand"


def test_missing_crl_when_revocation_is_optional(
    server: IssuedPaths, trust: TrustStore, tmp_path: Path
) -> None:
    no_crls = CrlCache(tmp_path / "empty", [], trust, require_revocation_check=False)
    result = check(server.cert, Purpose.SERVER, trust, no_crls)
    assert result.ok
    assert "no CRL for 'TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS'" in result.detail


def test_a_crl_of_another_ca_does_not_count(
    pki: TestPki, other_pki: TestPki, server: IssuedPaths, trust: TrustStore, tmp_path: Path
) -> None:
    # The other PKI's CRLs carry the same issuer names but are signed by other keys.
    crls = CrlCache(tmp_path / "c", other_pki.crl_sources(), trust)
    crls.refresh()
    refused(check(server.cert, Purpose.SERVER, trust, crls), Failure.NO_CRL)


# -- loading and trust stores ------------------------------------------------------------------


def test_load_certificate_accepts_pem_der_and_text(server: IssuedPaths) -> None:
    pem = server.cert.read_bytes()
    cert = load_certificate(pem)
    assert load_certificate(cert.public_bytes(Encoding.DER)) == cert
    assert load_certificate(pem.decode("ascii")) == cert
    assert load_certificate(str(server.cert)) == cert


@pytest.mark.parametrize(
    "data",
    [
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"\x30\x03\x02\x01\x01",
        b"not a certificate at all",
        b"",
    ],
)
def test_load_certificate_refuses_malformed_data(data: bytes) -> None:
    with pytest.raises(CertificateError, match="not a valid PEM or DER certificate"):
        load_certificate(data)


def test_load_certificate_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="certificate file not found"):
        load_certificate(tmp_path / "missing.pem")


def test_trust_store_from_settings(pki: TestPki, server: IssuedPaths) -> None:
    paths = pki.paths()
    settings = PkiSettings(trust_anchors=[paths.root], intermediates=[paths.intermediates])
    store = TrustStore.from_settings(settings)
    assert len(store.anchors) == 1 and len(store.intermediates) == 2
    assert check(server.cert, Purpose.SERVER, store).ok
    with pytest.raises(PkiError, match="no trust anchor"):
        TrustStore.from_settings(PkiSettings())


# -- helpers -----------------------------------------------------------------------------------


def dn_of(cert: x509.Certificate) -> str:
    return dn_string(cert.subject)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def self_signed(common_name: str) -> x509.Certificate:
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def issued_by(issuer: x509.Certificate) -> x509.Certificate:
    """A leaf naming ``issuer`` as its issuer (signed by a throw-away key)."""
    key = _key()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf.example.fr")]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )


def test_an_expired_issuing_ca_is_named(pki: TestPki, trust: TrustStore) -> None:
    root_key = serialization.load_pem_private_key(
        (pki.directory / "ca" / "root.key").read_bytes(), password=None
    )
    assert isinstance(root_key, rsa.RSAPrivateKey)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "TEST AC PERIMEE")])
    expired_ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(pki.certificate(CaName.ROOT).subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=400))
        .not_valid_after(NOW - timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf.example.fr")]))
        .issuer_name(ca_name)
        .public_key(_key().public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=60))
        .not_valid_after(NOW + timedelta(days=60))
        .sign(ca_key, hashes.SHA256())
    )
    result = check(leaf, Purpose.SERVER, trust, presented_chain=[expired_ca])
    refused(result, Failure.EXPIRED)
    assert result.reason == (
        f"issuing CA 'TEST AC PERIMEE' expired on {NOW - timedelta(days=30):%Y-%m-%d}"
    )
