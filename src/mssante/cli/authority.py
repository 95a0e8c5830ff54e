"""`mssante authority`: the trust space's registry of operators and its signed whitelist."""

from __future__ import annotations

import asyncio
import getpass
from pathlib import Path

import click

from mssante.authority.publish import Signer
from mssante.authority.registry import Actor, DomainSpec, OperatorSpec
from mssante.authority.service import AuthorityService
from mssante.cli.common import (
    config_option,
    friendly_errors,
    json_option,
    node_from,
    print_json,
    settings_from,
)
from mssante.runtime import Node


@click.group(name="authority")
def group() -> None:
    """The authority: operator registry, whitelist signing and publication over HTTPS."""


def _service(config_path: Path | None) -> AuthorityService:
    node = node_from(config_path)
    return AuthorityService(node, Signer.from_settings(node.settings.authority))


def _cli_actor() -> Actor:
    return Actor(f"cli:{getpass.getuser()}", {"via": "cli"})


@group.command()
@config_option
@friendly_errors
def serve(config_path: Path | None) -> None:
    """Serve the signed whitelist and the registry's JSON API over HTTPS."""
    from mssante.authority.run import run_authority  # noqa: PLC0415 - loads the web stack

    settings = settings_from(config_path)
    asyncio.run(run_authority(settings))


@group.command()
@config_option
@json_option
@friendly_errors
def publish(config_path: Path | None, as_json: bool) -> None:
    """Sign the registry's current whitelist and publish it."""
    service = _service(config_path)
    release = service.publish(_cli_actor())
    _print_release(release.list_path, release.sha256, release.domains, as_json)
    service.node.close()


@group.group(name="operator")
def operator_group() -> None:
    """Register, list and remove operators (each change re-signs the whitelist)."""


@operator_group.command(name="add")
@config_option
@json_option
@click.option("--name", required=True, help="Operator's organisation name (its registry key).")
@click.option("--structure-id", required=True, help="IdNatStruct, e.g. 341459958900028.")
@click.option(
    "--domain", "domains", multiple=True, required=True, help="A mail domain (repeatable)."
)
@click.option(
    "--dn",
    "dns",
    multiple=True,
    required=True,
    help="Certificate subject DN of one of its MTAs (repeatable).",
)
@click.option("--description", default="", help="Description of its domains in the whitelist.")
@click.option("--responsable-contact", default="", help="Contact of the person responsible.")
@click.option("--support-contact", default="", help="Support contact.")
@friendly_errors
def operator_add(
    config_path: Path | None,
    as_json: bool,
    name: str,
    structure_id: str,
    domains: tuple[str, ...],
    dns: tuple[str, ...],
    description: str,
    responsable_contact: str,
    support_contact: str,
) -> None:
    """Register an operator, or replace what it registered; then re-sign and publish."""
    service = _service(config_path)
    spec = OperatorSpec(
        name=name,
        structure_id=structure_id,
        domains=[DomainSpec(d, description) for d in domains],
        certificate_dns=dns,
        responsable_contact=responsable_contact,
        support_contact=support_contact,
    )
    view, release = service.register(spec, _cli_actor())
    if as_json:
        print_json({"operator": view.as_dict(), "whitelist_sha256": release.sha256})
    else:
        click.echo(f"registered {view.name}: {', '.join(view.domains)}")
        _print_release(release.list_path, release.sha256, release.domains, False)
    service.node.close()


@operator_group.command(name="remove")
@config_option
@click.argument("name")
@friendly_errors
def operator_remove(config_path: Path | None, name: str) -> None:
    """Remove an operator and its domains from the trust space; re-sign and publish."""
    service = _service(config_path)
    release = service.remove(name, _cli_actor())
    click.echo(f"removed {name}")
    _print_release(release.list_path, release.sha256, release.domains, False)
    service.node.close()


@operator_group.command(name="list")
@config_option
@json_option
@friendly_errors
def operator_list(config_path: Path | None, as_json: bool) -> None:
    """List registered operators with their domains and certificate DNs."""
    node: Node = node_from(config_path)
    from mssante.authority.registry import Registry  # noqa: PLC0415

    views = Registry(node.db).operators()
    node.close()
    if as_json:
        print_json([v.as_dict() for v in views])
        return
    for v in views:
        click.echo(f"{v.name}  ({v.structure_id})")
        for d in v.domains:
            click.echo(f"  domain  {d}")
        for dn in v.certificate_dns:
            click.echo(f"  dn      {dn}")


def _print_release(path: Path, sha256: str, domains: int, as_json: bool) -> None:
    if as_json:
        print_json({"list": str(path), "sha256": sha256, "domains": domains})
    else:
        click.echo(f"published {path} ({domains} domains, sha256 {sha256})")
