from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from mssante.errors import NotFoundError
from mssante.store.blobs import BlobError, FileBlobStore, iter_blobs


def test_put_returns_sha256_and_get_returns_the_bytes(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    data = b"Subject: bonjour\r\n\r\nCorps du message\r\n"
    digest = store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.get(digest) == data
    assert store.path_of(digest).parent.parent.name == digest[:2]


def test_same_content_is_stored_once(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    assert store.put(b"x" * 100) == store.put_stream(io.BytesIO(b"x" * 100))
    assert list(iter_blobs(tmp_path)) == [hashlib.sha256(b"x" * 100).hexdigest()]


def test_stream_larger_than_a_chunk(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    data = os.urandom(300_000)
    digest = store.put_stream(io.BytesIO(data))
    assert store.get(digest) == data


def test_no_temporary_file_is_left_behind(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    store.put(b"one")
    store.put(b"one")
    store.put_stream(io.BytesIO(b"two"))
    assert list((tmp_path / "tmp").iterdir()) == []


def test_failed_write_leaves_no_blob_and_no_temporary(tmp_path: Path) -> None:
    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise OSError("connection lost")
            return b"a" * 65536

    store = FileBlobStore(tmp_path)
    with pytest.raises(OSError, match="connection lost"):
        store.put_stream(Broken())  # type: ignore[arg-type]
    assert list(iter_blobs(tmp_path)) == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_missing_blob_is_a_clear_not_found(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    with pytest.raises(NotFoundError, match="not found"):
        store.get("0" * 64)


@pytest.mark.parametrize("name", ["../../etc/passwd", "ABC", "0" * 63, "g" * 64])
def test_invalid_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(BlobError, match="invalid blob name"):
        FileBlobStore(tmp_path).get(name)
