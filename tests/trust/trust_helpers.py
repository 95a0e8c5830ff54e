"""Helpers of the whitelist tests: a throwaway PKI, a stand-in signer check, small lists."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mssante.trust.model import Whitelist, WhitelistDomain
from mssante.trust.signature import SignerVerifier

DATA = Path(__file__).parent.parent / "data"
SAMPLE = DATA / "listeblanchemssante-sample.xml"
CLOSING_TAG = b"</ListeBlancheMSSante>\n"
APTA78_DN = (
    "CN=smtp-1.sante.santnet.com,OU=341459958900028,O=DEDALUS HEALTHCARE FRANCE,"
    "ST=Gironde (33),C=FR"
)

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: Key

    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


@dataclass(frozen=True)
class TestPki:
    """Root → intermediate → signers, like AC RACINE → AC ORGANISATIONS → the authority."""

    __test__ = False

    root: Issued
    intermediate: Issued
    signer: Issued  # RSA 2048
    ec_signer: Issued
    server: Issued  # HTTPS server certificate for 127.0.0.1 / localhost


@dataclass(frozen=True)
class Check:
    """What mssante.pki.verify returns, reduced to what the trust package reads."""

    ok: bool
    reason: str


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "TEST MSSANTE"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "IGC-SANTE TEST"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _issue(
    cn: str,
    key: Key,
    issuer: Issued | None,
    *,
    ca: bool,
    extra: Sequence[x509.ExtensionType] = (),
) -> Issued:
    now = dt.datetime.now(dt.UTC)
    signing_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer.certificate.subject if issuer else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    for extension in extra:
        builder = builder.add_extension(extension, critical=False)
    return Issued(builder.sign(signing_key, hashes.SHA256()), key)


def _ec() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_pki(prefix: str, *, rsa_signer: bool) -> TestPki:
    root = _issue(f"{prefix} AC RACINE", _ec(), None, ca=True)
    intermediate = _issue(f"{prefix} AC ORGANISATIONS", _ec(), root, ca=True)
    signer_key: Key = rsa.generate_private_key(65537, 2048) if rsa_signer else _ec()
    signer = _issue(f"{prefix} liste blanche", signer_key, intermediate, ca=False)
    ec_signer = _issue(f"{prefix} liste blanche EC", _ec(), intermediate, ca=False)
    server = _issue(
        "localhost",
        _ec(),
        intermediate,
        ca=False,
        extra=[
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
        ],
    )
    return TestPki(root, intermediate, signer, ec_signer, server)


def chain_verifier(anchor: x509.Certificate) -> SignerVerifier:
    """A small stand-in for mssante.pki.verify: each issuer's signature up to ``anchor``."""

    def check(signer: x509.Certificate, others: Sequence[x509.Certificate]) -> Check:
        cert = signer
        for _ in range(4):
            candidates = [anchor, *others]
            issuer = next((c for c in candidates if c.subject == cert.issuer), None)
            if issuer is None:
                return Check(False, f"no issuer found for {cert.subject.rfc4514_string()}")
            try:
                cert.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, InvalidSignature):
                return Check(False, f"bad issuer signature on {cert.subject.rfc4514_string()}")
            if issuer == anchor:
                return Check(True, "")
            cert = issuer
        return Check(False, "chain too long")

    return check


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=dt.UTC)  # type: ignore[arg-type,misc]


def small_whitelist(generated: dt.datetime | None = None, *extra: WhitelistDomain) -> Whitelist:
    """Two domains, one served by two operators (two entries, as the real list does)."""
    domains = (
        WhitelistDomain(
            name="ch-exemple.mssante.fr",
            description="Centre hospitalier d'exemple — Hôpital & Cie <Nord>",
            operator_dns=(
                "CN=smtp-1.ch-exemple.fr,OU=1330000000,O=CH EXEMPLE,ST=Gironde (33),C=FR",
                "CN=smtp-2.ch-exemple.fr,OU=1330000000,O=CH EXEMPLE,ST=Gironde (33),C=FR",
            ),
            responsable_contact="05 00 00 00 00, dsi@ch-exemple.fr",
            support_contact="05 00 00 00 01, support@ch-exemple.fr",
            updated_at=utc(2025, 1, 2, 3, 4, 5),
        ),
        WhitelistDomain(
            name="ch-exemple.mssante.fr",
            description="Le même domaine, par un second opérateur",
            operator_dns=("CN=mss.grades.fr,OU=2123456789,O=GRADES,ST=Paris (75),C=FR",),
            responsable_contact="01 00 00 00 00, mss@grades.fr",
            support_contact="01 00 00 00 01, support@grades.fr",
            updated_at=utc(2025, 1, 3, 0, 0, 0),
        ),
        WhitelistDomain(
            name="medecin.mssante.fr",
            description="Opérateur national",
            operator_dns=("CN=smtp.mssante.fr,OU=3123,O=ANS,ST=Paris (75),C=FR",),
            responsable_contact="contact@esante.gouv.fr",
            support_contact="support@esante.gouv.fr",
            updated_at=utc(2024, 12, 31, 23, 59, 59),
        ),
        *extra,
    )
    return Whitelist(generated_at=generated or utc(2025, 3, 13, 14, 54, 10), domains=domains)
