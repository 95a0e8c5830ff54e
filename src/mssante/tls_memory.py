"""The memory a TLS connection costs this process: asyncio's read buffer.

asyncio's TLS transport (``asyncio.sslproto.SSLProtocol``) gives every connection a read buffer
of ``SSLProtocol.max_size`` bytes, 256 KiB, zero-filled at once: with thousands of IMAP clients
in IDLE that buffer is most of the server's memory (measured: about 290 KB of PSS per idle TLS
connection, against 5 KB for a plain one). A TLS record holds at most 16 KiB of data
(RFC 8446 §5.1), so a 16 KiB buffer only means more, smaller reads on bulk transfers (a few
milliseconds for a 25 MB message). asyncio has no per-server setting for it; the class
attribute is the documented knob of the module (its comment: "Buffer size passed to read()"),
set once per process from ``[tls] read_buffer_bytes`` before any listener starts
(docs/decisions/0010-tls-read-buffer.md).
"""

from __future__ import annotations

from asyncio import sslproto

MIN_READ_BUFFER = 4096


def set_tls_read_buffer(size: int) -> None:
    """Every TLS connection this process opens from now on reads into ``size`` bytes."""
    sslproto.SSLProtocol.max_size = max(MIN_READ_BUFFER, size)
