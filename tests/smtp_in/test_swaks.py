"""Debian's swaks, a real SMTP client, against the inbound listener; and the session timeouts."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from operator_fixtures import MARTIN, Space, running_operator_b
from smtp_helpers import DOMAIN_A, HOST_A, Cert

from mssante.audit.log import iter_entries
from mssante.operator.runtime import OperatorRuntime

pytestmark = pytest.mark.skipif(
    shutil.which("swaks") is None, reason="swaks is installed by scripts/test.sh"
)


async def _swaks(
    rt: OperatorRuntime, cert: Cert | None, *extra: str
) -> subprocess.CompletedProcess[str]:
    args = [
        "swaks",
        "--server",
        "127.0.0.1",
        "--port",
        str(rt.settings.smtp.inbound_port),
        "--helo",
        HOST_A,
        "--from",
        f"dr.durand@{DOMAIN_A}",
        "--to",
        MARTIN,
        "--tls",
        "--timeout",
        "15",
    ]
    if cert:
        args += ["--tls-cert", str(cert.cert), "--tls-key", str(cert.key)]
    return await asyncio.to_thread(
        subprocess.run, [*args, *extra], capture_output=True, text=True, timeout=60
    )


def _events(rt: OperatorRuntime) -> list[str]:
    return [e.event for e in iter_entries(rt.node.db)]


async def test_swaks_with_the_operator_certificate_delivers(
    operator_b: OperatorRuntime, space: Space
) -> None:
    result = await _swaks(operator_b, space.a, "--header", "Subject: via swaks")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 Message accepted and stored" in result.stdout
    assert [m.subject for m in operator_b.store.list_messages(MARTIN)] == ["via swaks"]


async def test_swaks_without_a_certificate_is_refused(operator_b: OperatorRuntime) -> None:
    result = await _swaks(operator_b, None)
    assert result.returncode != 0
    assert "530 5.7.1 A client certificate is required" in result.stdout
    assert operator_b.store.list_messages(MARTIN) == []


async def test_swaks_with_a_self_signed_certificate_fails_the_handshake(
    operator_b: OperatorRuntime, space: Space
) -> None:
    result = await _swaks(operator_b, space.bad["self_signed"])
    assert result.returncode != 0
    assert "250 2.0.0" not in result.stdout
    await asyncio.sleep(0.2)
    assert "smtp.tls_failed" in _events(operator_b)


async def test_swaks_with_tls_1_1_fails(operator_b: OperatorRuntime, space: Space) -> None:
    result = await _swaks(operator_b, space.a, "--tls-protocol", "tlsv1_1")
    assert result.returncode != 0
    assert operator_b.store.list_messages(MARTIN) == []


async def test_swaks_raw_bare_lf_is_refused(
    operator_b: OperatorRuntime, space: Space, tmp_path: Path
) -> None:
    data = tmp_path / "data.eml"
    # --no-data-fixup sends the file as it is, terminator included
    data.write_bytes(b"Subject: smuggle\r\n\r\nfirst\n.\nMAIL FROM:<evil@x>\r\n.\r\n")
    result = await _swaks(operator_b, space.a, "--data", f"@{data}", "--no-data-fixup")
    assert "550 5.6.0 fin de ligne isolee (LF ou CR)" in result.stdout
    assert operator_b.store.list_messages(MARTIN) == []


async def test_a_silent_client_is_disconnected_and_audited(
    space: Space, tmp_path: Path, b_database: dict[str, str]
) -> None:
    async with running_operator_b(space, tmp_path / "b", b_database, command_timeout=1.0) as rt:

        def idle() -> bytes:
            with socket.create_connection(
                ("127.0.0.1", rt.settings.smtp.inbound_port), timeout=10
            ) as sock:
                sock.recv(1024)  # greeting
                sock.settimeout(5)
                return sock.recv(1024)  # b"" when the server closes

        assert await asyncio.to_thread(idle) == b""
        await asyncio.sleep(0.3)
        assert "smtp.timeout" in _events(rt)


async def test_a_client_that_stalls_in_data_is_disconnected(
    space: Space, tmp_path: Path, b_database: dict[str, str]
) -> None:
    async with running_operator_b(space, tmp_path / "b", b_database, command_timeout=1.0) as rt:

        def stall() -> bytes:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.load_verify_locations(cafile=str(space.pki.paths().root))
            ctx.load_cert_chain(space.a.cert, space.a.key)
            with socket.create_connection(
                ("127.0.0.1", rt.settings.smtp.inbound_port), timeout=10
            ) as raw:
                f = raw.makefile("rb")
                f.readline()
                raw.sendall(f"EHLO {HOST_A}\r\n".encode())
                while not f.readline().startswith(b"250 "):
                    pass
                raw.sendall(b"STARTTLS\r\n")
                f.readline()
                with ctx.wrap_socket(raw, server_hostname="x") as tls:
                    t = tls.makefile("rb")
                    for line in (
                        f"EHLO {HOST_A}",
                        f"MAIL FROM:<x@{DOMAIN_A}>",
                        f"RCPT TO:<{MARTIN}>",
                        "DATA",
                    ):
                        tls.sendall(line.encode() + b"\r\n")
                        reply = t.readline()
                        while reply[3:4] == b"-":
                            reply = t.readline()
                    tls.sendall(b"Subject: half\r\n\r\nnever finished")
                    tls.settimeout(5)
                    return t.read()

        assert await asyncio.to_thread(stall) == b""
        assert rt.store.list_messages(MARTIN) == []
