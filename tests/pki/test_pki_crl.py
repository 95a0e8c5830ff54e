"""CrlCache: validation of CRLs, and the last valid CRL kept when a fresh one cannot be had."""

from __future__ import annotations

import http.server
import shutil
import threading
from collections.abc import Iterator
from datetime import timedelta
from functools import partial
from pathlib import Path

import pytest
from pki_helpers import NOW, copy_crls, trust_of

from mssante.audit.events import AuditEvent, ListSink
from mssante.config import PkiSettings, Settings
from mssante.pki import (
    CaName,
    CrlCache,
    Failure,
    IssuedPaths,
    Purpose,
    RefreshStatus,
    TestPki,
    TrustStore,
    VerificationResult,
    load_certificate,
    verify_certificate,
)


def statuses(cache: CrlCache) -> list[RefreshStatus]:
    return [outcome.status for outcome in cache.refresh()]


def verify_server(cert_path: Path, pki: TestPki, cache: CrlCache) -> VerificationResult:
    return verify_certificate(
        load_certificate(cert_path), purpose=Purpose.SERVER, trust=trust_of(pki), crls=cache
    )


def test_first_refresh_updates_then_nothing_changes(pki: TestPki, tmp_path: Path) -> None:
    cache = CrlCache(tmp_path / "cache", pki.crl_sources(), trust_of(pki))
    first = cache.refresh()
    assert [o.status for o in first] == [RefreshStatus.UPDATED] * 3
    assert first[1].issuer == (
        "CN=TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS,OU=IGC-SANTE TEST,O=ASIP-SANTE,C=FR"
    )
    assert first[1].next_update is not None and first[1].number is not None
    assert statuses(cache) == [RefreshStatus.UNCHANGED] * 3
    assert len(list((tmp_path / "cache").glob("*.crl"))) == 3


def test_pem_crls_are_accepted(pki: TestPki, tmp_path: Path) -> None:
    sources = [str(c.pem) for c in pki.paths().crls]
    assert (
        statuses(CrlCache(tmp_path / "cache", sources, trust_of(pki)))
        == [RefreshStatus.UPDATED] * 3
    )


def test_the_last_valid_crl_is_kept_when_the_source_breaks(
    fresh_pki: TestPki, tmp_path: Path
) -> None:
    issued = fresh_pki.issue_server("mx.example.fr", "1630013605", "GCS SARA", "63")
    fresh_pki.revoke(issued.cert, "keyCompromise")
    sources = copy_crls(fresh_pki, tmp_path / "published")
    cache = CrlCache(tmp_path / "cache", sources, trust_of(fresh_pki))
    assert statuses(cache) == [RefreshStatus.UPDATED] * 3
    assert verify_server(issued.cert, fresh_pki, cache).failure is Failure.REVOKED

    Path(sources[1]).write_bytes(b"<html>503 Service Unavailable</html>")  # corrupt
    outcomes = cache.refresh()
    assert outcomes[1].status is RefreshStatus.KEPT_LAST_VALID
    assert outcomes[1].detail == "not a valid PEM or DER CRL"
    result = verify_server(issued.cert, fresh_pki, cache)
    assert result.failure is Failure.REVOKED  # the old CRL is still used
    assert "using the last valid CRL of 'CN=TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS" in (
        result.detail
    )
    assert "last refresh failed: not a valid PEM or DER CRL" in result.detail

    Path(sources[1]).unlink()  # unreadable
    assert cache.refresh()[1].status is RefreshStatus.KEPT_LAST_VALID
    assert verify_server(issued.cert, fresh_pki, cache).failure is Failure.REVOKED


def test_the_last_valid_crl_survives_a_restart(fresh_pki: TestPki, tmp_path: Path) -> None:
    issued = fresh_pki.issue_server("mx.example.fr", "1630013605", "GCS SARA", "63")
    fresh_pki.revoke(issued.serial)
    sources = copy_crls(fresh_pki, tmp_path / "published")
    CrlCache(tmp_path / "cache", sources, trust_of(fresh_pki)).refresh()
    for source in sources:
        Path(source).unlink()

    restarted = CrlCache(tmp_path / "cache", sources, trust_of(fresh_pki))
    assert len(restarted.entries()) == 3  # read back from disk, before any refresh
    assert verify_server(issued.cert, fresh_pki, restarted).failure is Failure.REVOKED
    assert [o.status for o in restarted.refresh()] == [RefreshStatus.KEPT_LAST_VALID] * 3


def test_a_source_never_fetched_fails_and_verification_has_no_crl(
    pki: TestPki, server: IssuedPaths, tmp_path: Path
) -> None:
    sources = [str(tmp_path / "nowhere.crl")]
    cache = CrlCache(tmp_path / "cache", sources, trust_of(pki))
    outcome = cache.refresh()[0]
    assert outcome.status is RefreshStatus.FAILED
    assert outcome.detail.startswith("cannot read")
    assert verify_server(server.cert, pki, cache).failure is Failure.NO_CRL


def test_an_older_crl_does_not_replace_a_newer_one(fresh_pki: TestPki, tmp_path: Path) -> None:
    issued = fresh_pki.issue_server("mx.example.fr", "1630013605", "GCS SARA", "63")
    old = copy_crls(fresh_pki, tmp_path / "old")
    fresh_pki.revoke(issued.serial)
    sources = copy_crls(fresh_pki, tmp_path / "published")
    cache = CrlCache(tmp_path / "cache", sources, trust_of(fresh_pki))
    cache.refresh()
    shutil.copyfile(old[1], sources[1])  # a replayed CRL that does not list the revocation
    outcome = cache.refresh()[1]
    assert outcome.status is RefreshStatus.KEPT_LAST_VALID
    assert "older than the one held" in outcome.detail
    assert verify_server(issued.cert, fresh_pki, cache).failure is Failure.REVOKED


def test_a_stale_crl_is_still_used_and_said_so(fresh_pki: TestPki, tmp_path: Path) -> None:
    issued = fresh_pki.issue_server("mx.example.fr", "1630013605", "GCS SARA", "63")
    fresh_pki.publish_crls(
        this_update=NOW - timedelta(days=10), next_update=NOW - timedelta(days=3)
    )
    cache = CrlCache(tmp_path / "cache", fresh_pki.crl_sources(), trust_of(fresh_pki))
    assert statuses(cache) == [RefreshStatus.UPDATED] * 3
    result = verify_server(issued.cert, fresh_pki, cache)
    assert result.ok
    assert "past its nextUpdate" in result.detail


def test_a_crl_signed_by_another_key_is_refused(
    pki: TestPki, other_pki: TestPki, tmp_path: Path
) -> None:
    cache = CrlCache(tmp_path / "cache", other_pki.crl_sources(), trust_of(pki))
    outcomes = cache.refresh()
    assert [o.status for o in outcomes] == [RefreshStatus.FAILED] * 3
    assert outcomes[0].detail.startswith("signature does not verify with the key of 'CN=TEST AC")


def test_a_crl_of_an_unknown_ca_is_refused(pki: TestPki, tmp_path: Path) -> None:
    only_root = TrustStore.from_certificates([pki.certificate(CaName.ROOT)])
    outcomes = CrlCache(tmp_path / "cache", pki.crl_sources(), only_root).refresh()
    assert [o.status for o in outcomes] == [
        RefreshStatus.UPDATED,
        RefreshStatus.FAILED,
        RefreshStatus.FAILED,
    ]
    assert "is not a CA of the trust store" in outcomes[1].detail


def test_a_crl_from_the_future_is_refused(fresh_pki: TestPki, tmp_path: Path) -> None:
    fresh_pki.publish_crls(this_update=NOW + timedelta(days=1), next_update=NOW + timedelta(days=8))
    outcomes = CrlCache(tmp_path / "cache", fresh_pki.crl_sources(), trust_of(fresh_pki)).refresh()
    assert outcomes[0].status is RefreshStatus.FAILED
    assert "is in the future" in outcomes[0].detail


def test_a_damaged_cache_file_is_ignored(pki: TestPki, tmp_path: Path) -> None:
    cache = CrlCache(tmp_path / "cache", pki.crl_sources(), trust_of(pki))
    cache.refresh()
    for path in (tmp_path / "cache").glob("*.crl"):
        path.write_bytes(b"damaged")
    assert CrlCache(tmp_path / "cache", pki.crl_sources(), trust_of(pki)).entries() == ()


def test_refreshes_are_audited(pki: TestPki, tmp_path: Path) -> None:
    sink = ListSink()
    sources = [*pki.crl_sources()[:1], str(tmp_path / "missing.crl")]
    CrlCache(tmp_path / "cache", sources, trust_of(pki), audit=sink).refresh()
    assert [r.event for r in sink.records] == [
        AuditEvent.CRL_REFRESHED,
        AuditEvent.CRL_REFRESH_FAILED,
    ]
    assert sink.records[1].context["status"] == "failed"


def test_from_settings_uses_the_data_dir(pki: TestPki, tmp_path: Path) -> None:
    paths = pki.paths()
    settings = Settings(
        data_dir=tmp_path,
        pki=PkiSettings(
            trust_anchors=[paths.root],
            intermediates=[paths.intermediates],
            crl_sources=pki.crl_sources(),
            require_revocation_check=False,
        ),
    )
    cache = CrlCache.from_settings(settings, TrustStore.from_settings(settings.pki))
    assert cache.cache_dir == tmp_path / "crl"
    assert not cache.require_revocation_check
    cache.refresh()
    assert len(list((tmp_path / "crl").glob("*.crl"))) == 3


# -- over HTTP ---------------------------------------------------------------------------------


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def crl_server(
    fresh_pki: TestPki, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, http.server.HTTPServer]]:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    handler = partial(_Quiet, directory=str(fresh_pki.directory / "crl"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()
    server.server_close()


def test_crls_over_http_and_the_fallback_when_the_server_goes(
    fresh_pki: TestPki, crl_server: tuple[str, http.server.HTTPServer], tmp_path: Path
) -> None:
    base, server = crl_server
    issued = fresh_pki.issue_server("mx.example.fr", "1630013605", "GCS SARA", "63")
    fresh_pki.revoke(issued.serial)
    sources = [f"{base}/{ca.value}.crl" for ca in CaName] + [f"{base}/missing.crl"]
    cache = CrlCache(tmp_path / "cache", sources, trust_of(fresh_pki), timeout=5)
    outcomes = cache.refresh()
    assert [o.status for o in outcomes] == [RefreshStatus.UPDATED] * 3 + [RefreshStatus.FAILED]
    assert outcomes[3].detail == "HTTP status 404"
    assert verify_server(issued.cert, fresh_pki, cache).failure is Failure.REVOKED

    server.shutdown()
    server.server_close()
    outcomes = cache.refresh()
    assert outcomes[1].status is RefreshStatus.KEPT_LAST_VALID
    assert outcomes[1].detail.startswith("cannot fetch")
    result = verify_server(issued.cert, fresh_pki, cache)
    assert result.failure is Failure.REVOKED
    assert "last refresh failed: cannot fetch" in result.detail


def test_an_oversized_crl_is_refused(pki: TestPki, tmp_path: Path) -> None:
    cache = CrlCache(tmp_path / "cache", pki.crl_sources(), trust_of(pki), max_bytes=100)
    outcome = cache.refresh()[0]
    assert outcome.status is RefreshStatus.FAILED
    assert outcome.detail == "larger than 100 bytes"


def test_credentials_in_a_source_url_are_not_logged(pki: TestPki, tmp_path: Path) -> None:
    sink = ListSink()
    source = "http://user:secret@127.0.0.1:9/crl/root.crl"
    CrlCache(tmp_path / "cache", [source], trust_of(pki), audit=sink, timeout=1).refresh()
    assert sink.records[0].target == "http://127.0.0.1:9/crl/root.crl"
    assert "secret" not in repr(sink.records[0])
