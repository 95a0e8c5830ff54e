"""`mssante pki ...` through click's runner, and once through the real executable."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mssante.cli.main import cli

VERBS = [
    "init",
    "issue-server",
    "issue-person",
    "issue-signer",
    "issue-app",
    "revoke",
    "crl",
    "verify",
]
SERVER_ARGS = [
    "--host", "smtp-1.sante.example.com", "--structure-id", "341459958900028",
    "--organisation", "EXAMPLE HEALTH", "--departement", "33",
]  # fmt: skip
MSSANTE = Path(sys.executable).parent / "mssante"


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["pki", *map(str, args)])


def labelled(output: str) -> dict[str, str]:
    """``label: value`` lines as a dict."""
    return dict(line.split(": ", 1) for line in output.strip().splitlines())


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cli") / "pki"
    result = run("init", "--dir", directory)
    assert result.exit_code == 0, result.output
    return directory


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb: str) -> None:
    result = run(verb, "--help")
    assert result.exit_code == 0
    assert result.output.startswith(f"Usage: cli pki {verb}")


def test_group_help_lists_the_verbs() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for verb in VERBS:
        assert verb in result.output


def test_init_prints_the_paths_it_wrote(tmp_path: Path) -> None:
    result = run("init", "--dir", tmp_path / "p", "--crl-url", "http://crl.example.test")
    assert result.exit_code == 0, result.output
    paths = labelled(result.output)
    assert list(paths)[:3] == ["root", "intermediates", "bundle"]
    assert "crl organisations" in paths and "crl personnes (pem)" in paths
    for value in paths.values():
        assert Path(value).is_file()


def test_init_json(tmp_path: Path) -> None:
    result = run("init", "--dir", tmp_path / "p", "--json")
    data = json.loads(result.output)
    assert Path(data["bundle"]).is_file()
    assert [c["ca"] for c in data["crls"]] == ["root", "organisations", "personnes"]


def test_issue_server_writes_what_openssl_accepts(pki_dir: Path) -> None:
    result = run("issue-server", "--dir", pki_dir, *SERVER_ARGS, "--json")
    assert result.exit_code == 0, result.output
    issued = json.loads(result.output)
    assert issued["subject"] == (
        "CN=smtp-1.sante.example.com,OU=341459958900028,O=EXAMPLE HEALTH,ST=Gironde (33),C=FR"
    )
    assert set(issued) == {"serial", "kind", "subject", "cert", "key", "chain", "fullchain"}
    openssl = shutil.which("openssl")
    if openssl:
        checked = subprocess.run(
            [openssl, "verify", "-CAfile", str(pki_dir / "ca" / "bundle.pem"), issued["cert"]],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_issue_person_signer_and_app_print_labelled_paths(pki_dir: Path) -> None:
    commands = [
        ["issue-person", "--id-nat", "810002909371", "--last-name", "Dupont",
         "--first-name", "Jean"],
        ["issue-signer", "--name", "signer.autorite.test", "--structure-id", "318751275100020",
         "--organisation", "AUTORITE", "--departement", "75"],
        ["issue-app", "--name", "lps.ch-exemple.fr", "--structure-id", "1630013605",
         "--organisation", "CH EXEMPLE", "--departement", "63"],
    ]  # fmt: skip
    for command in commands:
        result = run(command[0], "--dir", pki_dir, *command[1:])
        assert result.exit_code == 0, result.output
        lines = labelled(result.output)
        assert list(lines) == ["serial", "kind", "subject", "cert", "key", "chain", "fullchain"]
        assert Path(lines["key"]).is_file()


def test_verify_revoke_verify(pki_dir: Path) -> None:
    issued = json.loads(run("issue-server", "--dir", pki_dir, *SERVER_ARGS, "--json").output)
    ok = run("verify", issued["cert"], "--dir", pki_dir)
    assert ok.exit_code == 0, ok.output
    assert labelled(ok.output)["ok"] == "yes"
    assert "chain[2]" in labelled(ok.output)

    revoked = run("revoke", "--dir", pki_dir, issued["serial"], "--reason", "keyCompromise")
    assert revoked.exit_code == 0, revoked.output
    assert labelled(revoked.output)["reason"] == "keyCompromise"
    assert "crl organisations" in labelled(revoked.output)

    refused = run("verify", issued["cert"], "--dir", pki_dir, "--json")
    assert refused.exit_code == 1
    data = json.loads(refused.output)
    assert data["ok"] is False and data["failure"] == "revoked"


def test_verify_for_a_purpose_and_a_host(pki_dir: Path) -> None:
    issued = json.loads(run("issue-server", "--dir", pki_dir, *SERVER_ARGS, "--json").output)
    person = run("verify", issued["cert"], "--dir", pki_dir, "--purpose", "person")
    assert person.exit_code == 1
    assert labelled(person.output)["failure"] == "wrong_purpose"
    host = run("verify", issued["cert"], "--dir", pki_dir, "--host", "other.example.com")
    assert labelled(host.output)["failure"] == "name_mismatch"


def test_verify_with_anchors(pki_dir: Path) -> None:
    issued = json.loads(run("issue-server", "--dir", pki_dir, *SERVER_ARGS, "--json").output)
    anchors = ["--anchor", pki_dir / "ca" / "root.pem", "--chain", issued["chain"]]
    no_crl = run("verify", issued["cert"], *anchors)
    assert labelled(no_crl.output)["failure"] == "no_crl"
    unchecked = run("verify", issued["cert"], *anchors, "--no-revocation")
    assert unchecked.exit_code == 0, unchecked.output
    assert labelled(unchecked.output)["detail"] == "revocation not checked"
    crls = ["--intermediate", issued["chain"], "--crl", pki_dir / "crl" / "organisations.crl"]
    checked = run("verify", issued["cert"], "--anchor", pki_dir / "ca" / "root.pem", *crls)
    assert checked.exit_code == 1  # the root's CRL is not given: the CA's revocation is unknown
    with_root = run(
        "verify", issued["cert"], "--anchor", pki_dir / "ca" / "root.pem", *crls,
        "--crl", pki_dir / "crl" / "root.crl",
    )  # fmt: skip
    assert with_root.exit_code == 0, with_root.output


def test_verify_from_the_configuration(pki_dir: Path, tmp_path: Path) -> None:
    issued = json.loads(run("issue-server", "--dir", pki_dir, *SERVER_ARGS, "--json").output)
    config = tmp_path / "mssante.toml"
    crls = ", ".join(
        f'"{(pki_dir / "crl" / n).as_uri()}"' for n in ("root.crl", "organisations.crl")
    )
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        "[pki]\n"
        f'trust_anchors = ["{pki_dir / "ca" / "root.pem"}"]\n'
        f'intermediates = ["{pki_dir / "ca" / "intermediates.pem"}"]\n'
        f"crl_sources = [{crls}]\n",
        encoding="utf-8",
    )
    result = run("verify", issued["cert"], "--config", config)
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "data" / "crl").glob("*.crl"))) == 2


def test_crl_republishes(pki_dir: Path) -> None:
    before = json.loads(run("crl", "--dir", pki_dir, "--json").output)
    after = json.loads(run("crl", "--dir", pki_dir, "--json").output)
    assert [c["number"] + 1 for c in before["crls"]] == [c["number"] for c in after["crls"]]
    assert next(iter(labelled(run("crl", "--dir", pki_dir).output))) == "crl root"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["issue-server", "--dir", "{pki}", *SERVER_ARGS[:2], "--structure-id", "341459958900027",
          "--organisation", "X", "--departement", "33"], "SIRET check key is wrong"),
        (["issue-server", "--dir", "{pki}", *SERVER_ARGS[:-1], "20"], "unknown département"),
        (["issue-person", "--dir", "{pki}", "--id-nat", "1234", "--last-name", "A",
          "--first-name", "B"], "invalid professional identifier"),
        (["issue-server", "--dir", "{missing}", *SERVER_ARGS], "no test PKI"),
        (["init", "--dir", "{pki}"], "already exists"),
        (["revoke", "--dir", "{pki}", "FFFF"], "no certificate with serial FFFF"),
        (["verify", "{pki}/index.json", "--dir", "{pki}"], "is not a valid PEM or DER"),
    ],
)  # fmt: skip
def test_errors_are_one_line_with_status_1(
    pki_dir: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    filled = [a.format(pki=pki_dir, missing=tmp_path / "none") for a in args]
    result = run(*filled)
    assert result.exit_code == 1
    assert message in result.output
    assert result.output.strip().count("\n") == 0
    assert "Traceback" not in result.output


def test_a_bad_time_is_a_usage_error(pki_dir: Path) -> None:
    result = run("verify", pki_dir / "ca" / "root.pem", "--dir", pki_dir, "--at", "yesterday")
    assert result.exit_code == 2
    assert "not an ISO 8601 time" in result.output


@pytest.mark.skipif(not MSSANTE.exists(), reason="the mssante executable is not installed")
def test_the_real_executable(tmp_path: Path) -> None:
    directory = tmp_path / "pki"

    def mssante(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(MSSANTE), "pki", *map(str, args)], capture_output=True, text=True, check=False
        )

    assert mssante("init", "--dir", directory).returncode == 0
    issued = mssante("issue-server", "--dir", directory, *SERVER_ARGS, "--json")
    assert issued.returncode == 0, issued.stderr
    cert = json.loads(issued.stdout)["cert"]
    verified = mssante("verify", cert, "--dir", directory)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "ok: yes" in verified.stdout
    failed = mssante("issue-server", "--dir", tmp_path / "nothing", *SERVER_ARGS)
    assert failed.returncode == 1
    assert "no test PKI" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert failed.stderr.strip().count("\n") == 0
