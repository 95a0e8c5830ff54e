"""The keeper: verify, cache atomically, keep the last good list, audit every outcome; HTTPS."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from trust_helpers import APTA78_DN, CLOSING_TAG, TestPki, small_whitelist, utc

from mssante.audit.events import SYSTEM_ACTOR, AuditEvent, ListSink
from mssante.trust.keeper import (
    PREVIOUS_SUFFIX,
    SIGNATURE_NAME,
    XML_NAME,
    RefreshStatus,
    WhitelistFetchError,
    WhitelistKeeper,
    fetch_https,
    whitelist_verifier,
)
from mssante.trust.model import Whitelist
from mssante.trust.signature import SignerVerifier, sign_detached
from mssante.trust.xmlformat import write

LIMIT = 50_000_000


def signed(pki: TestPki, xml: bytes) -> tuple[bytes, bytes]:
    return xml, sign_detached(
        xml, pki.signer.certificate, pki.signer.key, [pki.intermediate.certificate]
    )


def signed_list(pki: TestPki, whitelist: Whitelist) -> tuple[bytes, bytes]:
    return signed(pki, write(whitelist))


def make_keeper(
    cache: Path, verify_signer: SignerVerifier, audit: ListSink, **options: object
) -> WhitelistKeeper:
    max_bytes = options.pop("max_bytes", LIMIT)
    verify = whitelist_verifier(verify_signer, max_bytes, **options)  # type: ignore[arg-type]
    return WhitelistKeeper(cache, verify=verify, audit=audit)


@pytest.fixture
def audit() -> ListSink:
    return ListSink()


@pytest.fixture
def keeper(tmp_path: Path, verify_signer: SignerVerifier, audit: ListSink) -> WhitelistKeeper:
    return make_keeper(tmp_path / "whitelist", verify_signer, audit)


def events(audit: ListSink) -> list[AuditEvent]:
    return [record.event for record in audit.records]


def cached(keeper_dir: Path) -> tuple[bytes, bytes]:
    return (keeper_dir / XML_NAME).read_bytes(), (keeper_dir / SIGNATURE_NAME).read_bytes()


# -- accepting -------------------------------------------------------------------------------------


def test_a_good_list_is_accepted_cached_and_audited(
    tmp_path: Path, keeper: WhitelistKeeper, audit: ListSink, pki: TestPki
) -> None:
    assert keeper.current() is None
    xml, sig = signed_list(pki, small_whitelist())
    outcome = keeper.accept(xml, sig, source="https://authority.test/listeblanche.xml")
    assert outcome.status is RefreshStatus.ACCEPTED and outcome.ok
    assert outcome.whitelist == small_whitelist() == keeper.current()
    assert cached(tmp_path / "whitelist") == (xml, sig)
    (record,) = audit.records
    assert record.event is AuditEvent.WHITELIST_ACCEPTED
    assert record.actor == SYSTEM_ACTOR and record.target == "whitelist"
    assert record.context["entries"] == 3 and record.context["domains"] == 2
    assert record.context["generated_at"] == "2025-03-13T14:54:10Z"
    assert len(record.context["sha256"]) == 64


def test_the_same_list_again_is_unchanged(
    keeper: WhitelistKeeper, audit: ListSink, pki: TestPki
) -> None:
    xml, sig = signed_list(pki, small_whitelist())
    keeper.accept(xml, sig)
    outcome = keeper.accept(xml, sig)
    assert outcome.status is RefreshStatus.UNCHANGED and outcome.ok
    assert events(audit) == [AuditEvent.WHITELIST_ACCEPTED, AuditEvent.WHITELIST_UNCHANGED]


def test_a_newer_list_replaces_it_and_the_old_pair_is_kept_aside(
    tmp_path: Path, keeper: WhitelistKeeper, pki: TestPki
) -> None:
    first = signed_list(pki, small_whitelist())
    newer = small_whitelist(utc(2025, 3, 14, 0, 0, 0))
    second = signed_list(pki, newer)
    keeper.accept(*first)
    assert keeper.accept(*second).status is RefreshStatus.ACCEPTED
    assert keeper.current() == newer
    folder = tmp_path / "whitelist"
    assert cached(folder) == second
    assert (folder / (XML_NAME + PREVIOUS_SUFFIX)).read_bytes() == first[0]
    assert (folder / (SIGNATURE_NAME + PREVIOUS_SUFFIX)).read_bytes() == first[1]
    assert not list(folder.glob(".*.tmp"))


# -- keeping the last good list --------------------------------------------------------------------


def test_a_tampered_list_is_refused_and_the_previous_stays(
    tmp_path: Path, keeper: WhitelistKeeper, audit: ListSink, pki: TestPki
) -> None:
    good = signed_list(pki, small_whitelist())
    keeper.accept(*good)
    xml, sig = signed_list(pki, small_whitelist(utc(2025, 3, 14, 0, 0, 0)))
    tampered = xml.replace(b"smtp-2.ch-exemple.fr", b"smtp-2.ch-pirate.fr")
    outcome = keeper.accept(tampered, sig)
    assert outcome.status is RefreshStatus.REJECTED and not outcome.ok
    assert outcome.reason == "signature does not match the whitelist content"
    assert outcome.whitelist == small_whitelist() == keeper.current()
    assert cached(tmp_path / "whitelist") == good
    assert audit.records[-1].event is AuditEvent.WHITELIST_REJECTED
    assert audit.records[-1].context["reason"] == outcome.reason


def test_a_refused_first_list_leaves_no_list_and_no_file(
    tmp_path: Path, keeper: WhitelistKeeper, pki: TestPki
) -> None:
    xml, sig = signed_list(pki, small_whitelist())
    outcome = keeper.accept(xml + b" ", sig)
    assert outcome.status is RefreshStatus.REJECTED and outcome.whitelist is None
    assert keeper.current() is None
    assert not (tmp_path / "whitelist" / XML_NAME).exists()


def test_a_list_signed_by_another_ca_is_refused(
    keeper: WhitelistKeeper, rogue_pki: TestPki
) -> None:
    outcome = keeper.accept(*signed_list(rogue_pki, small_whitelist()))
    assert outcome.status is RefreshStatus.REJECTED
    assert outcome.reason is not None and outcome.reason.startswith("signer not trusted: ")


def test_a_signed_but_truncated_list_is_refused(
    keeper: WhitelistKeeper, pki: TestPki, sample_bytes: bytes
) -> None:
    outcome = keeper.accept(*signed(pki, sample_bytes))
    assert outcome.status is RefreshStatus.REJECTED
    assert outcome.reason == (
        "whitelist is truncated: the root element <ListeBlancheMSSante> is not closed "
        "(the data ends at line 4961)"
    )


def test_the_real_sample_signed_is_accepted(
    keeper: WhitelistKeeper, pki: TestPki, sample_bytes: bytes
) -> None:
    outcome = keeper.accept(*signed(pki, sample_bytes + CLOSING_TAG))
    assert outcome.status is RefreshStatus.ACCEPTED
    current = keeper.current()
    assert current is not None and len(current.domains) == 619
    assert current.is_trusted("apta78.mssante.fr", APTA78_DN).trusted


def test_an_older_list_is_refused_even_when_well_signed(
    keeper: WhitelistKeeper, pki: TestPki
) -> None:
    keeper.accept(*signed_list(pki, small_whitelist()))
    outcome = keeper.accept(*signed_list(pki, small_whitelist(utc(2025, 1, 1, 0, 0, 0))))
    assert outcome.status is RefreshStatus.REJECTED
    assert outcome.reason == (
        "whitelist is older than the list in force (generated 2025-01-01T00:00:00Z, "
        "in force: 2025-03-13T14:54:10Z)"
    )
    assert keeper.current() == small_whitelist()


def test_a_signer_other_than_the_configured_one_is_refused(
    tmp_path: Path, verify_signer: SignerVerifier, audit: ListSink, pki: TestPki
) -> None:
    keeper = make_keeper(tmp_path, verify_signer, audit, signer_dn="CN=AUTRE SIGNATAIRE,C=FR")
    outcome = keeper.accept(*signed_list(pki, small_whitelist()))
    assert outcome.reason == (
        "signer not trusted: CN=TEST liste blanche,OU=IGC-SANTE TEST,O=TEST MSSANTE,C=FR "
        "is not the configured whitelist signer"
    )


def test_the_configured_signer_is_accepted(
    tmp_path: Path, verify_signer: SignerVerifier, audit: ListSink, pki: TestPki
) -> None:
    dn = "cn=TEST liste blanche, ou=IGC-SANTE TEST, o=TEST MSSANTE, c=FR"
    keeper = make_keeper(tmp_path, verify_signer, audit, signer_dn=dn)
    assert keeper.accept(*signed_list(pki, small_whitelist())).ok


def test_a_list_too_large_is_refused_before_its_signature_is_checked(
    tmp_path: Path, verify_signer: SignerVerifier, audit: ListSink, pki: TestPki
) -> None:
    keeper = make_keeper(tmp_path, verify_signer, audit, max_bytes=1024)
    outcome = keeper.accept(b"x" * 1025, b"not even a signature")
    assert outcome.reason == "whitelist is too large: more than 1024 bytes (the configured limit)"


def test_a_fetch_error_keeps_the_previous_list(
    keeper: WhitelistKeeper, audit: ListSink, pki: TestPki
) -> None:
    keeper.accept(*signed_list(pki, small_whitelist()))

    def broken() -> tuple[bytes, bytes]:
        raise WhitelistFetchError("cannot fetch the whitelist: HTTP 503")

    outcome = keeper.refresh(broken)
    assert outcome.status is RefreshStatus.FETCH_FAILED and not outcome.ok
    assert outcome.reason == "cannot fetch the whitelist: HTTP 503"
    assert outcome.whitelist == small_whitelist() == keeper.current()
    assert audit.records[-1].event is AuditEvent.WHITELIST_FETCH_FAILED
    assert audit.records[-1].context["reason"] == "cannot fetch the whitelist: HTTP 503"


def test_any_exception_from_fetch_is_a_fetch_failure(keeper: WhitelistKeeper) -> None:
    def broken() -> tuple[bytes, bytes]:
        raise ConnectionResetError("connection reset\nby peer")

    outcome = keeper.refresh(broken)
    assert outcome.status is RefreshStatus.FETCH_FAILED
    assert outcome.reason == "connection reset by peer"


def test_refresh_accepts_what_fetch_returns(keeper: WhitelistKeeper, pki: TestPki) -> None:
    pair = signed_list(pki, small_whitelist())
    assert keeper.refresh(lambda: pair).status is RefreshStatus.ACCEPTED


# -- restarting ------------------------------------------------------------------------------------


def test_a_new_keeper_loads_the_last_good_list(
    tmp_path: Path, keeper: WhitelistKeeper, verify_signer: SignerVerifier, pki: TestPki
) -> None:
    keeper.accept(*signed_list(pki, small_whitelist()))
    keeper.accept(b"garbage", b"garbage")
    audit = ListSink()
    restarted = make_keeper(tmp_path / "whitelist", verify_signer, audit)
    assert restarted.current() == small_whitelist()
    assert audit.records == []


def test_a_cached_list_altered_on_disk_is_not_loaded(
    tmp_path: Path, keeper: WhitelistKeeper, verify_signer: SignerVerifier, pki: TestPki
) -> None:
    keeper.accept(*signed_list(pki, small_whitelist()))
    path = tmp_path / "whitelist" / XML_NAME
    path.write_bytes(path.read_bytes().replace(b"medecin", b"pirates"))
    audit = ListSink()
    restarted = make_keeper(tmp_path / "whitelist", verify_signer, audit)
    assert restarted.current() is None
    (record,) = audit.records
    assert record.event is AuditEvent.WHITELIST_REJECTED
    assert record.context == {
        "source": "cache",
        "reason": "cached listeblanche.xml: signature does not match the whitelist content",
    }


def test_a_crash_between_the_two_renames_falls_back_to_the_previous_pair(
    tmp_path: Path, keeper: WhitelistKeeper, verify_signer: SignerVerifier, pki: TestPki
) -> None:
    first = signed_list(pki, small_whitelist())
    second = signed_list(pki, small_whitelist(utc(2025, 3, 14, 0, 0, 0)))
    keeper.accept(*first)
    keeper.accept(*second)
    folder = tmp_path / "whitelist"
    # The keeper renames the new signature into place, then the new list: a crash between the
    # two leaves the new signature beside the old list.
    (folder / XML_NAME).write_bytes(first[0])
    assert (folder / SIGNATURE_NAME).read_bytes() == second[1]
    restarted = make_keeper(folder, verify_signer, ListSink())
    assert restarted.current() == small_whitelist()


def test_a_cache_that_cannot_be_written_still_brings_the_list_into_force(
    tmp_path: Path, verify_signer: SignerVerifier, audit: ListSink, pki: TestPki
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    keeper = make_keeper(blocker / "whitelist", verify_signer, audit)
    outcome = keeper.accept(*signed_list(pki, small_whitelist()))
    assert outcome.status is RefreshStatus.ACCEPTED
    assert outcome.reason is not None
    assert outcome.reason.startswith("accepted, but could not be cached: ")
    assert keeper.current() == small_whitelist()
    assert "cache_error" in audit.records[-1].context


# -- HTTPS -----------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    files: dict[str, bytes]
    no_length: set[str]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        if self.path not in self.server.no_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def https(tmp_path: Path, pki: TestPki) -> Iterator[_Server]:
    (tmp_path / "server.pem").write_bytes(pki.server.pem() + pki.intermediate.pem())
    (tmp_path / "server.key").write_bytes(pki.server.key_pem())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    server = _Server(("127.0.0.1", 0), _Handler)
    server.files, server.no_length = {}, set()
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def url_of(server: _Server, path: str = "/listeblanche.xml") -> str:
    return f"https://127.0.0.1:{server.server_address[1]}{path}"


@pytest.fixture
def ca_file(tmp_path: Path, pki: TestPki) -> Path:
    path = tmp_path / "anchors.pem"
    path.write_bytes(pki.root.pem())
    return path


async def test_fetch_https_downloads_the_list_and_its_signature(
    https: _Server, ca_file: Path, keeper: WhitelistKeeper, pki: TestPki
) -> None:
    xml, sig = signed_list(pki, small_whitelist())
    https.files = {"/listeblanche.xml": xml, "/listeblanche.xml.p7s": sig}
    fetched = await fetch_https(url_of(https), ca_file=ca_file, max_bytes=LIMIT, timeout=10)
    assert fetched == (xml, sig)

    async def fetch() -> tuple[bytes, bytes]:
        return await fetch_https(url_of(https), ca_file=ca_file, max_bytes=LIMIT, timeout=10)

    outcome = await keeper.refresh_async(fetch, source=url_of(https))
    assert outcome.status is RefreshStatus.ACCEPTED


async def test_a_missing_signature_is_a_fetch_failure(
    https: _Server, ca_file: Path, keeper: WhitelistKeeper
) -> None:
    https.files = {"/listeblanche.xml": b"<x/>"}

    async def fetch() -> tuple[bytes, bytes]:
        return await fetch_https(url_of(https), ca_file=ca_file, max_bytes=LIMIT, timeout=10)

    outcome = await keeper.refresh_async(fetch)
    assert outcome.status is RefreshStatus.FETCH_FAILED
    assert outcome.reason == "cannot fetch the signature: HTTP 404"


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
async def test_a_list_larger_than_the_limit_is_not_read(
    https: _Server, ca_file: Path, declared: bool
) -> None:
    https.files = {"/listeblanche.xml": b"x" * 5000, "/listeblanche.xml.p7s": b"sig"}
    if not declared:
        https.no_length = {"/listeblanche.xml"}
    with pytest.raises(WhitelistFetchError) as caught:
        await fetch_https(url_of(https), ca_file=ca_file, max_bytes=4096, timeout=10)
    assert str(caught.value) == "the whitelist is too large: more than 4096 bytes"


async def test_a_server_not_from_the_trusted_pki_is_refused(
    https: _Server, tmp_path: Path, rogue_pki: TestPki
) -> None:
    rogue_anchor = tmp_path / "rogue.pem"
    rogue_anchor.write_bytes(rogue_pki.root.pem())
    https.files = {"/listeblanche.xml": b"x", "/listeblanche.xml.p7s": b"y"}
    with pytest.raises(WhitelistFetchError) as caught:
        await fetch_https(url_of(https), ca_file=rogue_anchor, max_bytes=LIMIT, timeout=10)
    assert str(caught.value).startswith("cannot fetch the whitelist: ")
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)


async def test_plain_http_is_refused(ca_file: Path) -> None:
    with pytest.raises(WhitelistFetchError, match="must be https"):
        await fetch_https("http://authority.test/l.xml", ca_file=ca_file, max_bytes=1, timeout=1)


async def test_an_unreadable_ca_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WhitelistFetchError) as caught:
        await fetch_https(
            "https://127.0.0.1:1/l.xml", ca_file=tmp_path / "absent.pem", max_bytes=1, timeout=1
        )
    assert str(caught.value) == "cannot read the CA file for the whitelist server"
