"""`mssante directory`: the national directory — import, export, search, synthesise, fetch."""

from __future__ import annotations

import getpass
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from mssante.cli.common import (
    config_option,
    friendly_errors,
    json_option,
    node_from,
    print_json,
)

_STAGES = {
    "stage": "lecture / reading",
    "merge": "fusion / merging",
    "words": "index de recherche / search index",
    "commit": "validation / commit",
}


@click.group(name="directory")
def group() -> None:
    """L'annuaire national / the national directory: import, export, search (docs/directory.md)."""


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )


class _Bar:
    """Draws an import's progress: bytes read of the file, lines per second, the stage."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress = progress
        self.task: TaskID = progress.add_task(_STAGES["stage"], total=total, rate="")
        self.started = time.monotonic()

    def stage(self, name: str) -> None:
        self.progress.update(self.task, description=_STAGES.get(name, name))

    def advance(self, bytes_read: int, lines: int) -> None:
        rate = lines / max(time.monotonic() - self.started, 1e-6)
        self.progress.update(self.task, completed=bytes_read, rate=f"{rate:,.0f} lignes/s")


@group.command(name="import")
@config_option
@json_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@friendly_errors
def import_(config_path: Path | None, as_json: bool, file: Path) -> None:
    """Importer une extraction / import an extraction (Extraction_Correspondance_MSSante_*.txt).

    Adds new mailboxes, updates changed ones, removes those no longer in the file (never those
    an operator published). Bad lines are reported and skipped.
    """
    from mssante.directory.importer import import_extraction  # noqa: PLC0415

    node = node_from(config_path, creates=True)  # a first import fills a new node
    settings = node.settings
    try:
        with _progress(Console(stderr=True)) as progress:
            bar = _Bar(progress, file.stat().st_size)
            summary = import_extraction(
                node.db, file, settings.directory, actor=_actor(), observer=bar
            )
    finally:
        node.close()
    if as_json:
        print_json(summary.as_dict())
    else:
        for line in summary.text():
            click.echo(line)


@group.command()
@config_option
@json_option
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@friendly_errors
def export(config_path: Path | None, as_json: bool, file: Path) -> None:
    """Exporter l'annuaire / export the directory in the extraction's format (liste rouge left out)."""
    from mssante.directory.export import export_extraction  # noqa: PLC0415

    node = node_from(config_path)
    try:
        summary = export_extraction(node.db, file, actor=_actor())
    finally:
        node.close()
    if as_json:
        print_json(summary.as_dict())
    else:
        click.echo(f"{summary.path} : {summary.lines} lignes / lines (sha256 {summary.sha256})")


@group.command()
@config_option
@json_option
@click.option("--limit", type=int, default=None, help="Résultats / results (default 10).")
@click.argument("text")
@friendly_errors
def search(config_path: Path | None, as_json: bool, limit: int | None, text: str) -> None:
    """Chercher / search: names, addresses, structures; each word a prefix, accents ignored."""
    from mssante.directory.search import DirectorySearch  # noqa: PLC0415

    node = node_from(config_path)
    settings = node.settings
    try:
        results = DirectorySearch(node.db, settings.directory).search(text, limit)
    finally:
        node.close()
    if as_json:
        print_json({"query": text, "results": [r.as_dict() for r in results]})
        return
    if not results:
        click.echo("aucun résultat / no result")
    for r in results:
        who = " ".join(x for x in (r.civilite, r.prenom, r.nom) if x) or r.structure
        where = " ".join(x for x in (r.postal_code, r.city) if x)
        click.echo(f"{r.address}  {r.type}  {who}  {r.profession}  {r.structure}  {where}")


@group.command()
@click.option("--lines", type=click.IntRange(1), required=True, help="Lignes / mailboxes.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--seed", type=int, default=1, show_default=True, help="Same seed, same file.")
@friendly_errors
def synth(lines: int, output: Path, seed: int) -> None:
    """Fabriquer une extraction réaliste / write a realistic synthetic extraction (tests, bench)."""
    from mssante.directory.synth import write_synthetic  # noqa: PLC0415

    console = Console(stderr=True)
    with Progress(
        TextColumn("synthèse / synthesis"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,}"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task("synth", total=lines)
        written = write_synthetic(output, lines, seed, lambda n: progress.advance(task, n))
    click.echo(f"{output} : {written} lignes / lines (seed {seed})")


@group.command()
@config_option
@json_option
@friendly_errors
def fetch(config_path: Path | None, as_json: bool) -> None:
    """Opérateur : copie locale / operator: download the authority's extraction and import it."""
    from mssante.directory.fetch import fetch_and_import  # noqa: PLC0415

    node = node_from(config_path)
    try:
        with _progress(Console(stderr=True)) as progress:
            bar = _Bar(progress, 0)
            outcome = fetch_and_import(node, actor=_actor(), observer=bar)
    finally:
        node.close()
    if outcome.summary is None and as_json:
        print_json({"unchanged": True})
    elif outcome.summary is None:
        click.echo("annuaire inchangé / directory unchanged")
    elif as_json:
        print_json(outcome.summary.as_dict())
    else:
        for line in outcome.summary.text():
            click.echo(line)
