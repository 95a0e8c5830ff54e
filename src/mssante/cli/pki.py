"""`mssante pki`: the test health PKI (a look-alike of IGC-Santé) and certificate checks."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from cryptography import x509

from mssante.cli.common import (
    config_option,
    friendly_errors,
    json_option,
    print_json,
    settings_from,
)
from mssante.pki import (
    CrlCache,
    CrlPaths,
    CrlRefresh,
    IssuedPaths,
    PkiPaths,
    Purpose,
    RefreshStatus,
    TestPki,
    TrustStore,
    VerificationResult,
    load_certificate,
    load_certificates,
    verify_certificate,
)

F = TypeVar("F", bound=Callable[..., Any])

_REASONS = tuple(flag.value for flag in x509.ReasonFlags)


def _dir_option(func: F) -> F:
    return click.option(
        "--dir",
        "directory",
        required=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Folder of the test PKI.",
    )(func)


def _days_option(func: F) -> F:
    return click.option(
        "--days", default=1095, show_default=True, type=click.IntRange(1), help="Validity in days."
    )(func)


def _operator_options(func: F) -> F:
    for option in reversed(
        [
            click.option(
                "--structure-id",
                required=True,
                help="IdNatStruct of the organisation (OU), e.g. 341459958900028.",
            ),
            click.option("--organisation", required=True, help="Organisation name (O)."),
            click.option(
                "--departement", required=True, help="Département code (ST), e.g. 33, 2A, 971."
            ),
        ]
    ):
        func = option(func)
    return func


@click.group(name="pki")
def group() -> None:
    """Test health PKI (IGC-Santé look-alike) and certificate verification.

    The test PKI has a root, an ORGANISATIONS CA (operator, application and signing
    certificates) and a PERSONNES CA (CPS-like certificates). For tests and local trust
    spaces only: its keys are stored unencrypted.
    """


# -- output ------------------------------------------------------------------------------------


def _emit(as_json: bool, data: dict[str, Any], lines: Iterable[tuple[str, object]]) -> None:
    if as_json:
        print_json(data)
        return
    for label, value in lines:
        click.echo(f"{label}: {value}")


def _crl_lines(crls: Iterable[CrlPaths]) -> list[tuple[str, object]]:
    lines: list[tuple[str, object]] = []
    for crl in crls:
        lines += [(f"crl {crl.ca.value}", crl.der), (f"crl {crl.ca.value} (pem)", crl.pem)]
    return lines


def _crl_dicts(crls: Iterable[CrlPaths]) -> list[dict[str, Any]]:
    return [
        {"ca": c.ca.value, "number": c.number, "der": str(c.der), "pem": str(c.pem)} for c in crls
    ]


def _paths_output(paths: PkiPaths, as_json: bool) -> None:
    data = {
        "root": str(paths.root),
        "intermediates": str(paths.intermediates),
        "bundle": str(paths.bundle),
        "crls": _crl_dicts(paths.crls),
    }
    lines = [
        ("root", paths.root),
        ("intermediates", paths.intermediates),
        ("bundle", paths.bundle),
        *_crl_lines(paths.crls),
    ]
    _emit(as_json, data, lines)


def _issued_output(issued: IssuedPaths, as_json: bool) -> None:
    _emit(as_json, issued.as_dict(), issued.as_dict().items())


# -- verbs -------------------------------------------------------------------------------------


@group.command("init")
@_dir_option
@click.option(
    "--crl-url",
    default=None,
    help="Base URL of the CRLs written into certificates (http(s):// or file://). "
    "Default: file:// URIs of the CRL files in DIR/crl.",
)
@json_option
@friendly_errors
def init_command(directory: Path, crl_url: str | None, as_json: bool) -> None:
    """Create a test PKI in DIR: root, issuing CAs, first CRLs."""
    pki = TestPki.init(directory, crl_base_url=crl_url)
    _paths_output(pki.paths(), as_json)


@group.command("issue-server")
@_dir_option
@click.option("--host", required=True, help="Host name of the MTA (CN and subjectAltName).")
@_operator_options
@_days_option
@json_option
@friendly_errors
def issue_server_command(
    *,
    directory: Path,
    host: str,
    structure_id: str,
    organisation: str,
    departement: str,
    days: int,
    as_json: bool,
) -> None:
    """Issue an operator's MTA certificate (TLS server and client)."""
    pki = TestPki.load(directory)
    _issued_output(pki.issue_server(host, structure_id, organisation, departement, days), as_json)


@group.command("issue-person")
@_dir_option
@click.option("--id-nat", required=True, help="The professional's idNat: 8+RPPS or 0+ADELI.")
@click.option("--last-name", required=True, help="Last name (SN).")
@click.option("--first-name", required=True, help="First name (GN).")
@click.option("--organisation", default=None, help="Organisation (O), if any.")
@_days_option
@json_option
@friendly_errors
def issue_person_command(
    *,
    directory: Path,
    id_nat: str,
    last_name: str,
    first_name: str,
    organisation: str | None,
    days: int,
    as_json: bool,
) -> None:
    """Issue a CPS-like personal authentication certificate."""
    pki = TestPki.load(directory)
    issued = pki.issue_person(id_nat, last_name, first_name, days, organisation=organisation)
    _issued_output(issued, as_json)


@group.command("issue-signer")
@_dir_option
@click.option("--name", required=True, help="CN of the signing certificate.")
@_operator_options
@_days_option
@json_option
@friendly_errors
def issue_signer_command(
    *,
    directory: Path,
    name: str,
    structure_id: str,
    organisation: str,
    departement: str,
    days: int,
    as_json: bool,
) -> None:
    """Issue the authority's whitelist-signing certificate."""
    pki = TestPki.load(directory)
    _issued_output(pki.issue_signer(name, structure_id, organisation, departement, days), as_json)


@group.command("issue-app")
@_dir_option
@click.option("--name", required=True, help="CN: the application's name (a host-like label).")
@_operator_options
@_days_option
@json_option
@friendly_errors
def issue_app_command(
    *,
    directory: Path,
    name: str,
    structure_id: str,
    organisation: str,
    departement: str,
    days: int,
    as_json: bool,
) -> None:
    """Issue an organisation certificate for the software of an APP mailbox (TLS client)."""
    pki = TestPki.load(directory)
    issued = pki.issue_application(name, structure_id, organisation, departement, days)
    _issued_output(issued, as_json)


@group.command("revoke")
@_dir_option
@click.argument("target")
@click.option(
    "--reason",
    default="unspecified",
    show_default=True,
    type=click.Choice(_REASONS),
    help="RFC 5280 revocation reason.",
)
@json_option
@friendly_errors
def revoke_command(directory: Path, target: str, reason: str, as_json: bool) -> None:
    """Revoke TARGET (a hexadecimal serial or a certificate file) and publish the CRLs."""
    pki = TestPki.load(directory)
    entry = pki.revoke(target, reason, publish=False)
    crls = pki.publish_crls()
    data = {
        "serial": format(entry.serial, "X"),
        "subject": entry.subject,
        "reason": entry.reason,
        "revoked_at": entry.revoked_at.isoformat() if entry.revoked_at else None,
        "crls": _crl_dicts(crls),
    }
    lines = [
        ("serial", data["serial"]),
        ("subject", entry.subject),
        ("reason", entry.reason),
        ("revoked_at", data["revoked_at"]),
        *_crl_lines(crls),
    ]
    _emit(as_json, data, lines)


@group.command("crl")
@_dir_option
@json_option
@friendly_errors
def crl_command(directory: Path, as_json: bool) -> None:
    """Sign and publish the CRLs of the three CAs again (new thisUpdate and nextUpdate)."""
    crls = TestPki.load(directory).publish_crls()
    _emit(as_json, {"crls": _crl_dicts(crls)}, _crl_lines(crls))


@group.command("verify")
@click.argument("cert", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Trust this test PKI (its root, issuing CAs and CRLs).",
)
@click.option(
    "--anchor",
    "anchors",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM file of trusted roots (repeatable). Without --dir or --anchor: the configuration.",
)
@click.option(
    "--intermediate",
    "intermediates",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM file of intermediate CAs (repeatable).",
)
@click.option("--crl", "crl_sources", multiple=True, help="CRL file or URL (repeatable).")
@click.option(
    "--chain",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM file of intermediates presented with the certificate.",
)
@click.option(
    "--purpose",
    type=click.Choice([p.value for p in Purpose]),
    default=Purpose.SERVER.value,
    show_default=True,
    help="What the certificate is checked for.",
)
@click.option("--host", default=None, help="Also require the certificate to name this host.")
@click.option("--at", "at_text", default=None, help="Check at this ISO 8601 time, not now.")
@click.option("--no-revocation", is_flag=True, help="Do not check CRLs.")
@config_option
@json_option
@friendly_errors
def verify_command(
    *,
    cert: Path,
    directory: Path | None,
    anchors: tuple[Path, ...],
    intermediates: tuple[Path, ...],
    crl_sources: tuple[str, ...],
    chain: Path | None,
    purpose: str,
    host: str | None,
    at_text: str | None,
    no_revocation: bool,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """Verify CERT (PEM or DER) and print the result; exit status 1 if it is refused."""
    at = _parse_time(at_text)
    certificate = load_certificate(cert)
    presented = load_certificates(chain) if chain else []
    with tempfile.TemporaryDirectory(prefix="mssante-crl-") as scratch:
        trust, crls = _trust_and_crls(
            directory=directory,
            anchors=anchors,
            intermediates=intermediates,
            crl_sources=crl_sources,
            config_path=config_path,
            scratch=Path(scratch),
        )
        refreshed = crls.refresh() if crls is not None and not no_revocation else []
        result = verify_certificate(
            certificate,
            purpose=Purpose(purpose),
            trust=trust,
            crls=None if no_revocation else crls,
            presented_chain=presented,
            at=at,
            dns_name=host,
        )
    _verification_output(result, refreshed, as_json)
    if not result.ok:
        sys.exit(1)


def _parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 time: {text!r}", param_hint="--at") from None


def _trust_and_crls(
    *,
    directory: Path | None,
    anchors: tuple[Path, ...],
    intermediates: tuple[Path, ...],
    crl_sources: tuple[str, ...],
    config_path: Path | None,
    scratch: Path,
) -> tuple[TrustStore, CrlCache]:
    if directory is not None:
        pki = TestPki.load(directory)
        paths = pki.paths()
        trust = TrustStore.from_pem_files(
            [paths.root, *anchors], [paths.intermediates, *intermediates]
        )
        return trust, CrlCache(scratch, [*pki.crl_sources(), *crl_sources], trust)
    if anchors:
        trust = TrustStore.from_pem_files(list(anchors), list(intermediates))
        return trust, CrlCache(scratch, list(crl_sources), trust)
    settings = settings_from(config_path)
    trust = TrustStore.from_settings(settings.pki)
    return trust, CrlCache.from_settings(settings, trust)


def _verification_output(
    result: VerificationResult, refreshed: list[CrlRefresh], as_json: bool
) -> None:
    problems = [
        r for r in refreshed if r.status in (RefreshStatus.FAILED, RefreshStatus.KEPT_LAST_VALID)
    ]
    data = {**result.as_dict(), "crl_refresh": [r.as_dict() for r in refreshed]}
    lines: list[tuple[str, object]] = [
        ("ok", "yes" if result.ok else "no"),
        ("subject", result.subject_dn),
        ("reason", result.reason),
    ]
    if result.failure is not None:
        lines.append(("failure", result.failure.value))
    lines += [(f"chain[{i}]", subject) for i, subject in enumerate(data["chain"])]
    if result.detail:
        lines.append(("detail", result.detail))
    lines += [(f"crl {r.status.value}", f"{r.source}: {r.detail}") for r in problems]
    _emit(as_json, data, lines)
