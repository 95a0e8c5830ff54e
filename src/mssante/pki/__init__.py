"""Test health PKI, certificate verification, DN and national-identifier parsing.

Other packages call, and only call, what is exported here:

* :func:`verify_certificate` with a :class:`TrustStore` and a :class:`CrlCache` -- the one
  certificate check of the project (TLS peers, CPS-like client certificates, the whitelist
  signer);
* :func:`dn_string`, :func:`normalise_dn`, :func:`dn_matches`, :func:`parse_operator_dn` -- to
  compare a presented certificate's subject with the DNs of the whitelist;
* :func:`parse_id_nat_struct`, :func:`parse_id_nat` -- national identifiers;
* :class:`TestPki` -- the test IGC-Santé for tests, demos and local trust spaces.
"""

from __future__ import annotations

from mssante.pki.ca import CaName, CertKind, CrlPaths, IssuedPaths, PkiPaths, TestPki
from mssante.pki.crl import CrlCache, CrlRefresh, CrlStatus, RefreshStatus
from mssante.pki.errors import CertificateError, PkiError
from mssante.pki.ids import (
    IdNat,
    IdNatStruct,
    InvalidIdentifier,
    ProfessionalIdKind,
    StructureIdKind,
    parse_id_nat,
    parse_id_nat_struct,
)
from mssante.pki.loading import load_certificate, load_certificates, load_crl
from mssante.pki.names import (
    MalformedDN,
    OperatorDN,
    UnknownDepartement,
    departement_label,
    dn_matches,
    dn_string,
    normalise_dn,
    operator_subject,
    parse_dn,
    parse_operator_dn,
    person_id_nat,
)
from mssante.pki.profiles import Purpose
from mssante.pki.truststore import TrustStore
from mssante.pki.verify import Failure, VerificationResult, fingerprint, verify_certificate

__all__ = [
    "CaName",
    "CertKind",
    "CertificateError",
    "CrlCache",
    "CrlPaths",
    "CrlRefresh",
    "CrlStatus",
    "Failure",
    "IdNat",
    "IdNatStruct",
    "InvalidIdentifier",
    "IssuedPaths",
    "MalformedDN",
    "OperatorDN",
    "PkiError",
    "PkiPaths",
    "ProfessionalIdKind",
    "Purpose",
    "RefreshStatus",
    "StructureIdKind",
    "TestPki",
    "TrustStore",
    "UnknownDepartement",
    "VerificationResult",
    "departement_label",
    "dn_matches",
    "dn_string",
    "fingerprint",
    "load_certificate",
    "load_certificates",
    "load_crl",
    "normalise_dn",
    "operator_subject",
    "parse_dn",
    "parse_id_nat",
    "parse_id_nat_struct",
    "parse_operator_dn",
    "person_id_nat",
    "verify_certificate",
]
