"""The one certificate check of the project: :func:`verify_certificate`.

Chain building, signatures, validity dates, basic constraints and key usages are decided by
``cryptography.x509.verification`` (a maintained RFC 5280 path validator), configured per
:class:`Purpose` with extension policies. Two parts are written here, because the library does
not do them:

* revocation (RFC 5280 §6.3), from the CRLs of a :class:`~mssante.pki.crl.CrlCache`;
* the explanation of a refusal: the library says *that* a chain is invalid in free text; a
  second pass below names *why* (:class:`Failure`) for logs and SMTP replies. That pass never
  accepts anything: only the library's success does.

:func:`verify_certificate` never raises on a bad certificate; it returns a failing result.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mssante.logging import get_logger
from mssante.pki.crl import CrlCache, CrlStatus
from mssante.pki.loading import load_certificate, load_certificates
from mssante.pki.names import MalformedDN, dn_string, person_id_nat
from mssante.pki.profiles import PURPOSE_EKU, PURPOSE_KEY_USAGE, PURPOSE_TEXT, Purpose
from mssante.pki.truststore import TrustStore

__all__ = [
    "Failure",
    "Purpose",
    "TrustStore",
    "VerificationResult",
    "fingerprint",
    "load_certificate",
    "load_certificates",
    "verify_certificate",
]

MAX_CHAIN_DEPTH = 8


class Failure(StrEnum):
    """Why a certificate was refused."""

    MALFORMED = "malformed"
    SELF_SIGNED = "self_signed"
    UNKNOWN_ISSUER = "unknown_issuer"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_KEY_USAGE = "wrong_key_usage"
    WRONG_PURPOSE = "wrong_purpose"
    NAME_MISMATCH = "name_mismatch"
    REVOKED = "revoked"
    NO_CRL = "no_crl"
    INVALID_CHAIN = "invalid_chain"  # refused by the validator for a reason not named above


@dataclass(frozen=True)
class VerificationResult:
    """The outcome. ``reason`` is one line safe to show a peer; ``detail`` is for the log."""

    ok: bool
    failure: Failure | None
    reason: str
    subject_dn: str
    chain: tuple[x509.Certificate, ...] = ()
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failure": self.failure.value if self.failure else None,
            "reason": self.reason,
            "subject": self.subject_dn,
            "chain": [dn_string(c.subject) for c in self.chain],
            "detail": self.detail,
        }


@dataclass(frozen=True)
class _Problem:
    failure: Failure
    reason: str


@dataclass(frozen=True)
class _Request:
    cert: x509.Certificate
    purpose: Purpose
    trust: TrustStore
    presented: tuple[x509.Certificate, ...]
    at: datetime
    dns_name: str | None


def verify_certificate(
    cert: x509.Certificate,
    *,
    purpose: Purpose,
    trust: TrustStore,
    crls: CrlCache | None,
    presented_chain: Sequence[x509.Certificate] = (),
    at: datetime | None = None,
    dns_name: str | None = None,
) -> VerificationResult:
    """Check ``cert`` for ``purpose`` at time ``at`` (default: now).

    ``presented_chain``: intermediates sent by the peer (added to the trust store's own).
    ``crls``: None skips the revocation check (the result's detail says so); otherwise every
    certificate of the chain below the anchor must be absent from its issuer's CRL, and, if the
    cache has ``require_revocation_check``, such a CRL must be at hand.
    ``dns_name``: for SERVER, also require that the certificate names this host (subjectAltName).
    """
    moment = _utc(at) if at else datetime.now(UTC)
    request = _Request(cert, purpose, trust, tuple(presented_chain), moment, dns_name)
    try:
        return _verify(request, crls)
    except Exception as exc:  # a certificate that breaks a parser is refused, not raised
        get_logger("mssante.pki.verify").warning(
            "certificate.unprocessable", error=type(exc).__name__, subject=_safe_subject(cert)
        )
        return VerificationResult(
            ok=False,
            failure=Failure.MALFORMED,
            reason="certificate could not be processed",
            subject_dn=_safe_subject(cert),
            detail=f"{type(exc).__name__}: {exc}",
        )


def _verify(request: _Request, crls: CrlCache | None) -> VerificationResult:
    subject = dn_string(request.cert.subject)
    malformed = _malformed(request.cert)
    if malformed:
        return _refused(_Problem(Failure.MALFORMED, malformed), subject)
    outcome = _library_verify(request)
    if isinstance(outcome, str):
        return _refused(_explain(request), subject, detail=f"validator: {outcome}")
    wrong_subject = _subject_problem(request)
    if wrong_subject:
        return _refused(wrong_subject, subject)
    return _with_revocation(request, tuple(outcome), crls, subject)


def _refused(problem: _Problem, subject: str, detail: str = "") -> VerificationResult:
    return VerificationResult(False, problem.failure, problem.reason, subject, (), detail)


# -- the library's validation ------------------------------------------------------------------


def _library_verify(request: _Request) -> list[x509.Certificate] | str:
    """The verified chain (leaf first, anchor last), or the validator's refusal message."""
    builder = (
        verification.PolicyBuilder()
        .store(request.trust.library_store())
        .time(request.at)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=_ee_policy(request.purpose, check_host=request.dns_name is not None),
        )
    )
    intermediates = [*request.presented, *request.trust.intermediates]
    try:
        if request.dns_name is None:
            return builder.build_client_verifier().verify(request.cert, intermediates).chain
        server = builder.build_server_verifier(x509.DNSName(request.dns_name))
    except verification.VerificationError as exc:
        return str(exc)
    except ValueError:  # the host name asked for is not a valid DNS name
        return f"invalid host name {request.dns_name!r}"
    try:
        return server.verify(request.cert, intermediates)
    except verification.VerificationError as exc:
        return str(exc)


def _ee_policy(purpose: Purpose, *, check_host: bool) -> verification.ExtensionPolicy:
    """Web-PKI rules for end entities, with this project's key usages for ``purpose``.

    The web-PKI default requires a subjectAltName (person and signer certificates have none)
    and checks the extended key usage against the verifier kind; both are replaced here. When
    a host name is checked, the default subjectAltName rule (which matches it) is kept.
    """
    agnostic = verification.Criticality.AGNOSTIC
    policy = (
        verification.ExtensionPolicy.webpki_defaults_ee()
        .require_present(x509.KeyUsage, agnostic, _raiser(_key_usage_problem, purpose))
        .require_present(x509.ExtendedKeyUsage, agnostic, _raiser(_eku_problem, purpose))
    )
    if not check_host:
        policy = policy.may_be_present(x509.SubjectAlternativeName, agnostic, None)
    return policy


_E = Any  # an extension value; the validator callbacks are typed loosely by the library


def _raiser(
    check: Callable[[_E, Purpose], str | None], purpose: Purpose
) -> Callable[[verification.Policy, x509.Certificate, _E], None]:
    def validator(_: verification.Policy, __: x509.Certificate, value: _E) -> None:
        problem = check(value, purpose)
        if problem:
            raise ValueError(problem)

    return validator


# -- purpose rules (shared by the validator and the explanation) ------------------------------


def _key_usage_problem(usage: x509.KeyUsage | None, purpose: Purpose) -> str | None:
    """RFC 5280 §4.2.1.3."""
    if usage is None:
        return "certificate has no key usage extension"
    missing = [bit for bit in PURPOSE_KEY_USAGE[purpose] if not getattr(usage, bit)]
    if missing:
        return f"key usage does not allow {', '.join(_camel(m) for m in missing)}"
    if usage.key_cert_sign or usage.crl_sign:
        return "key usage of an end-entity certificate allows signing certificates"
    return None


def _eku_problem(usage: x509.ExtendedKeyUsage | None, purpose: Purpose) -> str | None:
    """RFC 5280 §4.2.1.12: the purpose must be listed (the extension is required here)."""
    wanted = PURPOSE_EKU[purpose]
    if usage is None or (
        wanted not in usage and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usage
    ):
        return f"certificate is not for {PURPOSE_TEXT[purpose]} (extended key usage)"
    return None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _subject_problem(request: _Request) -> _Problem | None:
    """A person certificate must name the professional by idNat (the library cannot say so)."""
    if request.purpose is not Purpose.PERSON:
        return None
    try:
        person_id_nat(request.cert.subject)
    except MalformedDN:
        return _Problem(Failure.WRONG_PURPOSE, "certificate carries no professional idNat")
    return None


# -- explaining a refusal ----------------------------------------------------------------------


def _explain(request: _Request) -> _Problem:
    """Name the reason of the validator's refusal. Runs only after a refusal."""
    for check in (_self_signed, _path_problem, _leaf_problem):
        problem = check(request)
        if problem:
            return problem
    return _Problem(Failure.INVALID_CHAIN, "certificate chain rejected")


def _self_signed(request: _Request) -> _Problem | None:
    cert = request.cert
    if cert.issuer != cert.subject or request.trust.is_anchor(cert):
        return None
    if _signed_by(cert, cert):
        return _Problem(Failure.SELF_SIGNED, "certificate is self-signed and not a trusted root")
    return None


def _path_problem(request: _Request) -> _Problem | None:
    """Walk up from the leaf to an anchor by name, key identifier and signature; then dates."""
    path = [request.cert]
    while not request.trust.is_anchor(path[-1]):
        if len(path) > MAX_CHAIN_DEPTH:
            return _Problem(Failure.INVALID_CHAIN, "certificate chain is too long")
        step = _issuer_step(request, path[-1], leaf=len(path) == 1)
        if isinstance(step, _Problem):
            return step
        path.append(step)
    for position, cert in enumerate(path):
        problem = _date_problem(cert, request.at, leaf=position == 0)
        problem = problem or (None if position == 0 else _ca_problem(cert))
        if problem:
            return problem
    return None


def _issuer_step(
    request: _Request, cert: x509.Certificate, *, leaf: bool
) -> x509.Certificate | _Problem:
    who = "certificate" if leaf else f"CA '{_cn(cert.subject)}'"
    pool = [*request.trust.anchors, *request.trust.intermediates, *request.presented]
    named = [c for c in pool if c.subject == cert.issuer and c is not cert]
    if not named:
        return _Problem(
            Failure.UNKNOWN_ISSUER, f"{who}: issuer '{_cn(cert.issuer)}' is not trusted"
        )
    keyed = [c for c in named if _key_ids_agree(cert, c)]
    if not keyed:  # same name, other key: an unrelated CA using the same name
        return _Problem(
            Failure.UNKNOWN_ISSUER,
            f"{who}: issued by an unknown CA named '{_cn(cert.issuer)}' (its key is not trusted)",
        )
    for candidate in keyed:
        if _signed_by(cert, candidate):
            return candidate
    return _Problem(
        Failure.BAD_SIGNATURE, f"{who}: signature does not verify with its issuer's key"
    )


def _date_problem(cert: x509.Certificate, at: datetime, *, leaf: bool) -> _Problem | None:
    """RFC 5280 §6.1.3 (a)(2): the validity period includes the time of verification."""
    who = "certificate" if leaf else f"issuing CA '{_cn(cert.subject)}'"
    if cert.not_valid_after_utc < at:
        return _Problem(Failure.EXPIRED, f"{who} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    if cert.not_valid_before_utc > at:
        return _Problem(
            Failure.NOT_YET_VALID, f"{who} is not valid before {cert.not_valid_before_utc:%Y-%m-%d}"
        )
    return None


def _ca_problem(cert: x509.Certificate) -> _Problem | None:
    """RFC 5280 §4.2.1.9, §4.2.1.3: an issuer must be a CA whose key may sign certificates."""
    constraints = _extension(cert, x509.BasicConstraints)
    usage = _extension(cert, x509.KeyUsage)
    if constraints is None or not constraints.ca or (usage is not None and not usage.key_cert_sign):
        return _Problem(
            Failure.WRONG_KEY_USAGE, f"'{_cn(cert.subject)}' is not allowed to issue certificates"
        )
    return None


def _leaf_problem(request: _Request) -> _Problem | None:
    cert = request.cert
    constraints = _extension(cert, x509.BasicConstraints)
    if constraints is not None and constraints.ca:
        return _Problem(Failure.WRONG_PURPOSE, "a CA certificate is not an end-entity certificate")
    usage = _key_usage_problem(_extension(cert, x509.KeyUsage), request.purpose)
    if usage:
        return _Problem(Failure.WRONG_KEY_USAGE, usage)
    purpose = _eku_problem(_extension(cert, x509.ExtendedKeyUsage), request.purpose)
    if purpose:
        return _Problem(Failure.WRONG_PURPOSE, purpose)
    if request.dns_name is not None:
        return _Problem(
            Failure.NAME_MISMATCH, f"certificate is not valid for host {request.dns_name}"
        )
    return None


# -- revocation: RFC 5280 §6.3 ------------------------------------------------------------------


def _with_revocation(
    request: _Request, chain: tuple[x509.Certificate, ...], crls: CrlCache | None, subject: str
) -> VerificationResult:
    valid = f"certificate valid for {PURPOSE_TEXT[request.purpose]}"
    if crls is None:
        return VerificationResult(True, None, valid, subject, chain, "revocation not checked")
    notes: list[str] = []
    # The anchor (last) is trusted as it is; every other certificate is checked on its
    # issuer's CRL.
    for position, (cert, issuer) in enumerate(itertools.pairwise(chain)):
        status = crls.lookup(issuer, request.at, cert)
        if status is None and not crls.require_revocation_check:
            notes.append(f"no CRL for '{_cn(issuer.subject)}': revocation not checked")
            continue
        if status is not None and status.note():
            notes.append(status.note())
        problem = _revocation_problem(cert, issuer, status, leaf=position == 0)
        if problem:
            result = VerificationResult(False, problem.failure, problem.reason, subject, chain)
            return _noted(result, notes)
    return _noted(VerificationResult(True, None, valid, subject, chain), notes)


def _revocation_problem(
    cert: x509.Certificate, issuer: x509.Certificate, status: CrlStatus | None, *, leaf: bool
) -> _Problem | None:
    """RFC 5280 §6.3.3 (i), (j): the certificate's serial on its issuer's CRL."""
    if status is None:
        return _Problem(Failure.NO_CRL, f"no valid CRL of '{_cn(issuer.subject)}' at hand")
    revoked = status.crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    reason = _revocation_reason(revoked) if revoked is not None else None
    if revoked is None or reason == x509.ReasonFlags.remove_from_crl:
        return None
    who = "certificate" if leaf else f"issuing CA '{_cn(cert.subject)}'"
    why = f" ({reason.value})" if reason else ""
    return _Problem(
        Failure.REVOKED, f"{who} revoked on {revoked.revocation_date_utc:%Y-%m-%d}{why}"
    )


def _revocation_reason(revoked: x509.RevokedCertificate) -> x509.ReasonFlags | None:
    try:
        return revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return None


def _noted(result: VerificationResult, notes: list[str]) -> VerificationResult:
    detail = "; ".join([result.detail, *notes] if result.detail else notes)
    return VerificationResult(
        result.ok, result.failure, result.reason, result.subject_dn, result.chain, detail
    )


# -- helpers -----------------------------------------------------------------------------------


def _malformed(cert: x509.Certificate) -> str | None:
    """Fields the parser reads lazily; a failure here means the certificate is malformed."""
    try:
        list(cert.extensions)
        cert.public_key()
        _ = cert.not_valid_after_utc
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        return "certificate is malformed (its extensions or key cannot be read)"
    return None


def _extension(cert: x509.Certificate, kind: type[Any]) -> Any:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _key_ids_agree(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """RFC 5280 §4.2.1.1: the AKI key identifier, when present, names the issuer's SKI."""
    aki = _extension(cert, x509.AuthorityKeyIdentifier)
    ski = _extension(issuer, x509.SubjectKeyIdentifier)
    if aki is None or aki.key_identifier is None or ski is None:
        return True
    return bool(aki.key_identifier == ski.digest)


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _cn(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else dn_string(name)


def _safe_subject(cert: x509.Certificate) -> str:
    try:
        return dn_string(cert.subject)
    except Exception:  # even the subject may be unreadable
        return ""


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, hex: how logs name a certificate."""
    return cert.fingerprint(hashes.SHA256()).hex()
