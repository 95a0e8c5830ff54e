"""`mssante trust inspect` and `mssante trust check`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from trust_helpers import APTA78_DN, SAMPLE, small_whitelist

from mssante.cli.trust import group
from mssante.trust.keeper import XML_NAME
from mssante.trust.xmlformat import write


@pytest.fixture
def closed_file(tmp_path: Path, closed_sample: bytes) -> Path:
    path = tmp_path / "listeblanche.xml"
    path.write_bytes(closed_sample)
    return path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(group, list(args), catch_exceptions=False)
    return result.exit_code, result.output


@pytest.mark.parametrize("verb", [[], ["inspect"], ["check"]])
def test_every_verb_has_help(verb: list[str]) -> None:
    code, output = run(*verb, "--help")
    assert code == 0
    assert "Usage:" in output


def test_inspect_prints_date_count_and_domains(closed_file: Path) -> None:
    code, output = run("inspect", str(closed_file))
    assert code == 0
    lines = output.splitlines()
    assert lines[0] == (
        "whitelist generated 2025-03-13T14:54:10Z: 619 entries, 516 distinct domains"
    )
    assert any(line.startswith("apta78.mssante.fr ") for line in lines)
    assert f"    DN {APTA78_DN}" in lines


def test_inspect_json_lists_every_entry(closed_file: Path) -> None:
    code, output = run("inspect", str(closed_file), "--json")
    assert code == 0
    data = json.loads(output)
    assert data["generated_at"] == "2025-03-13T14:54:10Z"
    assert data["entries"] == len(data["domains"]) == 619
    apta78 = next(d for d in data["domains"] if d["name"] == "apta78.mssante.fr")
    assert apta78["operator_dns"] == [APTA78_DN]
    assert apta78["updated_at"] == "2025-01-22T15:41:55Z"


def test_inspect_of_the_truncated_sample_says_why_in_one_line() -> None:
    code, output = run("inspect", str(SAMPLE))
    assert code == 1
    assert output == (
        "Error: whitelist is truncated: the root element <ListeBlancheMSSante> is not closed "
        "(the data ends at line 4961)\n"
    )


def test_inspect_of_a_missing_file_says_so(tmp_path: Path) -> None:
    code, output = run("inspect", str(tmp_path / "absent.xml"))
    assert code == 1
    assert output == "Error: cannot read whitelist absent.xml: No such file or directory\n"


def test_check_a_listed_domain(closed_file: Path) -> None:
    code, output = run("check", "apta78.mssante.fr", "--list", str(closed_file))
    assert code == 0
    assert output.splitlines() == [
        "trusted: domain 'apta78.mssante.fr' is on the whitelist",
        f"    listed DN: {APTA78_DN}",
    ]


def test_check_a_listed_domain_and_dn(closed_file: Path) -> None:
    code, output = run("check", "APTA78.mssante.fr", "--dn", APTA78_DN, "--list", str(closed_file))
    assert code == 0
    assert output.startswith("trusted: domain 'APTA78.mssante.fr' and certificate DN")


def test_check_an_unlisted_dn_says_why(closed_file: Path) -> None:
    dn = APTA78_DN.replace("smtp-1", "smtp-9")
    code, output = run("check", "apta78.mssante.fr", "--dn", dn, "--list", str(closed_file))
    assert code == 1
    assert output == (
        f"not trusted: certificate DN '{dn}' is not listed for domain 'apta78.mssante.fr'\n"
    )


def test_check_an_unlisted_domain_in_json(closed_file: Path) -> None:
    code, output = run("check", "pirate.example.com", "--list", str(closed_file), "--json")
    assert code == 1
    assert json.loads(output) == {
        "domain": "pirate.example.com",
        "dn": None,
        "trusted": False,
        "reason": "domain_not_listed",
        "message": "domain 'pirate.example.com' is not on the whitelist",
        "list_generated_at": "2025-03-13T14:54:10Z",
    }


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "mssante.toml"
    config.write_text('data_dir = "node"\n[log]\nlevel = "WARNING"\n')
    return config


def test_check_against_the_operator_s_current_list(tmp_path: Path) -> None:
    config = _config(tmp_path)
    cache = tmp_path / "node" / "whitelist"
    cache.mkdir(parents=True)
    (cache / XML_NAME).write_bytes(write(small_whitelist()))
    code, output = run("check", "medecin.mssante.fr", "--config", str(config))
    assert code == 0, output
    assert output.startswith("trusted: domain 'medecin.mssante.fr' is on the whitelist")


def test_check_without_a_current_list_says_so(tmp_path: Path) -> None:
    code, output = run("check", "medecin.mssante.fr", "--config", str(_config(tmp_path)))
    assert code == 1
    assert output == (
        "Error: no whitelist accepted yet: the whitelist cache folder has no listeblanche.xml\n"
    )


def test_check_refuses_both_list_and_config(tmp_path: Path, closed_file: Path) -> None:
    result = CliRunner().invoke(
        group,
        ["check", "x.fr", "--list", str(closed_file), "--config", str(_config(tmp_path))],
    )
    assert result.exit_code == 2
    assert "give --list or --config, not both" in result.output
