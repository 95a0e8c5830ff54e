"""A test PKI mirroring IGC-Santé: one root, two issuing CAs, operator/person/signer certificates.

For tests, demos and local trust spaces only: keys are stored unencrypted (mode 0600). Layout of
the folder (see docs/pki.md)::

    index.json                     issued certificates, revocations, CRL numbers, CRL base URL
    ca/root.pem, ca/root.key       TEST AC RACINE IGC-SANTE ELEMENTAIRE
    ca/organisations.pem, .key     TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS
    ca/personnes.pem, .key         TEST AC IGC-SANTE ELEMENTAIRE PERSONNES
    ca/intermediates.pem           both issuing CAs
    ca/bundle.pem                  root + issuing CAs (for ``openssl verify -CAfile``)
    crl/<ca>.crl, crl/<ca>.crl.pem one CRL per CA, DER and PEM
    issued/<kind>-<name>-<serial>/ cert.pem, key.pem, chain.pem, fullchain.pem
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from mssante.audit.events import SYSTEM_ACTOR, AuditEvent, AuditRecord, AuditSink
from mssante.pki.errors import PkiError
from mssante.pki.ids import IdNat, IdNatStruct
from mssante.pki.names import dn_string, operator_subject, person_subject
from mssante.pki.profiles import DOCUMENT_SIGNING

ROOT_DAYS = 7305  # 20 years
CA_DAYS = 3652  # 10 years
LEAF_DAYS = 1095  # 3 years, as IGC-Santé's certificates
CRL_DAYS = 7
_BACKDATE = timedelta(minutes=5)  # tolerate small clock differences between hosts
_INDEX = "index.json"


class CaName(StrEnum):
    ROOT = "root"
    ORGANISATIONS = "organisations"
    PERSONNES = "personnes"


class CertKind(StrEnum):
    ROOT = "root"
    CA = "ca"
    SERVER = "server"
    PERSON = "person"
    SIGNER = "signer"
    APPLICATION = "application"


CA_COMMON_NAMES: Mapping[CaName, str] = MappingProxyType(
    {
        CaName.ROOT: "TEST AC RACINE IGC-SANTE ELEMENTAIRE",
        CaName.ORGANISATIONS: "TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS",
        CaName.PERSONNES: "TEST AC IGC-SANTE ELEMENTAIRE PERSONNES",
    }
)


def ca_subject(ca: CaName) -> x509.Name:
    """``CN=<name>,OU=IGC-SANTE TEST,O=ASIP-SANTE,C=FR``."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ASIP-SANTE"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "IGC-SANTE TEST"),
            x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAMES[ca]),
        ]
    )


# -- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedPaths:
    """What an ``issue_*`` call wrote. ``chain`` is the issuing CA; ``fullchain`` cert + chain."""

    serial: int
    kind: CertKind
    subject: str
    cert: Path
    key: Path
    chain: Path
    fullchain: Path

    def as_dict(self) -> dict[str, str]:
        return {
            "serial": format(self.serial, "X"),
            "kind": self.kind.value,
            "subject": self.subject,
            "cert": str(self.cert),
            "key": str(self.key),
            "chain": str(self.chain),
            "fullchain": str(self.fullchain),
        }


@dataclass(frozen=True)
class CrlPaths:
    ca: CaName
    number: int
    der: Path
    pem: Path


@dataclass(frozen=True)
class PkiPaths:
    """The files a relying party needs: the root, the issuing CAs, both, and the CRLs."""

    root: Path
    intermediates: Path
    bundle: Path
    crls: tuple[CrlPaths, ...]


@dataclass(frozen=True)
class IndexEntry:
    """One certificate in ``index.json``."""

    serial: int
    kind: CertKind
    issuer: CaName
    subject: str
    cert: str  # relative to the PKI folder
    not_before: datetime
    not_after: datetime
    revoked_at: datetime | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "serial": format(self.serial, "X"),
            "kind": self.kind.value,
            "issuer": self.issuer.value,
            "subject": self.subject,
            "cert": self.cert,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IndexEntry:
        revoked = data.get("revoked_at")
        return cls(
            serial=int(data["serial"], 16),
            kind=CertKind(data["kind"]),
            issuer=CaName(data["issuer"]),
            subject=data["subject"],
            cert=data["cert"],
            not_before=datetime.fromisoformat(data["not_before"]),
            not_after=datetime.fromisoformat(data["not_after"]),
            revoked_at=datetime.fromisoformat(revoked) if revoked else None,
            reason=data.get("reason"),
        )


@dataclass(frozen=True)
class _Index:
    crl_base_url: str | None
    crl_numbers: dict[str, int] = field(default_factory=dict)
    entries: tuple[IndexEntry, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "crl_base_url": self.crl_base_url,
            "crl_numbers": self.crl_numbers,
            "certificates": [e.to_json() for e in self.entries],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _Index:
        return cls(
            crl_base_url=data.get("crl_base_url"),
            crl_numbers={str(k): int(v) for k, v in data.get("crl_numbers", {}).items()},
            entries=tuple(IndexEntry.from_json(e) for e in data.get("certificates", [])),
        )


@dataclass(frozen=True)
class _Validity:
    not_before: datetime
    not_after: datetime

    @classmethod
    def of(cls, days: int, not_before: datetime | None, not_after: datetime | None) -> _Validity:
        start = _utc(not_before) if not_before else _now() - _BACKDATE
        end = _utc(not_after) if not_after else start + timedelta(days=days)
        if end <= start:
            raise PkiError("a certificate's notAfter must be later than its notBefore")
        return cls(start, end)


@dataclass(frozen=True)
class _Profile:
    """The parts of a leaf certificate that depend on its kind."""

    kind: CertKind
    issuer: CaName
    key_usage: x509.KeyUsage
    eku: tuple[ObjectIdentifier, ...]
    dns_names: tuple[str, ...] = ()


def _key_usage(*bits: str) -> x509.KeyUsage:
    flags = dict.fromkeys(
        (
            "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
            "key_agreement", "key_cert_sign", "crl_sign",
        ),
        False,
    )  # fmt: skip
    flags.update(dict.fromkeys(bits, True))
    return x509.KeyUsage(**flags, encipher_only=False, decipher_only=False)


SERVER_KEY_USAGE = _key_usage("digital_signature", "key_encipherment")
PERSON_KEY_USAGE = _key_usage("digital_signature")
SIGNER_KEY_USAGE = _key_usage("digital_signature", "content_commitment")
CA_KEY_USAGE = _key_usage("key_cert_sign", "crl_sign")


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# -- files -------------------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to a temporary file then rename it: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it; private keys must be exactly 0600
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def _pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-.")[:40] or "cert"


# -- the PKI -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Authority:
    name: CaName
    cert: x509.Certificate
    key: rsa.RSAPrivateKey


class TestPki:
    """A test IGC-Santé on disk. Create with :meth:`init`, open with :meth:`load`."""

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, directory: Path, audit: AuditSink | None = None) -> None:
        self.directory = directory
        self._audit = audit

    # -- creation and loading ------------------------------------------------------------------
    @classmethod
    def init(
        cls, directory: Path, *, crl_base_url: str | None = None, audit: AuditSink | None = None
    ) -> TestPki:
        """Create the root and the two issuing CAs in ``directory``, then publish empty CRLs."""
        directory = Path(directory)
        if (directory / _INDEX).exists():
            raise PkiError(f"a test PKI already exists in {directory}")
        if crl_base_url is not None and not re.match(r"(https?|file)://", crl_base_url):
            raise PkiError("the CRL base URL must start with http://, https:// or file://")
        pki = cls(directory, audit)
        pki._save_index(_Index(crl_base_url.rstrip("/") if crl_base_url else None))
        root = pki._create_root()
        pki._create_issuing(CaName.ORGANISATIONS, root)
        pki._create_issuing(CaName.PERSONNES, root)
        pki._write_bundles()
        pki.publish_crls()
        pki._record(AuditEvent.PKI_INITIALISED, dn_string(root.cert.subject), {})
        return pki

    @classmethod
    def load(cls, directory: Path, *, audit: AuditSink | None = None) -> TestPki:
        directory = Path(directory)
        if not (directory / _INDEX).is_file():
            raise PkiError(f"no test PKI in {directory} (run 'mssante pki init' first)")
        return cls(directory, audit)

    # -- paths ---------------------------------------------------------------------------------
    def ca_cert_path(self, ca: CaName) -> Path:
        return self.directory / "ca" / f"{ca.value}.pem"

    def crl_path(self, ca: CaName, *, pem: bool = False) -> Path:
        return self.directory / "crl" / (f"{ca.value}.crl.pem" if pem else f"{ca.value}.crl")

    def crl_url(self, ca: CaName) -> str:
        """The CRL distribution point written into the certificates ``ca`` issues."""
        base = self._index().crl_base_url
        if base:
            return f"{base}/{ca.value}.crl"
        return self.crl_path(ca).resolve().as_uri()

    def crl_sources(self) -> list[str]:
        """The CRL files of the three CAs, as ``file://`` URIs (for a CrlCache)."""
        return [self.crl_path(ca).resolve().as_uri() for ca in CaName]

    def paths(self) -> PkiPaths:
        index = self._index()
        crls = tuple(
            CrlPaths(
                ca,
                index.crl_numbers.get(ca.value, 0),
                self.crl_path(ca),
                self.crl_path(ca, pem=True),
            )
            for ca in CaName
        )
        ca_dir = self.directory / "ca"
        return PkiPaths(
            ca_dir / "root.pem", ca_dir / "intermediates.pem", ca_dir / "bundle.pem", crls
        )

    def certificate(self, ca: CaName) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.ca_cert_path(ca).read_bytes())

    def entries(self) -> tuple[IndexEntry, ...]:
        return self._index().entries

    # -- issuance ------------------------------------------------------------------------------
    def issue_server(
        self,
        host: str,
        structure_id: IdNatStruct | str,
        organisation: str,
        departement: str,
        days: int = LEAF_DAYS,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        key_usage: x509.KeyUsage | None = None,
        extended_key_usage: Sequence[ObjectIdentifier] | None = None,
    ) -> IssuedPaths:
        """An operator's MTA certificate, used both as TLS server and TLS client."""
        profile = _Profile(
            CertKind.SERVER,
            CaName.ORGANISATIONS,
            key_usage or SERVER_KEY_USAGE,
            _eku(
                extended_key_usage, ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
            ),
            (host,),
        )
        subject = operator_subject(host, structure_id, organisation, departement)
        return self._issue(profile, subject, _Validity.of(days, not_before, not_after), host)

    def issue_application(
        self,
        name: str,
        structure_id: IdNatStruct | str,
        organisation: str,
        departement: str,
        days: int = LEAF_DAYS,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> IssuedPaths:
        """An organisation certificate for the software behind an APP mailbox (TLS client)."""
        profile = _Profile(
            CertKind.APPLICATION,
            CaName.ORGANISATIONS,
            SERVER_KEY_USAGE,
            (ExtendedKeyUsageOID.CLIENT_AUTH,),
        )
        subject = operator_subject(name, structure_id, organisation, departement)
        return self._issue(profile, subject, _Validity.of(days, not_before, not_after), name)

    def issue_person(
        self,
        id_nat: IdNat | str,
        last_name: str,
        first_name: str,
        days: int = LEAF_DAYS,
        *,
        organisation: str | None = None,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        key_usage: x509.KeyUsage | None = None,
        extended_key_usage: Sequence[ObjectIdentifier] | None = None,
    ) -> IssuedPaths:
        """A CPS-like authentication certificate carrying the professional's idNat."""
        profile = _Profile(
            CertKind.PERSON,
            CaName.PERSONNES,
            key_usage or PERSON_KEY_USAGE,
            _eku(extended_key_usage, ExtendedKeyUsageOID.CLIENT_AUTH),
        )
        subject = person_subject(id_nat, last_name, first_name, organisation)
        label = f"{id_nat}-{last_name}"
        return self._issue(profile, subject, _Validity.of(days, not_before, not_after), label)

    def issue_signer(
        self,
        name: str,
        structure_id: IdNatStruct | str,
        organisation: str,
        departement: str,
        days: int = LEAF_DAYS,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        key_usage: x509.KeyUsage | None = None,
        extended_key_usage: Sequence[ObjectIdentifier] | None = None,
    ) -> IssuedPaths:
        """The authority's whitelist-signing certificate (EKU id-kp-documentSigning)."""
        profile = _Profile(
            CertKind.SIGNER,
            CaName.ORGANISATIONS,
            key_usage or SIGNER_KEY_USAGE,
            _eku(extended_key_usage, DOCUMENT_SIGNING),
        )
        subject = operator_subject(name, structure_id, organisation, departement)
        return self._issue(profile, subject, _Validity.of(days, not_before, not_after), name)

    # -- revocation ----------------------------------------------------------------------------
    def revoke(
        self,
        target: int | str | Path,
        reason: x509.ReasonFlags | str = x509.ReasonFlags.unspecified,
        *,
        publish: bool = True,
        at: datetime | None = None,
    ) -> IndexEntry:
        """Mark a certificate revoked, by serial (int, or hex text) or by its PEM file's path.

        With ``publish`` (the default) the CRLs are published again at once.
        """
        flag = _reason(reason)
        index = self._index()
        entry = self._find(index, target)
        if entry.kind is CertKind.ROOT:
            raise PkiError("the root certificate cannot be revoked")
        if entry.revoked_at is not None:
            raise PkiError(f"certificate {entry.serial:X} is already revoked")
        revoked = replace(entry, revoked_at=_utc(at) if at else _now(), reason=flag.value)
        entries = tuple(revoked if e.serial == entry.serial else e for e in index.entries)
        self._save_index(replace(index, entries=entries))
        self._record(
            AuditEvent.CERTIFICATE_REVOKED,
            entry.subject,
            {"serial": format(entry.serial, "X"), "reason": flag.value},
        )
        if publish:
            self.publish_crls()
        return revoked

    def publish_crls(
        self,
        *,
        this_update: datetime | None = None,
        next_update: datetime | None = None,
    ) -> list[CrlPaths]:
        """Sign and write one CRL per CA (root included), DER and PEM. RFC 5280 §5."""
        index = self._index()
        numbers = dict(index.crl_numbers)
        written: list[CrlPaths] = []
        start = _utc(this_update) if this_update else _now()
        end = _utc(next_update) if next_update else start + timedelta(days=CRL_DAYS)
        for ca in CaName:
            numbers[ca.value] = numbers.get(ca.value, 0) + 1
            revoked = [e for e in index.entries if e.issuer is ca and e.revoked_at is not None]
            crl = self._sign_crl(self._authority(ca), revoked, numbers[ca.value], start, end)
            _write_atomic(self.crl_path(ca), crl.public_bytes(serialization.Encoding.DER))
            _write_atomic(self.crl_path(ca, pem=True), crl.public_bytes(serialization.Encoding.PEM))
            written.append(
                CrlPaths(ca, numbers[ca.value], self.crl_path(ca), self.crl_path(ca, pem=True))
            )
        self._save_index(replace(self._index(), crl_numbers=numbers))
        return written

    # -- internals -----------------------------------------------------------------------------
    def _index(self) -> _Index:
        try:
            data = json.loads((self.directory / _INDEX).read_text(encoding="utf-8"))
            return _Index.from_json(data)
        except FileNotFoundError:
            raise PkiError(f"no test PKI in {self.directory}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise PkiError(f"the test PKI's index is damaged: {exc}") from None

    def _save_index(self, index: _Index) -> None:
        text = json.dumps(index.to_json(), indent=2, ensure_ascii=False) + "\n"
        _write_atomic(self.directory / _INDEX, text.encode("utf-8"))

    def _add_entry(self, entry: IndexEntry) -> None:
        index = self._index()
        self._save_index(replace(index, entries=(*index.entries, entry)))

    def _find(self, index: _Index, target: int | str | Path) -> IndexEntry:
        serial = self._serial_of(target)
        for entry in index.entries:
            if entry.serial == serial:
                return entry
        raise PkiError(f"no certificate with serial {serial:X} in this test PKI")

    def _serial_of(self, target: int | str | Path) -> int:
        if isinstance(target, int):
            return target
        path = Path(target)
        if isinstance(target, Path) or path.is_file():
            try:
                return x509.load_pem_x509_certificate(path.read_bytes()).serial_number
            except (OSError, ValueError):
                raise PkiError(f"cannot read a PEM certificate from {path}") from None
        text = str(target).strip().lower().removeprefix("0x").replace(":", "")
        if not re.fullmatch(r"[0-9a-f]+", text):
            raise PkiError(
                f"neither a certificate file nor a hexadecimal serial: {str(target)[:60]!r}"
            )
        return int(text, 16)

    def _authority(self, ca: CaName) -> _Authority:
        key = serialization.load_pem_private_key(
            (self.directory / "ca" / f"{ca.value}.key").read_bytes(), password=None
        )
        if not isinstance(key, rsa.RSAPrivateKey):
            raise PkiError(f"the {ca.value} CA key is not an RSA key")
        return _Authority(ca, self.certificate(ca), key)

    def _record(self, event: AuditEvent, target: str, context: dict[str, Any]) -> None:
        if self._audit is not None:
            self._audit.record(AuditRecord(event, SYSTEM_ACTOR, target, context))

    def _create_root(self) -> _Authority:
        key = _new_key()
        start = _now() - _BACKDATE
        subject = ca_subject(CaName.ROOT)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        builder = (
            _builder(
                subject,
                subject,
                key.public_key(),
                _Validity(start, start + timedelta(days=ROOT_DAYS)),
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(CA_KEY_USAGE, critical=True)
            .add_extension(ski, critical=False)
        )
        cert = builder.sign(key, hashes.SHA256())
        return self._store_ca(_Authority(CaName.ROOT, cert, key), CertKind.ROOT)

    def _create_issuing(self, ca: CaName, root: _Authority) -> _Authority:
        key = _new_key()
        start = _now() - _BACKDATE
        validity = _Validity(start, start + timedelta(days=CA_DAYS))
        builder = (
            _builder(ca_subject(ca), root.cert.subject, key.public_key(), validity)
            # RFC 5280 §4.2.1.9: issuing CAs sign end-entity certificates only.
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(CA_KEY_USAGE, critical=True)
        )
        builder = _add_identifiers(builder, key.public_key(), root.cert)
        builder = builder.add_extension(_crl_dp(self.crl_url(CaName.ROOT)), critical=False)
        cert = builder.sign(root.key, hashes.SHA256())
        return self._store_ca(_Authority(ca, cert, key), CertKind.CA)

    def _store_ca(self, authority: _Authority, kind: CertKind) -> _Authority:
        ca_dir = self.directory / "ca"
        _write_atomic(ca_dir / f"{authority.name.value}.key", _key_pem(authority.key), 0o600)
        _write_atomic(ca_dir / f"{authority.name.value}.pem", _pem(authority.cert))
        self._add_entry(
            IndexEntry(
                serial=authority.cert.serial_number,
                kind=kind,
                issuer=CaName.ROOT,
                subject=dn_string(authority.cert.subject),
                cert=f"ca/{authority.name.value}.pem",
                not_before=authority.cert.not_valid_before_utc,
                not_after=authority.cert.not_valid_after_utc,
            )
        )
        return authority

    def _write_bundles(self) -> None:
        ca_dir = self.directory / "ca"
        root = self.certificate(CaName.ROOT)
        issuing = [self.certificate(CaName.ORGANISATIONS), self.certificate(CaName.PERSONNES)]
        _write_atomic(ca_dir / "intermediates.pem", _pem(*issuing))
        _write_atomic(ca_dir / "bundle.pem", _pem(root, *issuing))

    def _issue(
        self, profile: _Profile, subject: x509.Name, validity: _Validity, label: str
    ) -> IssuedPaths:
        issuer = self._authority(profile.issuer)
        key = _new_key()
        cert = _sign_leaf(
            profile, subject, key, issuer, validity=validity, crl_url=self.crl_url(profile.issuer)
        )
        folder = (
            self.directory
            / "issued"
            / f"{profile.kind.value}-{_slug(label)}-{cert.serial_number:X}"[:64]
        )
        paths = IssuedPaths(
            serial=cert.serial_number,
            kind=profile.kind,
            subject=dn_string(subject),
            cert=folder / "cert.pem",
            key=folder / "key.pem",
            chain=folder / "chain.pem",
            fullchain=folder / "fullchain.pem",
        )
        _write_atomic(paths.key, _key_pem(key), 0o600)
        _write_atomic(paths.cert, _pem(cert))
        _write_atomic(paths.chain, _pem(issuer.cert))
        _write_atomic(paths.fullchain, _pem(cert, issuer.cert))
        self._add_entry(
            IndexEntry(
                serial=cert.serial_number,
                kind=profile.kind,
                issuer=profile.issuer,
                subject=paths.subject,
                cert=str(paths.cert.relative_to(self.directory)),
                not_before=validity.not_before,
                not_after=validity.not_after,
            )
        )
        self._record(
            AuditEvent.CERTIFICATE_ISSUED,
            paths.subject,
            {"serial": format(cert.serial_number, "X"), "kind": profile.kind.value},
        )
        return paths

    @staticmethod
    def _sign_crl(
        authority: _Authority,
        revoked: list[IndexEntry],
        number: int,
        this_update: datetime,
        next_update: datetime,
    ) -> x509.CertificateRevocationList:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(authority.cert.subject)
            .last_update(this_update)
            .next_update(next_update)
            # RFC 5280 §5.2.1 and §5.2.3: authority key identifier and CRL number.
            .add_extension(_aki(authority.cert), critical=False)
            .add_extension(x509.CRLNumber(number), critical=False)
        )
        for entry in revoked:
            builder = builder.add_revoked_certificate(_revoked_entry(entry))
        return builder.sign(authority.key, hashes.SHA256())


# -- certificate building ----------------------------------------------------------------------


def _eku(
    chosen: Sequence[ObjectIdentifier] | None, *default: ObjectIdentifier
) -> tuple[ObjectIdentifier, ...]:
    return tuple(default) if chosen is None else tuple(chosen)


def _reason(reason: x509.ReasonFlags | str) -> x509.ReasonFlags:
    if isinstance(reason, x509.ReasonFlags):
        return reason
    try:
        return x509.ReasonFlags(reason)
    except ValueError:
        choices = ", ".join(f.value for f in x509.ReasonFlags)
        raise PkiError(f"unknown revocation reason {reason[:40]!r} (one of: {choices})") from None


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: rsa.RSAPublicKey, validity: _Validity
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())  # RFC 5280 §4.1.2.2: positive, ≤ 20 octets
        .not_valid_before(validity.not_before)
        .not_valid_after(validity.not_after)
    )


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _add_identifiers(
    builder: x509.CertificateBuilder, public_key: rsa.RSAPublicKey, issuer: x509.Certificate
) -> x509.CertificateBuilder:
    """RFC 5280 §4.2.1.1 and §4.2.1.2: authority and subject key identifiers."""
    return builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
    ).add_extension(_aki(issuer), critical=False)


def _crl_dp(url: str) -> x509.CRLDistributionPoints:
    """RFC 5280 §4.2.1.13: where the issuer's CRL (DER) can be fetched."""
    point = x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(url)],
        relative_name=None,
        reasons=None,
        crl_issuer=None,
    )
    return x509.CRLDistributionPoints([point])


def _sign_leaf(
    profile: _Profile,
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    issuer: _Authority,
    *,
    validity: _Validity,
    crl_url: str,
) -> x509.Certificate:
    builder = (
        _builder(subject, issuer.cert.subject, key.public_key(), validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(profile.key_usage, critical=True)
    )
    if profile.eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(profile.eku)), critical=False)
    if profile.dns_names:
        names = [x509.DNSName(n) for n in profile.dns_names]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    builder = _add_identifiers(builder, key.public_key(), issuer.cert)
    builder = builder.add_extension(_crl_dp(crl_url), critical=False)
    return builder.sign(issuer.key, hashes.SHA256())


def _revoked_entry(entry: IndexEntry) -> x509.RevokedCertificate:
    builder = (
        x509.RevokedCertificateBuilder()
        .serial_number(entry.serial)
        .revocation_date(entry.revoked_at or _now())
    )
    # RFC 5280 §5.3.1: the reason code "unspecified" SHOULD be absent.
    if entry.reason and entry.reason != x509.ReasonFlags.unspecified.value:
        builder = builder.add_extension(
            x509.CRLReason(x509.ReasonFlags(entry.reason)), critical=False
        )
    return builder.build()
