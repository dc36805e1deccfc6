"""S3Storage (app/services/storage_s3.py) against a real HTTP S3 server: moto's `moto_server`
(the `moto` package of requirements.lock), started on a free port for the session.

The behaviour LocalStorage shows in tests/test_storage.py is checked here on both backends
(`storage` is parametrized), then what only S3 has: ranged GETs (a Range read of an encrypted
recording fetches only the chunks it needs, counted from the client's requests), conditional
PUTs, a PUT cut midway, and one app path end to end with STORAGE_BACKEND=s3.
"""
import hashlib
import io
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from flask import Flask

from app.config import TestConfig
from app.services import encryption
from app.services.storage import (CHUNK_SIZE, BlobNotFound, FileTooLarge, LocalStorage,
                                  Storage, StoredBlob, get_storage)

boto3 = pytest.importorskip("boto3", reason="boto3 is not installed (requirements.lock)")
pytest.importorskip("moto.server", reason="moto (its S3 server) is not installed "
                                          "(requirements.lock: moto[s3], flask-cors)")
from botocore.exceptions import ClientError  # noqa: E402

from app.services import storage_s3  # noqa: E402
from app.services.storage_s3 import BlobChanged, S3Storage  # noqa: E402

MB = 1024 * 1024
KEYRING = encryption.parse_data_keys(encryption.new_key_spec("k1"))
CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing"}


# --- the server -------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3 server as a real process on a free port; yields its URL."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                 "-p", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"moto_server exited: {log.read_text()[-2000:]}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto_server did not start in 30 s"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Requests:
    """Every request the client sends (method, key, headers) and the bytes each GET returned:
    a counting wrapper on botocore's own events."""

    def __init__(self, client):
        self.sent, self.got = [], []
        client.meta.events.register("before-send.s3", self._before_send)
        client.meta.events.register("after-call.s3.GetObject", self._after_get)

    def _before_send(self, request, **kwargs):
        self.sent.append((request.method, request.url.split("?")[0], dict(request.headers)))

    def _after_get(self, http_response, parsed, **kwargs):
        self.got.append(parsed.get("ContentLength", 0))

    def clear(self):
        self.sent.clear()
        self.got.clear()

    def of(self, method):
        return [r for r in self.sent if r[0] == method]


def s3_storage(server: str, tmp_path: Path, **options) -> S3Storage:
    options.setdefault("prefix", "blobs")
    storage = S3Storage(f"test-{uuid.uuid4().hex[:12]}", endpoint_url=server,
                        region="us-east-1", keyring=KEYRING, temp_dir=tmp_path / "s3-temp",
                        **CREDENTIALS, **options)
    (tmp_path / "s3-temp").mkdir(exist_ok=True)
    storage.ensure_bucket()
    storage.requests = Requests(storage.client)
    return storage


@pytest.fixture
def s3(s3_server, tmp_path):
    return s3_storage(s3_server, tmp_path)


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return LocalStorage(tmp_path / "storage", keyring=KEYRING)
    return s3_storage(request.getfixturevalue("s3_server"), tmp_path)


def final_names(storage) -> list[str]:
    """Everything stored under a final name: files outside the temporary directory, or every
    object of the bucket (whatever its key)."""
    if isinstance(storage, LocalStorage):
        return sorted(str(p.relative_to(storage.root)) for p in storage.root.rglob("*")
                      if p.is_file() and storage.temp_dir not in p.parents)
    listing = storage.client.list_objects_v2(Bucket=storage.bucket)
    return sorted(o["Key"] for o in listing.get("Contents", ()))


def name_of(storage, sha: str) -> str:
    if isinstance(storage, LocalStorage):
        return f"{sha[:2]}/{sha[2:4]}/{sha}"
    return f"blobs/{sha[:2]}/{sha}"


def leftovers(storage) -> list:
    if isinstance(storage, LocalStorage):
        return storage.temp_files()
    return sorted(Path(storage.temp_dir).iterdir())


def raw_bytes(storage, sha: str) -> bytes:
    """What is stored (ciphertext when encrypted)."""
    if isinstance(storage, LocalStorage):
        return storage.blob_path(sha).read_bytes()
    return storage.client.get_object(Bucket=storage.bucket, Key=storage.key(sha))["Body"].read()


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


# --- the same behaviour on both backends --------------------------------------------------------

def test_put_names_content_by_sha256_and_reads_it_back(storage):
    data = b"frente do RG " * 1000
    blob = storage.put(data)
    sha = hashlib.sha256(data).hexdigest()
    assert blob == StoredBlob(sha256=sha, size=len(data), created=True)
    assert final_names(storage) == [name_of(storage, sha)]
    with storage.open(sha) as f:
        assert f.read() == data
        assert f.seekable() and f.seek(7) == 7 and f.read(2) == b"do"
    assert storage.exists(sha) and storage.size(sha) == len(data)
    assert list(storage.iter_sha256()) == [sha]
    assert leftovers(storage) == []
    assert isinstance(storage, Storage)


def test_an_empty_file(storage):
    blob = storage.put(b"")
    assert blob.size == 0 and storage.size(blob.sha256) == 0
    with storage.open(blob.sha256) as f:
        assert f.read() == b""


def test_put_streams_in_chunks(storage):
    stream = ZeroStream(5 * MB + 123)
    blob = storage.put(stream)
    assert blob.size == 5 * MB + 123
    assert blob.sha256 == hashlib.sha256(b"\0" * (5 * MB + 123)).hexdigest()
    assert set(stream.reads) == {CHUNK_SIZE} and len(stream.reads) == 7


def test_identical_content_is_stored_once(storage):
    first = storage.put(b"same bytes")
    second = storage.put(b"same bytes")
    assert first.sha256 == second.sha256
    assert (first.created, second.created) == (True, False)
    assert len(final_names(storage)) == 1
    assert leftovers(storage) == []


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
    assert len(final_names(storage)) == 1 and leftovers(storage) == []
    with storage.open(results[0].sha256) as f:
        assert f.read() == data


def test_a_stream_over_the_limit_is_aborted_early_and_leaves_nothing(storage):
    stream = ZeroStream(50 * MB)
    with pytest.raises(FileTooLarge) as exc:
        storage.put(stream, max_bytes=20 * MB)
    assert exc.value.max_bytes == 20 * MB
    assert stream.sent <= 20 * MB + CHUNK_SIZE
    assert final_names(storage) == [] and leftovers(storage) == []
    if isinstance(storage, S3Storage):
        assert storage.requests.of("PUT") == []  # nothing was even sent


def test_exactly_the_limit_is_accepted(storage):
    blob = storage.put(ZeroStream(2 * MB), max_bytes=2 * MB)
    assert blob.size == 2 * MB
    with pytest.raises(FileTooLarge):
        storage.put(ZeroStream(2 * MB + 1), max_bytes=2 * MB)


def test_a_client_that_disconnects_leaves_nothing(storage):
    class Disconnecting(ZeroStream):
        def read(self, size=-1):
            if self.sent >= 2 * MB:
                raise OSError("client went away")
            return super().read(size)

    with pytest.raises(OSError, match="client went away"):
        storage.put(Disconnecting(10 * MB))
    assert final_names(storage) == [] and leftovers(storage) == []


def test_delete_removes_only_that_content(storage):
    kept = storage.put(b"documento de outro pedido")
    gone = storage.put(b"documento deste pedido")
    assert storage.delete(gone.sha256) is True
    assert storage.delete(gone.sha256) is False
    assert not storage.exists(gone.sha256)
    with pytest.raises(BlobNotFound):
        storage.open(gone.sha256)
    with pytest.raises(BlobNotFound):
        storage.size(gone.sha256)
    with storage.open(kept.sha256) as f:
        assert f.read() == b"documento de outro pedido"
    assert storage.put(b"documento deste pedido").created is True
    assert list(storage.iter_sha256()) == sorted([kept.sha256, gone.sha256])


@pytest.mark.parametrize("name", ["../../../etc/passwd", "A" * 64, "ab" * 31, "",
                                  "ab/cd/" + "0" * 58, "0" * 63 + "g"])
def test_names_that_are_not_sha256_digests_are_refused(storage, name):
    for method in (storage.open, storage.exists, storage.size, storage.delete):
        with pytest.raises(ValueError):
            method(name)


def test_encrypted_at_rest_and_read_back_in_clear(storage):
    data = os.urandom(200_000)
    blob = storage.put(data, encrypt=True)
    assert blob.sha256 == hashlib.sha256(data).hexdigest() and blob.size == len(data)
    stored = raw_bytes(storage, blob.sha256)
    assert stored.startswith(encryption.MAGIC + b"\x02k1") and data[:1000] not in stored
    assert storage.size(blob.sha256) == len(data)
    with storage.open(blob.sha256) as f:
        assert f.read() == data
        f.seek(150_000)
        assert f.read(10) == data[150_000:150_010]
    assert storage.is_encrypted(blob.sha256)


def test_content_that_looks_encrypted_is_always_encrypted(storage):
    data = encryption.MAGIC + b"not really"
    blob = storage.put(data)
    assert raw_bytes(storage, blob.sha256) != data
    with storage.open(blob.sha256) as f:
        assert f.read() == data


def test_an_encrypted_put_replaces_a_plain_copy(storage):
    data = b"foto do rosto" * 100
    plain = storage.put(data)
    assert not storage.is_encrypted(plain.sha256)
    again = storage.put(data, encrypt=True)
    assert again.created is False and storage.is_encrypted(plain.sha256)
    with storage.open(plain.sha256) as f:
        assert f.read() == data
    # A plain put of the same content keeps the encrypted copy.
    storage.put(data)
    assert storage.is_encrypted(plain.sha256)


def test_reseal_encrypts_in_place_and_keeps_the_name(storage):
    data = os.urandom(150_000)
    blob = storage.put(data)
    sealed = storage.reseal(blob.sha256)
    assert sealed == encryption.Sealed(blob.sha256, len(data), None)
    assert storage.is_encrypted(blob.sha256)
    with storage.open(blob.sha256) as f:
        assert f.read() == data


def test_the_encrypted_format_is_the_same_on_disk_and_in_the_bucket(s3, tmp_path):
    local = LocalStorage(tmp_path / "storage", keyring=KEYRING)
    data = os.urandom(300_000)
    # Bucket -> disk.
    blob = s3.put(data, encrypt=True)
    path = local.blob_path(blob.sha256)
    path.parent.mkdir(parents=True)
    path.write_bytes(raw_bytes(s3, blob.sha256))
    with local.open(blob.sha256) as f:
        assert f.read() == data
    # Disk -> bucket.
    other = os.urandom(100_000)
    blob2 = local.put(other, encrypt=True)
    s3.client.put_object(Bucket=s3.bucket, Key=s3.key(blob2.sha256),
                         Body=local.blob_path(blob2.sha256).read_bytes())
    assert s3.size(blob2.sha256) == len(other)
    with s3.open(blob2.sha256) as f:
        assert f.read() == other


# --- only S3 ----------------------------------------------------------------------------------

def test_random_range_reads_of_an_encrypted_object_fetch_only_what_they_need(s3):
    data = random.Random(1).randbytes(3 * MB + 12345)
    blob = s3.put(data, encrypt=True)
    object_size = s3.client.head_object(Bucket=s3.bucket, Key=s3.key(blob.sha256))["ContentLength"]
    record = encryption.CHUNK_SIZE + encryption.TAG_SIZE
    rng = random.Random(2)
    s3.requests.clear()
    f = s3.open(blob.sha256)
    opened = sum(s3.requests.got)
    # Open: the start (header + read-ahead) and the last chunk (authenticated at open).
    assert len(s3.requests.of("GET")) == 2
    assert opened <= storage_s3.READ_AHEAD_MIN + 2 * record
    total = opened
    for _ in range(25):
        start = rng.randrange(len(data) - 1)
        length = rng.randrange(1, 200_000)
        s3.requests.clear()
        f.seek(start)
        assert f.read(length) == data[start:start + length]
        # Every GET is ranged, conditional on the version opened, and small: the chunks the
        # slice touches, plus at most one read-ahead window.
        gets = s3.requests.of("GET")
        assert all("Range" in h and "If-Match" in h for _, _, h in gets)
        chunks = (start + length - 1) // encryption.CHUNK_SIZE - start // encryption.CHUNK_SIZE + 1
        assert sum(s3.requests.got) <= (chunks + 1) * record + 4 * storage_s3.READ_AHEAD_MIN
        total += sum(s3.requests.got)
    f.close()
    assert total < 25 * 400_000 and object_size > 3 * MB
    # Sanity of the counter itself: reading everything fetches about the whole object.
    s3.requests.clear()
    with s3.open(blob.sha256) as f:
        assert f.read() == data
    assert object_size <= sum(s3.requests.got) <= object_size + 3 * storage_s3.READ_AHEAD_MAX


def test_an_http_range_request_on_a_stored_file_does_not_download_it(s3):
    """What send_blob(ranges=True) does for a video player: werkzeug over `open`."""
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request, Response
    from werkzeug.wsgi import wrap_file

    data = random.Random(3).randbytes(8 * MB)
    blob = s3.put(data, encrypt=True)
    s3.requests.clear()
    environ = EnvironBuilder(headers={"Range": "bytes=5000000-5000099"}).get_environ()
    request = Request(environ)
    response = Response(wrap_file(environ, s3.open(blob.sha256)), direct_passthrough=True)
    response.make_conditional(request, accept_ranges=True, complete_length=s3.size(blob.sha256))
    assert response.status_code == 206
    assert b"".join(response.response) == data[5_000_000:5_000_100]
    assert sum(s3.requests.got) < 500_000


def test_sequential_reads_grow_the_read_ahead(s3):
    data = random.Random(4).randbytes(20 * MB)
    blob = s3.put(data)
    s3.requests.clear()
    out = bytearray()
    with s3.open(blob.sha256) as f:
        while piece := f.read(8192):  # what a WSGI file wrapper reads
            out += piece
    assert bytes(out) == data
    assert len(s3.requests.of("GET")) <= 12  # 64 KiB, 128 KiB, … 8 MiB, 8 MiB
    assert sum(s3.requests.got) == len(data)


def test_a_put_that_fails_midway_leaves_nothing_under_the_final_key(s3, monkeypatch):
    data = os.urandom(3 * MB)
    sha = hashlib.sha256(data).hexdigest()
    real = storage_s3.S3Storage._upload

    class Breaking(io.RawIOBase):
        """The temporary file, failing once the PUT is on the wire and 1 MB of its body has
        gone out (over plain HTTP botocore first reads the body to sign it)."""

        def __init__(self, f):
            self.f = f

        def read(self, size=-1):
            if s3.requests.of("PUT") and self.f.tell() >= MB:
                raise OSError("disk or network failed mid-upload")
            return self.f.read(size if size is not None and size >= 0 else MB)

        def seek(self, *args):
            return self.f.seek(*args)

        def tell(self):
            return self.f.tell()

        def readable(self):
            return True

        def seekable(self):
            return True

    def breaking_upload(self, temp, out, sha256, *, conditional):
        return real(self, Breaking(temp), out, sha256, conditional=conditional)

    monkeypatch.setattr(storage_s3.S3Storage, "_upload", breaking_upload)
    with pytest.raises(Exception, match="mid-upload") as exc_info:
        s3.put(data)
    assert s3.requests.of("PUT"), "the upload never started"
    assert not s3.exists(sha) and final_names(s3) == [] and leftovers(s3) == []
    monkeypatch.setattr(storage_s3.S3Storage, "_upload", real)
    assert s3.put(data).created is True
    with s3.open(sha) as f:
        assert f.read() == data


def test_puts_are_conditional_and_a_lost_race_keeps_the_winner(s3, monkeypatch):
    data = b"selfie" * 1000
    first = s3.put(data)
    puts = s3.requests.of("PUT")
    assert [h.get("If-None-Match") for _, _, h in puts] in ([b"*"], ["*"])
    assert "Content-MD5" in puts[0][2]
    # Another process wins between our HEAD and our PUT: the server refuses ours (412).
    monkeypatch.setattr(s3, "_head", lambda sha256: None)
    s3.requests.clear()
    second = s3.put(data)
    assert second == StoredBlob(first.sha256, len(data), created=False)
    assert len(s3.requests.of("PUT")) == 1  # the refused one; nothing replaced it
    with s3.open(first.sha256) as f:
        assert f.read() == data


def test_a_server_without_conditional_puts(s3, monkeypatch):
    real = s3.client.put_object

    def no_conditionals(**kwargs):
        if "IfNoneMatch" in kwargs:
            raise ClientError({"Error": {"Code": "NotImplemented", "Message": "no"},
                               "ResponseMetadata": {"HTTPStatusCode": 501}}, "PutObject")
        return real(**kwargs)

    monkeypatch.setattr(s3.client, "put_object", no_conditionals)
    blob = s3.put(b"documento")
    assert blob.created and s3.conditional_put is False
    assert s3.put(b"documento").created is False
    with s3.open(blob.sha256) as f:
        assert f.read() == b"documento"


def test_a_changed_or_cut_encrypted_object_is_refused(s3):
    data = os.urandom(300_000)
    blob = s3.put(data, encrypt=True)
    stored = bytearray(raw_bytes(s3, blob.sha256))
    key = s3.key(blob.sha256)
    stored[100_000] ^= 1
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=bytes(stored))
    with s3.open(blob.sha256) as f, pytest.raises(encryption.IntegrityError):
        f.read()
    record = encryption.CHUNK_SIZE + encryption.TAG_SIZE
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=bytes(stored[:-record]))
    with pytest.raises(encryption.IntegrityError):
        s3.open(blob.sha256)


def test_an_object_replaced_while_read_is_never_mixed(s3):
    data = os.urandom(2 * MB)
    blob = s3.put(data, encrypt=True)
    f = s3.open(blob.sha256)
    assert f.read(10) == data[:10]
    s3.reseal(blob.sha256)  # new salt: every byte of the ciphertext differs
    f.seek(MB)
    with pytest.raises(BlobChanged):
        f.read(10)
    with s3.open(blob.sha256) as f:
        assert f.read() == data


def test_iter_sha256_lists_only_this_prefix(s3):
    a = s3.put(b"a").sha256
    s3.client.put_object(Bucket=s3.bucket, Key="other/" + a[:2] + "/" + a, Body=b"x")
    s3.client.put_object(Bucket=s3.bucket, Key="blobs/zz/not-a-digest", Body=b"x")
    assert list(s3.iter_sha256()) == [a]


def test_keys_and_prefix(s3_server, tmp_path):
    bare = s3_storage(s3_server, tmp_path, prefix="")
    sha = bare.put(b"x").sha256
    assert final_names(bare) == [f"{sha[:2]}/{sha}"]
    assert list(bare.iter_sha256()) == [sha]


# --- the app's setting ------------------------------------------------------------------------

def _flask_app(instance: Path, **settings) -> Flask:
    class Config(TestConfig):
        INSTANCE_DIR = instance

    for key, value in settings.items():
        setattr(Config, key, value)
    app = Flask("storage-s3-test")
    app.config.from_object(Config)
    return app


def test_storage_backend_setting_chooses_the_store(tmp_path, s3_server):
    assert isinstance(get_storage(_flask_app(tmp_path / "a")), LocalStorage)
    app = _flask_app(tmp_path / "b", STORAGE_BACKEND="s3", S3_ENDPOINT_URL=s3_server,
                     S3_BUCKET="chosen", S3_PREFIX="p", S3_REGION="us-east-1",
                     S3_ACCESS_KEY_ID="testing", S3_SECRET_ACCESS_KEY="testing",
                     DATA_KEYS=encryption.new_key_spec("kapp"))
    storage = get_storage(app)
    assert isinstance(storage, S3Storage) and storage is get_storage(app)
    assert (storage.bucket, storage.prefix, storage.endpoint_url) == ("chosen", "p", s3_server)
    storage.ensure_bucket()
    blob = storage.put(b"rosto", encrypt=True)
    assert raw_bytes(storage, blob.sha256).startswith(encryption.MAGIC + b"\x04kapp")
    with pytest.raises(ValueError, match="STORAGE_BACKEND"):
        get_storage(_flask_app(tmp_path / "c", STORAGE_BACKEND="ftp"))


# --- end to end --------------------------------------------------------------------------------

@pytest.mark.one_database  # the bucket, not the database
def test_documents_upload_and_page_image_through_s3(app, client, factory, mailbox, db, s3_server):
    """A client uploads an ID page with STORAGE_BACKEND=s3: the original and its renditions land
    in the bucket (nothing on the local disk), and the page's thumbnail is served from it."""
    from sqlalchemy import select

    from app.models.documents import DocumentPage
    from tests.support import documents as files
    from tests.test_documents import enter, upload

    bucket = f"e2e-{uuid.uuid4().hex[:12]}"
    app.config.update(STORAGE_BACKEND="s3", S3_ENDPOINT_URL=s3_server, S3_BUCKET=bucket,
                      S3_PREFIX="docs", S3_REGION="us-east-1", S3_ACCESS_KEY_ID="testing",
                      S3_SECRET_ACCESS_KEY="testing")
    app.extensions.pop("videoar.storage", None)
    storage = get_storage(app)
    assert isinstance(storage, S3Storage)
    storage.ensure_bucket()

    pending = factory.request()
    enter(client, pending)
    response = upload(client, "identity", files.jpeg(text="S3"))
    assert response.status_code == 200, response.text
    page = db.session.execute(select(DocumentPage)).scalar_one()
    stored = sorted(storage.iter_sha256())
    assert page.original_sha256 in stored and len(stored) >= 2  # original + renditions
    assert all(re.fullmatch(r"docs/[0-9a-f]{2}/[0-9a-f]{64}", k) for k in final_names(storage))
    local_root = Path(app.config["INSTANCE_DIR"]) / "storage"
    assert not local_root.exists() or not any(p.is_file() for p in local_root.rglob("*"))

    thumb = client.get(f"/documentos/envio/paginas/{page.id}/miniatura")
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
    sha = page.renditions[0].thumbnail_sha256
    assert thumb.data.startswith(b"\xff\xd8") and hashlib.sha256(thumb.data).hexdigest() == sha
    with storage.open(sha) as f:
        assert f.read() == thumb.data
