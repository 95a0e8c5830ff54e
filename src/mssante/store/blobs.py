"""Content-addressed blob store: a message body is named by its SHA-256.

The file-system store writes a blob to a temporary file in the same file system, fsyncs it,
renames it into place and fsyncs the folder, so a reader never sees a half-written blob and a
blob that :meth:`put` returned survives a power cut. Writing the same content twice is a no-op.
An S3-compatible store will implement the same :class:`BlobStore` protocol for multi-node use.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from mssante.errors import MssanteError, NotFoundError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 16


class BlobError(MssanteError):
    """A blob could not be stored or read."""


class BlobStore(Protocol):
    def put(self, data: bytes) -> str: ...
    def put_stream(self, stream: BinaryIO) -> str: ...
    def get(self, digest: str) -> bytes: ...
    def exists(self, digest: str) -> bool: ...
    def delete(self, digest: str) -> None: ...


class FileBlobStore:
    """Blobs under ``root/ab/cd/<sha256>``; temporary files under ``root/tmp``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path_of(self, digest: str) -> Path:
        if not _HEX64.match(digest):
            raise BlobError("invalid blob name", detail=digest[:80])
        return self.root / digest[:2] / digest[2:4] / digest

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if not self.exists(digest):
            with self._temp_file() as (fh, tmp_path):
                fh.write(data)
                self._commit(fh, tmp_path, digest)
        return digest

    def put_stream(self, stream: BinaryIO) -> str:
        hasher = hashlib.sha256()
        with self._temp_file() as (fh, tmp_path):
            while chunk := stream.read(_CHUNK):
                hasher.update(chunk)
                fh.write(chunk)
            digest = hasher.hexdigest()
            if self.exists(digest):
                return digest
            self._commit(fh, tmp_path, digest)
        return digest

    def get(self, digest: str) -> bytes:
        try:
            return self.path_of(digest).read_bytes()
        except FileNotFoundError:
            raise NotFoundError("message content not found", detail=digest) from None

    def exists(self, digest: str) -> bool:
        return self.path_of(digest).exists()

    def delete(self, digest: str) -> None:
        self.path_of(digest).unlink(missing_ok=True)

    # -- stages of a durable write -------------------------------------------------------------
    def _temp_file(self) -> _TempFile:
        return _TempFile(self._tmp)

    def _commit(self, fh: BinaryIO, tmp_path: Path, digest: str) -> None:
        fh.flush()
        os.fsync(fh.fileno())
        final = self.path_of(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_path, final)
        _fsync_dir(final.parent)


class _TempFile:
    """A temporary file that is removed unless it was renamed into place."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path: Path | None = None

    def __enter__(self) -> tuple[BinaryIO, Path]:
        fd, name = tempfile.mkstemp(dir=self.folder, prefix="blob-")
        self.path = Path(name)
        self.fh: BinaryIO = os.fdopen(fd, "wb")
        return self.fh, self.path

    def __exit__(self, *exc: object) -> None:
        self.fh.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def iter_blobs(root: Path) -> Iterator[str]:
    """Every blob name under ``root`` (for integrity checks and garbage collection)."""
    for path in root.glob("??/??/*"):
        if _HEX64.match(path.name):
            yield path.name
