"""The content-addressed file store: streaming, dedup, size limit, crash safety.

Pure tests on a LocalStorage in a temporary directory: no database, no app unless the test is
about reading the app's settings.
"""
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from flask import Flask

from app.config import BASE_DIR, TestConfig
from app.services import ServiceError
from app.services.storage import (CHUNK_SIZE, BlobNotFound, FileTooLarge, LocalStorage,
                                  Storage, StoredBlob, format_megabytes, get_storage)

MB = 1024 * 1024


class ZeroStream:
    """A client's upload of `total` bytes, produced on demand; counts what was read."""

    def __init__(self, total: int, on_read=None):
        self.total, self.sent, self.reads, self.on_read = total, 0, [], on_read

    def read(self, size=-1):
        self.reads.append(size)
        if self.on_read:
            self.on_read(self)
        left = self.total - self.sent
        n = left if size is None or size < 0 else min(size, left)
        self.sent += n
        return b"\0" * n


def final_files(storage: LocalStorage) -> list[Path]:
    """Every file under a final name (anything outside the temporary directory)."""
    return sorted(p for p in storage.root.rglob("*")
                  if p.is_file() and storage.temp_dir not in p.parents)


@pytest.fixture
def storage(tmp_path):
    return LocalStorage(tmp_path / "storage")


def test_put_names_content_by_sha256_and_reads_it_back(storage):
    data = b"frente do RG " * 1000
    blob = storage.put(data)
    sha = hashlib.sha256(data).hexdigest()
    assert blob == StoredBlob(sha256=sha, size=len(data), created=True)
    assert final_files(storage) == [storage.root / sha[:2] / sha[2:4] / sha]
    with storage.open(sha) as f:
        assert f.read() == data
    assert storage.exists(sha) and storage.size(sha) == len(data)
    assert list(storage.iter_sha256()) == [sha]
    assert storage.temp_files() == []
    assert isinstance(storage, Storage)


def test_put_streams_in_chunks(storage):
    stream = ZeroStream(5 * MB + 123)
    blob = storage.put(stream)
    assert blob.size == 5 * MB + 123
    assert blob.sha256 == hashlib.sha256(b"\0" * (5 * MB + 123)).hexdigest()
    # Never "read everything": bounded reads until the end of the stream.
    assert set(stream.reads) == {CHUNK_SIZE} and len(stream.reads) == 7


def test_identical_content_is_stored_once(storage):
    first = storage.put(b"same bytes")
    second = storage.put(b"same bytes")
    assert first.sha256 == second.sha256
    assert (first.created, second.created) == (True, False)
    assert len(final_files(storage)) == 1
    assert storage.temp_files() == []


def test_concurrent_puts_of_the_same_content_create_it_once(storage):
    data = os.urandom(3 * MB)
    barrier = threading.Barrier(4)
    results = []

    def upload():
        barrier.wait()
        results.append(storage.put(data))

    threads = [threading.Thread(target=upload) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.sha256 for r in results}) == 1
    assert sorted(r.created for r in results) == [False, False, False, True]
    assert len(final_files(storage)) == 1 and storage.temp_files() == []
    with storage.open(results[0].sha256) as f:
        assert f.read() == data


def test_a_stream_over_the_limit_is_aborted_early_and_leaves_nothing(storage):
    stream = ZeroStream(50 * MB)
    with pytest.raises(FileTooLarge) as exc:
        storage.put(stream, max_bytes=20 * MB)
    assert isinstance(exc.value, ServiceError)
    assert str(exc.value.message) == ("O arquivo passa do limite de 20 MB por arquivo. "
                                      "Envie um arquivo menor.")
    assert exc.value.max_bytes == 20 * MB
    # Stopped as soon as the limit was passed: at most one chunk beyond it was read.
    assert stream.sent <= 20 * MB + CHUNK_SIZE
    assert final_files(storage) == [] and storage.temp_files() == []


def test_exactly_the_limit_is_accepted(storage):
    blob = storage.put(ZeroStream(2 * MB), max_bytes=2 * MB)
    assert blob.size == 2 * MB
    with pytest.raises(FileTooLarge):
        storage.put(ZeroStream(2 * MB + 1), max_bytes=2 * MB)


def test_no_partial_file_is_visible_under_a_final_name_while_writing(storage):
    seen = []

    def look(stream):
        if len(stream.reads) == 3:  # two chunks written, more to come
            seen.append((final_files(storage), storage.temp_files()))

    blob = storage.put(ZeroStream(4 * MB, on_read=look))
    finals, temps = seen[0]
    assert finals == [] and len(temps) == 1
    assert final_files(storage) == [storage.root / blob.sha256[:2] / blob.sha256[2:4] / blob.sha256]
    assert storage.temp_files() == []


def test_a_client_that_disconnects_leaves_nothing(storage):
    class Disconnecting(ZeroStream):
        def read(self, size=-1):
            if self.sent >= 2 * MB:
                raise OSError("client went away")
            return super().read(size)

    with pytest.raises(OSError, match="client went away"):
        storage.put(Disconnecting(10 * MB))
    assert final_files(storage) == [] and storage.temp_files() == []


def test_a_killed_process_leaves_only_a_temporary_file(tmp_path):
    root = tmp_path / "storage"
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(BASE_DIR)!r})
        from app.services.storage import LocalStorage

        class Slow:
            def read(self, size=-1):
                time.sleep(0.05)
                return b"x" * size

        LocalStorage({str(root)!r}).put(Slow())
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    storage = LocalStorage(root)
    try:
        deadline = time.monotonic() + 20
        while not storage.temp_files() or storage.temp_files()[0].stat().st_size < 2 * MB:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert final_files(storage) == []
    assert len(storage.temp_files()) == 1
    # The sweep leaves a recent (maybe live) temporary file alone, and removes an old one.
    assert storage.cleanup_temp(older_than_seconds=3600) == 0
    assert storage.cleanup_temp(older_than_seconds=0) == 1
    assert storage.temp_files() == []


def test_delete_removes_only_that_content(storage):
    kept = storage.put(b"documento de outro pedido")
    gone = storage.put(b"documento deste pedido")
    assert storage.delete(gone.sha256) is True
    assert storage.delete(gone.sha256) is False
    assert not storage.exists(gone.sha256)
    with pytest.raises(BlobNotFound) as exc:
        storage.open(gone.sha256)
    assert str(exc.value.message) == "O arquivo não foi encontrado no armazenamento."
    with pytest.raises(BlobNotFound):
        storage.size(gone.sha256)
    with storage.open(kept.sha256) as f:
        assert f.read() == b"documento de outro pedido"
    # Stored again after a delete: created anew.
    assert storage.put(b"documento deste pedido").created is True


@pytest.mark.parametrize("name", ["../../../etc/passwd", "A" * 64, "ab" * 31, "",
                                  "ab/cd/" + "0" * 58, "0" * 63 + "g"])
def test_names_that_are_not_sha256_digests_are_refused(storage, name):
    for method in (storage.open, storage.exists, storage.size, storage.delete):
        with pytest.raises(ValueError):
            method(name)


def test_format_megabytes_is_pt_br():
    assert format_megabytes(20 * MB) == "20"
    assert format_megabytes(5 * MB // 2) == "2,5"


def _flask_app(instance: Path, **settings) -> Flask:
    class Config(TestConfig):
        INSTANCE_DIR = instance

    for key, value in settings.items():
        setattr(Config, key, value)
    app = Flask("storage-test")
    app.config.from_object(Config)
    return app


def test_the_app_storage_defaults_to_the_instance_directory(tmp_path):
    app = _flask_app(tmp_path / "instance")
    with app.app_context():
        storage = get_storage()
        assert storage is get_storage()
    assert storage.root == tmp_path / "instance" / "storage"
    assert storage.put(b"x").size == 1 and (tmp_path / "instance" / "storage").is_dir()


def test_the_app_storage_root_is_a_setting(tmp_path):
    app = _flask_app(tmp_path / "instance", STORAGE_ROOT=str(tmp_path / "elsewhere"))
    assert get_storage(app).root == tmp_path / "elsewhere"
