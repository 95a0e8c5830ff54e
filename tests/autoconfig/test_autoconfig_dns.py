"""`mssante dns records`: zone lines that parse, with RFC 6186 / RFC 8314 SRV records."""

from __future__ import annotations

import json
from pathlib import Path

import dns.rdatatype
import dns.zone
import pytest
from click.testing import CliRunner

from mssante.autoconfig.dns import zone_records, zone_text
from mssante.cli.main import cli
from mssante.config import OperatorSettings, Settings, SmtpSettings

DOMAIN = "hopital-nord.mssante.test"
HOST = "mail.hopital-nord.mssante.test."


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        operator=OperatorSettings(name="HOPITAL NORD", domains=[DOMAIN]),
        smtp=SmtpSettings(hostname="mail.hopital-nord.mssante.test"),
    )


def _zone(text: str) -> dns.zone.Zone:
    return dns.zone.from_text(text, origin=f"{DOMAIN}.", relativize=False, check_origin=False)


def _srv(zone: dns.zone.Zone, label: str) -> tuple[int, int, int, str]:
    rdataset = zone.find_rdataset(f"{label}.{DOMAIN}.", dns.rdatatype.SRV)
    [record] = list(rdataset)
    return record.priority, record.weight, record.port, record.target.to_text()  # type: ignore[attr-defined]


def test_zone_text_parses_and_has_every_record(settings: Settings) -> None:
    zone = _zone(zone_text(settings, DOMAIN))
    assert _srv(zone, "_imaps._tcp") == (0, 1, 993, HOST)
    assert _srv(zone, "_imap._tcp") == (10, 1, 143, HOST)
    assert _srv(zone, "_submissions._tcp") == (0, 1, 465, HOST)
    assert _srv(zone, "_submission._tcp") == (10, 1, 587, HOST)
    assert _srv(zone, "_pop3._tcp") == (0, 0, 0, ".")
    assert _srv(zone, "_pop3s._tcp") == (0, 0, 0, ".")
    [mx] = list(zone.find_rdataset(f"{DOMAIN}.", dns.rdatatype.MX))
    assert (mx.preference, mx.exchange.to_text()) == (10, HOST)  # type: ignore[attr-defined]
    [cname] = list(zone.find_rdataset(f"autoconfig.{DOMAIN}.", dns.rdatatype.CNAME))
    assert cname.target.to_text() == HOST  # type: ignore[attr-defined]


def test_every_line_is_a_record_or_a_comment(settings: Settings) -> None:
    for line in zone_text(settings, DOMAIN).splitlines():
        assert line.startswith(";") or len(line.split()) >= 5, line
        if not line.startswith(";"):
            single = dns.zone.from_text(line + "\n", origin=f"{DOMAIN}.", check_origin=False)
            assert len(single.nodes) == 1


def test_a_listener_turned_off_is_published_as_not_available(settings: Settings) -> None:
    settings.smtp.submissions_port = 0
    settings.smtp.submission_port = 2587
    settings.imap.port = 0
    zone = _zone(zone_text(settings, DOMAIN))
    assert _srv(zone, "_imap._tcp") == (0, 0, 0, ".")
    assert _srv(zone, "_imaps._tcp") == (0, 1, 993, HOST)
    assert _srv(zone, "_submissions._tcp") == (0, 0, 0, ".")
    assert _srv(zone, "_submission._tcp") == (10, 1, 2587, HOST)


def test_records_are_the_same_as_json(settings: Settings, tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        f'data_dir = "{tmp_path}"\n[operator]\ndomains = ["{DOMAIN}"]\n'
        '[smtp]\nhostname = "mail.hopital-nord.mssante.test"\n'
    )
    text = CliRunner().invoke(cli, ["dns", "records", DOMAIN, "--config", str(config)])
    assert text.exit_code == 0, text.output
    assert text.stdout == zone_text(settings, DOMAIN)
    as_json = CliRunner().invoke(
        cli, ["dns", "records", DOMAIN.upper(), "--json", "--config", str(config)]
    )
    assert json.loads(as_json.stdout) == [r.as_dict() for r in zone_records(settings, DOMAIN)]
    xml = CliRunner().invoke(cli, ["dns", "autoconfig", DOMAIN, "--config", str(config)])
    assert xml.exit_code == 0 and "<clientConfig" in xml.stdout
    foreign = CliRunner().invoke(cli, ["dns", "records", "gmail.com", "--config", str(config)])
    assert foreign.exit_code == 1 and "not one of this operator's domains" in foreign.stderr
