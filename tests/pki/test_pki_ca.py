"""The test PKI: files, names, extensions, CRLs, revocation; checked with the real openssl."""

from __future__ import annotations

import shutil
import stat
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pki_helpers import NOW, SERVER_HOST

from mssante.audit.events import AuditEvent, ListSink
from mssante.pki import (
    CaName,
    CertKind,
    IssuedPaths,
    PkiError,
    TestPki,
    dn_string,
    load_certificate,
    load_certificates,
    load_crl,
)
from mssante.pki.profiles import DOCUMENT_SIGNING

E = TypeVar("E", bound=x509.ExtensionType)
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    return subprocess.run(
        [OPENSSL, *map(str, args)], capture_output=True, text=True, check=False, encoding="utf-8"
    )


def extension(cert: x509.Certificate, kind: type[E]) -> x509.Extension[E]:
    return cert.extensions.get_extension_for_class(kind)


# -- with openssl ------------------------------------------------------------------------------


@needs_openssl
def test_openssl_accepts_the_server_certificate(pki: TestPki, server: IssuedPaths) -> None:
    bundle = pki.paths().bundle
    for purpose in ("sslserver", "sslclient"):
        result = openssl("verify", "-purpose", purpose, "-CAfile", bundle, server.cert)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().endswith(": OK")


@needs_openssl
def test_openssl_accepts_the_full_chain_with_crls(
    pki: TestPki, server: IssuedPaths, tmp_path: Path
) -> None:
    crl_file = tmp_path / "crls.pem"
    crl_file.write_bytes(b"".join(c.pem.read_bytes() for c in pki.paths().crls))
    result = openssl(
        "verify", "-crl_check_all", "-CAfile", pki.paths().root, "-untrusted", server.chain,
        "-CRLfile", crl_file, server.cert,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@needs_openssl
def test_openssl_sees_a_revocation(fresh_pki: TestPki, tmp_path: Path) -> None:
    issued = fresh_pki.issue_server("mx.example.fr", "1630013605", "GCS SARA", "63")
    fresh_pki.revoke(issued.cert, "keyCompromise")
    crl_file = tmp_path / "crls.pem"
    crl_file.write_bytes(b"".join(c.pem.read_bytes() for c in fresh_pki.paths().crls))
    result = openssl(
        "verify", "-crl_check", "-CAfile", fresh_pki.paths().bundle, "-CRLfile", crl_file,
        issued.cert,
    )  # fmt: skip
    assert result.returncode != 0
    assert "certificate revoked" in result.stdout + result.stderr


@needs_openssl
def test_openssl_rejects_a_certificate_of_another_pki(
    other_pki: TestPki, server: IssuedPaths
) -> None:
    result = openssl("verify", "-CAfile", other_pki.paths().bundle, server.cert)
    assert result.returncode != 0


@needs_openssl
def test_openssl_shows_the_subject_in_the_whitelist_form(pki: TestPki) -> None:
    # A real whitelist entry, with a non-ASCII letter.
    expected = "CN=smtpmss.sante-ra.fr,OU=1630013605,O=GCS SARA,ST=Puy-de-Dôme (63),C=FR"
    issued = pki.issue_server("smtpmss.sante-ra.fr", "1630013605", "GCS SARA", "63")
    result = openssl(
        "x509", "-noout", "-subject", "-nameopt", "RFC2253,-esc_msb", "-in", issued.cert
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"subject={expected}"
    assert issued.subject == expected


@needs_openssl
def test_openssl_reads_the_crls(pki: TestPki) -> None:
    for crl in pki.paths().crls:
        result = openssl("crl", "-inform", "DER", "-noout", "-issuer", "-in", crl.der)
        assert result.returncode == 0, result.stderr
        assert "IGC-SANTE" in result.stdout


# -- files -------------------------------------------------------------------------------------


def test_init_writes_the_cas_and_their_keys_privately(pki: TestPki) -> None:
    for ca in CaName:
        key = pki.directory / "ca" / f"{ca.value}.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert pki.ca_cert_path(ca).is_file()
        assert pki.crl_path(ca).is_file() and pki.crl_path(ca, pem=True).is_file()
    paths = pki.paths()
    assert len(load_certificates(paths.bundle)) == 3
    assert len(load_certificates(paths.intermediates)) == 2


def test_issue_writes_key_cert_chain_and_fullchain(pki: TestPki, server: IssuedPaths) -> None:
    assert stat.S_IMODE(server.key.stat().st_mode) == 0o600
    cert = load_certificate(server.cert)
    organisations = pki.certificate(CaName.ORGANISATIONS)
    assert load_certificates(server.chain) == [organisations]
    assert load_certificates(server.fullchain) == [cert, organisations]
    assert server.serial == cert.serial_number
    assert server.subject == dn_string(cert.subject)
    key = server.key.read_bytes()
    assert key.startswith(b"-----BEGIN PRIVATE KEY-----")


def test_init_refuses_an_existing_pki_and_load_a_missing_one(pki: TestPki, tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="already exists"):
        TestPki.init(pki.directory)
    with pytest.raises(PkiError, match="no test PKI"):
        TestPki.load(tmp_path / "nothing")
    with pytest.raises(PkiError, match="CRL base URL"):
        TestPki.init(tmp_path / "x", crl_base_url="ftp://example.org")


def test_load_reopens_an_existing_pki(pki: TestPki, server: IssuedPaths) -> None:
    again = TestPki.load(pki.directory)
    assert any(e.serial == server.serial for e in again.entries())
    assert again.certificate(CaName.ROOT) == pki.certificate(CaName.ROOT)


# -- names and extensions ----------------------------------------------------------------------


def test_ca_names_mirror_igc_sante(pki: TestPki) -> None:
    assert dn_string(pki.certificate(CaName.ROOT).subject) == (
        "CN=TEST AC RACINE IGC-SANTE ELEMENTAIRE,OU=IGC-SANTE TEST,O=ASIP-SANTE,C=FR"
    )
    assert dn_string(pki.certificate(CaName.ORGANISATIONS).subject) == (
        "CN=TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS,OU=IGC-SANTE TEST,O=ASIP-SANTE,C=FR"
    )
    assert dn_string(pki.certificate(CaName.PERSONNES).subject) == (
        "CN=TEST AC IGC-SANTE ELEMENTAIRE PERSONNES,OU=IGC-SANTE TEST,O=ASIP-SANTE,C=FR"
    )


def test_ca_extensions_and_lifetimes(pki: TestPki) -> None:
    root = pki.certificate(CaName.ROOT)
    assert root.issuer == root.subject
    assert root.not_valid_after_utc - root.not_valid_before_utc >= timedelta(days=3650)
    for ca in (CaName.ORGANISATIONS, CaName.PERSONNES):
        cert = pki.certificate(ca)
        constraints = extension(cert, x509.BasicConstraints)
        assert constraints.critical
        assert constraints.value == x509.BasicConstraints(ca=True, path_length=0)
        usage = extension(cert, x509.KeyUsage)
        assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
        assert cert.issuer == root.subject
        cert.verify_directly_issued_by(root)
        aki = extension(cert, x509.AuthorityKeyIdentifier).value
        assert aki.key_identifier == extension(root, x509.SubjectKeyIdentifier).value.digest
        assert cert.not_valid_after_utc - cert.not_valid_before_utc >= timedelta(days=3650)


def test_server_certificate_profile(pki: TestPki, server_cert: x509.Certificate) -> None:
    cert = server_cert
    public_key = cert.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size == 2048
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=1095)
    assert extension(cert, x509.BasicConstraints).critical
    assert not extension(cert, x509.BasicConstraints).value.ca
    usage = extension(cert, x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.key_encipherment
    assert not usage.value.key_cert_sign
    assert list(extension(cert, x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    san = extension(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [SERVER_HOST]
    organisations = pki.certificate(CaName.ORGANISATIONS)
    aki = extension(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == extension(organisations, x509.SubjectKeyIdentifier).value.digest
    assert extension(cert, x509.SubjectKeyIdentifier).value.digest
    points = extension(cert, x509.CRLDistributionPoints).value
    uri = points[0].full_name[0].value
    assert uri == pki.crl_path(CaName.ORGANISATIONS).resolve().as_uri()
    cert.verify_directly_issued_by(organisations)


def test_person_certificate_profile(pki: TestPki, person: IssuedPaths) -> None:
    cert = load_certificate(person.cert)
    assert cert.issuer == pki.certificate(CaName.PERSONNES).subject
    assert list(extension(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "810002909371"
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "810002909371"
    with pytest.raises(x509.ExtensionNotFound):
        extension(cert, x509.SubjectAlternativeName)
    assert person.kind is CertKind.PERSON


def test_signer_certificate_profile(pki: TestPki, signer: IssuedPaths) -> None:
    cert = load_certificate(signer.cert)
    assert cert.issuer == pki.certificate(CaName.ORGANISATIONS).subject
    assert list(extension(cert, x509.ExtendedKeyUsage).value) == [DOCUMENT_SIGNING]
    usage = extension(cert, x509.KeyUsage).value
    assert usage.digital_signature and usage.content_commitment and not usage.key_encipherment
    assert signer.subject == (
        "CN=liste-blanche.autorite.test,OU=318751275100020,O=AUTORITE,ST=Paris (75),C=FR"
    )


def test_application_certificate_is_client_only(pki: TestPki) -> None:
    issued = pki.issue_application("lps.ch-exemple.fr", "1630013605", "CH EXEMPLE", "63")
    cert = load_certificate(issued.cert)
    assert list(extension(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_explicit_dates_and_custom_usages(pki: TestPki) -> None:
    start, end = NOW - timedelta(days=30), NOW - timedelta(days=1)
    issued = pki.issue_server(
        "old.example.fr", "1630013605", "X", "63", not_before=start, not_after=end,
        key_usage=x509.KeyUsage(False, False, True, False, False, False, False, False, False),
        extended_key_usage=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )  # fmt: skip
    cert = load_certificate(issued.cert)
    assert cert.not_valid_before_utc == start.replace(microsecond=0)
    assert cert.not_valid_after_utc == end.replace(microsecond=0)
    assert not extension(cert, x509.KeyUsage).value.digital_signature
    assert list(extension(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(PkiError, match="notAfter"):
        pki.issue_server("x.example.fr", "1630013605", "X", "63", not_before=end, not_after=start)


def test_a_crl_base_url_goes_into_the_certificates(tmp_path: Path) -> None:
    pki = TestPki.init(tmp_path / "p", crl_base_url="http://crl.test.example/igc/")
    issued = pki.issue_person("810002909371", "Martin", "Paul")
    points = extension(load_certificate(issued.cert), x509.CRLDistributionPoints).value
    assert points[0].full_name[0].value == "http://crl.test.example/igc/personnes.crl"
    issuing = extension(pki.certificate(CaName.PERSONNES), x509.CRLDistributionPoints).value
    assert issuing[0].full_name[0].value == "http://crl.test.example/igc/root.crl"


def test_bad_subject_parts_are_refused(pki: TestPki) -> None:
    from mssante.pki import InvalidIdentifier, MalformedDN, UnknownDepartement

    with pytest.raises(InvalidIdentifier):
        pki.issue_server("mx.example.fr", "341459958900027", "X", "33")
    with pytest.raises(UnknownDepartement):
        pki.issue_server("mx.example.fr", "341459958900028", "X", "20")
    with pytest.raises(MalformedDN):
        pki.issue_server("not a host", "341459958900028", "X", "33")
    with pytest.raises(InvalidIdentifier):
        pki.issue_person("810002909372", "Dupont", "Jean")


# -- revocation and CRLs -----------------------------------------------------------------------


def test_crls_are_signed_numbered_and_last_a_week(pki: TestPki) -> None:
    for crl_paths in pki.paths().crls:
        crl = load_crl(crl_paths.der)
        assert load_crl(crl_paths.pem) == crl
        issuer = pki.certificate(crl_paths.ca)
        assert crl.issuer == issuer.subject
        assert crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
        assert crl.next_update_utc - crl.last_update_utc == timedelta(days=7)  # type: ignore[operator]
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        assert number == crl_paths.number >= 1


def test_revoke_by_path_lists_the_serial_with_its_reason(fresh_pki: TestPki) -> None:
    issued = fresh_pki.issue_server("mx.example.fr", "1630013605", "GCS SARA", "63")
    before = fresh_pki.paths().crls[1].number
    entry = fresh_pki.revoke(issued.cert, "keyCompromise")
    assert entry.serial == issued.serial and entry.reason == "keyCompromise"
    crl = load_crl(fresh_pki.crl_path(CaName.ORGANISATIONS))
    revoked = crl.get_revoked_certificate_by_serial_number(issued.serial)
    assert revoked is not None
    reason = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    assert fresh_pki.paths().crls[1].number == before + 1
    assert (
        load_crl(fresh_pki.crl_path(CaName.PERSONNES)).get_revoked_certificate_by_serial_number(
            issued.serial
        )
        is None
    )


def test_revoke_by_serial_text_or_number(fresh_pki: TestPki) -> None:
    first = fresh_pki.issue_person("810002909371", "Dupont", "Jean")
    second = fresh_pki.issue_person("810101215225", "Durand", "Marie")
    fresh_pki.revoke(format(first.serial, "x"), publish=False)
    fresh_pki.revoke(second.serial)
    crl = load_crl(fresh_pki.crl_path(CaName.PERSONNES))
    for serial in (first.serial, second.serial):
        revoked = crl.get_revoked_certificate_by_serial_number(serial)
        assert revoked is not None
        with pytest.raises(x509.ExtensionNotFound):  # RFC 5280 §5.3.1: "unspecified" is absent
            revoked.extensions.get_extension_for_class(x509.CRLReason)


def test_revoking_an_issuing_ca_goes_on_the_root_crl(fresh_pki: TestPki) -> None:
    organisations = fresh_pki.certificate(CaName.ORGANISATIONS)
    fresh_pki.revoke(organisations.serial_number, x509.ReasonFlags.ca_compromise)
    crl = load_crl(fresh_pki.crl_path(CaName.ROOT))
    assert crl.get_revoked_certificate_by_serial_number(organisations.serial_number) is not None


def test_revoke_refuses_what_it_cannot_do(fresh_pki: TestPki, tmp_path: Path) -> None:
    issued = fresh_pki.issue_server("mx.example.fr", "1630013605", "GCS SARA", "63")
    fresh_pki.revoke(issued.serial)
    with pytest.raises(PkiError, match="already revoked"):
        fresh_pki.revoke(issued.serial)
    with pytest.raises(PkiError, match="no certificate with serial"):
        fresh_pki.revoke("ABCDEF")
    with pytest.raises(PkiError, match="cannot be revoked"):
        fresh_pki.revoke(fresh_pki.ca_cert_path(CaName.ROOT))
    with pytest.raises(PkiError, match="unknown revocation reason"):
        fresh_pki.revoke(issued.serial, "because")
    with pytest.raises(PkiError, match="neither a certificate file"):
        fresh_pki.revoke(str(tmp_path / "missing.pem"))


def test_publish_crls_with_explicit_dates(fresh_pki: TestPki) -> None:
    this_update, next_update = NOW - timedelta(days=10), NOW - timedelta(days=3)
    written = fresh_pki.publish_crls(this_update=this_update, next_update=next_update)
    assert [w.ca for w in written] == list(CaName)
    crl = load_crl(written[0].der)
    assert crl.next_update_utc == next_update.replace(microsecond=0)


def test_audit_records_issuance_and_revocation(tmp_path: Path) -> None:
    sink = ListSink()
    pki = TestPki.init(tmp_path / "p", audit=sink)
    issued = pki.issue_server("mx.example.fr", "1630013605", "GCS SARA", "63")
    pki.revoke(issued.serial, "superseded")
    events = [r.event for r in sink.records]
    assert events == [
        AuditEvent.PKI_INITIALISED,
        AuditEvent.CERTIFICATE_ISSUED,
        AuditEvent.CERTIFICATE_REVOKED,
    ]
    assert sink.records[1].target == issued.subject
    assert sink.records[2].context["reason"] == "superseded"
