"""Content-addressed storage in an S3-compatible object store (AWS S3, MinIO, Ceph RGW, Garage…),
for an office that runs the web and worker processes on several machines (docs/scaling.md).

Same contract as `LocalStorage` (app/services/storage.py): objects are named by the plaintext's
SHA-256, `<S3_PREFIX>/<sha256[:2]>/<sha256>`; `put(..., encrypt=True)` writes the very same
"VARE1" chunked AES-GCM format (encryption.ChunkEncryptor), so an object copied from disk to the
bucket or back is read unchanged; `open` returns a seekable file of the plaintext.

put: the name is known only once the whole stream is read, so the stream goes to an anonymous
local temporary file (unlinked at creation: a killed process leaves nothing) while it is hashed,
checked against `max_bytes` and encrypted; then one PUT under the final key. An S3 PUT is atomic
(an object is visible whole or not at all), the body carries its Content-MD5 (a body cut short
or changed on the way is refused by the server), and it is sent with `If-None-Match: *` so that
two processes storing the same content at once create it once. A server without conditional
writes gets a HEAD first and an unconditional PUT (identical content: replacing it is harmless).

open: ranged GETs, no download of the whole object: a read fetches what it needs plus a
read-ahead window that starts small (a Range request of a video player seeking costs one small
GET) and doubles while the reads are sequential (streaming a recording costs few GETs). Each GET
after the first carries `If-Match` with the object's ETag, so bytes of two versions of an object
(one re-encrypted by `reseal` meanwhile) are never mixed.
"""
import base64
import hashlib
import io
import os
import re
import tempfile
import threading
from typing import BinaryIO, Callable, Iterator

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from . import encryption
from .storage import (CHUNK_SIZE, BlobNotFound, FileTooLarge, StorageError, StoredBlob,
                      _check_sha256)

# The longest possible header: magic, key id length, key id (≤ 32), chunk size log2, salt.
_HEADER_MAX = len(encryption.MAGIC) + 1 + 32 + 1 + encryption.SALT_SIZE
READ_AHEAD_MIN = 64 * 1024
READ_AHEAD_MAX = 8 * 1024 * 1024
# One PUT takes up to 5 GiB (S3's limit); a recording of a call is far below it.
MAX_OBJECT_BYTES = 5 * 1024 ** 3
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_CONDITIONAL_UNSUPPORTED = {"NotImplemented", "501"}


class BlobChanged(StorageError):
    """The object was replaced while it was being read (a re-encryption): read it again."""

    def __init__(self, sha256: str):
        super().__init__("the stored object changed while it was read")
        self.sha256 = sha256


def _code(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


def _total_size(content_range: str) -> int:
    """`bytes 0-63/1234` -> 1234."""
    return int(content_range.rsplit("/", 1)[1])


class _HashingWriter:
    """Writes through to `f` and keeps the MD5 of what was written (for Content-MD5)."""

    def __init__(self, f):
        self.f = f
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0

    def write(self, data):
        self.md5.update(data)
        self.size += len(data)
        return self.f.write(data)


class S3ObjectReader(io.RawIOBase):
    """The bytes of one object as a seekable file, fetched by ranged GETs with an adaptive
    read-ahead buffer. No `fileno()`: a server must stream it, not sendfile() it."""

    def __init__(self, client, bucket: str, key: str, sha256: str, *, size: int, etag: str,
                 first: bytes = b"", read_ahead_min: int = READ_AHEAD_MIN,
                 read_ahead_max: int = READ_AHEAD_MAX):
        super().__init__()
        self._client, self._bucket, self._key, self._sha256 = client, bucket, key, sha256
        self.size = size
        self.etag = etag
        self._pos = 0
        self._buf_start, self._buf = 0, bytes(first)  # bytes [start, start+len) of the object
        self._min, self._max = read_ahead_min, read_ahead_max
        self._window = read_ahead_min

    def _fetch(self, start: int, want: int) -> None:
        """Fill the buffer from `start` with at least `want` bytes (or up to the end)."""
        if start == self._buf_start + len(self._buf) and self._buf:
            self._window = min(self._window * 2, self._max)  # sequential: read further ahead
        else:
            self._window = self._min
        end = min(self.size, start + max(want, self._window)) - 1
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=self._key,
                                               Range=f"bytes={start}-{end}", IfMatch=self.etag)
        except ClientError as exc:
            code = _code(exc)
            if code in _NOT_FOUND:
                raise BlobNotFound(self._sha256) from None
            if code in ("PreconditionFailed", "412"):
                raise BlobChanged(self._sha256) from None
            raise
        with response["Body"] as body:
            data = body.read()
        if len(data) != end - start + 1:
            raise StorageError(f"short read of {self._key}: {len(data)} of {end - start + 1}")
        self._buf_start, self._buf = start, data

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self._pos

    def seek(self, offset, whence=io.SEEK_SET):
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise OSError(22, "negative seek position")
        self._pos = pos
        return pos

    def readinto(self, buffer):
        # Fills `buffer` whole unless the end comes first (callers such as the decrypting
        # reader count on a full read).
        view = memoryview(buffer).cast("B")
        wanted, written = len(view), 0
        while written < wanted and self._pos < self.size:
            offset = self._pos - self._buf_start
            if not 0 <= offset < len(self._buf):
                self._fetch(self._pos, wanted - written)
                offset = 0
            n = min(len(self._buf) - offset, wanted - written)
            view[written:written + n] = self._buf[offset:offset + n]
            written += n
            self._pos += n
        return written

    def readall(self):
        out = bytearray(max(0, self.size - self._pos))
        n = self.readinto(out)
        del out[n:]
        return bytes(out)


class _DecryptingObjectReader(encryption.DecryptingReader):
    """encryption.DecryptingReader over an object: the same format and checks, the ciphertext's
    size from the object (DecryptingReader takes it from fstat, which an object has not)."""

    def __init__(self, f: S3ObjectReader, header: "encryption.Header",
                 keyring: "encryption.Keyring"):
        io.RawIOBase.__init__(self)
        self._f = f
        self._header = header
        self._aead = header.aead(keyring)
        self._record = header.chunk_size + encryption.TAG_SIZE
        self.size, self._chunks = header.layout(f.size)
        self._pos = 0
        self._cached = (None, b"")
        self._chunk(self._chunks - 1)  # a cut object is refused at open, as on disk


class S3Storage:
    """Content-addressed objects in `bucket` under `prefix`: `<prefix>/ab/abcd…`."""

    def __init__(self, bucket: str, *, prefix: str = "storage", endpoint_url: str | None = None,
                 region: str | None = None, access_key_id: str | None = None,
                 secret_access_key: str | None = None, chunk_size: int = CHUNK_SIZE,
                 keyring: "encryption.Keyring | Callable[[], encryption.Keyring] | None" = None,
                 temp_dir: str | os.PathLike | None = None, client=None,
                 conditional_put: bool = True, read_ahead_min: int = READ_AHEAD_MIN,
                 read_ahead_max: int = READ_AHEAD_MAX):
        if not bucket:
            raise ValueError("S3Storage needs a bucket (S3_BUCKET)")
        self.bucket = bucket
        self.prefix = (prefix or "").strip("/")
        self.endpoint_url = endpoint_url or None
        self.region = region or None
        self._access_key_id = access_key_id or None
        self._secret_access_key = secret_access_key or None
        self.chunk_size = chunk_size
        self._keyring = keyring
        self.temp_dir = temp_dir
        self.conditional_put = conditional_put
        self.read_ahead_min, self.read_ahead_max = read_ahead_min, read_ahead_max
        self._client = client
        self._client_pid = os.getpid() if client is not None else None
        self._lock = threading.Lock()

    def __repr__(self):
        where = f"{self.endpoint_url}/" if self.endpoint_url else "s3://"
        return f"S3Storage({where}{self.bucket}/{self.prefix})"

    # --- plumbing ---------------------------------------------------------------------------

    @property
    def client(self):
        """A boto3 S3 client (thread-safe), made per process: a forked worker gets its own
        connections rather than sharing its parent's sockets."""
        if self._client is None or self._client_pid != os.getpid():
            with self._lock:
                if self._client is None or self._client_pid != os.getpid():
                    config = BotoConfig(
                        # Path-style addressing: what MinIO and most self-hosted stores expect.
                        s3={"addressing_style": "path" if self.endpoint_url else "auto"},
                        retries={"max_attempts": 4, "mode": "standard"},
                        connect_timeout=10, read_timeout=60, max_pool_connections=32,
                        # Content-MD5 protects the body; no streaming checksums, which several
                        # S3-compatible servers do not understand.
                        request_checksum_calculation="when_required",
                        response_checksum_validation="when_required")
                    session = boto3.session.Session()
                    self._client = session.client(
                        "s3", endpoint_url=self.endpoint_url, region_name=self.region,
                        aws_access_key_id=self._access_key_id,
                        aws_secret_access_key=self._secret_access_key, config=config)
                    self._client_pid = os.getpid()
        return self._client

    @property
    def keyring(self) -> "encryption.Keyring":
        keyring = self._keyring() if callable(self._keyring) else self._keyring
        if keyring is None:
            raise encryption.DataKeyError("this storage has no data keys")
        return keyring

    def key(self, sha256: str) -> str:
        """The object's key (maintenance and tests)."""
        _check_sha256(sha256)
        name = f"{sha256[:2]}/{sha256}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def _head(self, sha256: str) -> dict | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.key(sha256))
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return None
            raise

    def _get_start(self, sha256: str, length: int) -> tuple[bytes, int, str]:
        """The first `length` bytes (fewer if shorter), the object's size and ETag, in one GET;
        raises BlobNotFound."""
        key = self.key(sha256)
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key,
                                              Range=f"bytes=0-{length - 1}")
        except ClientError as exc:
            code = _code(exc)
            if code in _NOT_FOUND:
                raise BlobNotFound(sha256) from None
            if code not in ("InvalidRange", "416"):
                raise
            # An empty object has no byte 0.
            head = self._head(sha256)
            if head is None:
                raise BlobNotFound(sha256) from None
            return b"", head["ContentLength"], head["ETag"]
        with response["Body"] as body:
            data = body.read()
        size = (_total_size(response["ContentRange"]) if response.get("ContentRange")
                else response["ContentLength"])
        return data, size, response["ETag"]

    # --- the Storage protocol ---------------------------------------------------------------

    def put(self, stream: BinaryIO | bytes, *, max_bytes: int | None = None,
            encrypt: bool = False) -> StoredBlob:
        if isinstance(stream, (bytes, bytearray, memoryview)):
            stream = io.BytesIO(stream)
        # Anonymous (already unlinked): nothing is left behind by an error or a kill.
        with tempfile.TemporaryFile(dir=self.temp_dir, prefix="videoar-s3-put-") as temp:
            out = _HashingWriter(temp)
            digest = hashlib.sha256()
            size = 0
            chunk = stream.read(self.chunk_size)
            # Enough of the start to see whether it looks like an encrypted file.
            while chunk and len(chunk) < len(encryption.MAGIC):
                more = stream.read(self.chunk_size)
                if not more:
                    break
                chunk += more
            encrypt = encrypt or chunk.startswith(encryption.MAGIC)
            writer = encryption.ChunkEncryptor(out, self.keyring) if encrypt else out
            while chunk:
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise FileTooLarge(max_bytes)
                digest.update(chunk)
                writer.write(chunk)
                chunk = stream.read(self.chunk_size)
            if encrypt:
                writer.finish()
            if out.size > MAX_OBJECT_BYTES:
                raise StorageError(f"an object of {out.size} bytes is over one PUT's limit")
            temp.flush()
            sha256 = digest.hexdigest()
            created = self._publish(temp, out, sha256, size, encrypt)
        return StoredBlob(sha256=sha256, size=size, created=created)

    def _keep_existing(self, sha256: str, size: int, encrypted: bool) -> bool:
        """Whether the object already under the name may stay instead of the new copy (as
        LocalStorage._keep_existing: right size, and encrypted under the current key if the
        new copy is encrypted)."""
        try:
            start, object_size, _ = self._get_start(sha256, _HEADER_MAX)
            header = encryption.Header.read(io.BytesIO(start))
            plain_size = header.layout(object_size)[0] if header else object_size
        except BlobNotFound:
            return False
        except encryption.IntegrityError:
            return False  # damaged: the new copy replaces it
        if plain_size != size:
            return False
        if encrypted:
            return header is not None and header.key_id == self.keyring.current_id
        return True

    def _upload(self, temp, out: _HashingWriter, sha256: str, *, conditional: bool) -> None:
        temp.seek(0)
        extra = {"IfNoneMatch": "*"} if conditional else {}
        self.client.put_object(Bucket=self.bucket, Key=self.key(sha256), Body=temp,
                               ContentLength=out.size,
                               ContentMD5=base64.b64encode(out.md5.digest()).decode(),
                               ContentType="application/octet-stream", **extra)

    def _publish(self, temp, out: _HashingWriter, sha256: str, size: int,
                 encrypted: bool) -> bool:
        """Upload under the final name; False if that name already held the content."""
        if self._head(sha256) is not None:
            if self._keep_existing(sha256, size, encrypted):
                return False
            self._upload(temp, out, sha256, conditional=False)  # replace a damaged/plain copy
            return False
        if self.conditional_put:
            try:
                self._upload(temp, out, sha256, conditional=True)
                return True
            except ClientError as exc:
                code = _code(exc)
                if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                    # Another process stored it between our HEAD and our PUT.
                    if not self._keep_existing(sha256, size, encrypted):
                        self._upload(temp, out, sha256, conditional=False)
                    return False
                if code not in _CONDITIONAL_UNSUPPORTED:
                    raise
                self.conditional_put = False  # this server has no conditional writes
        self._upload(temp, out, sha256, conditional=False)
        return True

    def open(self, sha256: str) -> BinaryIO:
        """The plaintext, seekable, fetched by ranged GETs as it is read; an encrypted object is
        decrypted chunk by chunk and raises encryption.IntegrityError if changed."""
        first, size, etag = self._get_start(sha256, max(self.read_ahead_min, _HEADER_MAX))
        reader = S3ObjectReader(self.client, self.bucket, self.key(sha256), sha256, size=size,
                                etag=etag, first=first, read_ahead_min=self.read_ahead_min,
                                read_ahead_max=self.read_ahead_max)
        try:
            header = encryption.Header.read(reader)
            reader.seek(0)
            if header is None:
                return io.BufferedReader(reader, buffer_size=CHUNK_SIZE // 16)
            return io.BufferedReader(_DecryptingObjectReader(reader, header, self.keyring),
                                     buffer_size=header.chunk_size)
        except BaseException:
            reader.close()
            raise

    def exists(self, sha256: str) -> bool:
        return self._head(sha256) is not None

    def inspect(self, sha256: str) -> "encryption.FileInfo":
        """Encrypted or not, under which key, plaintext size: one small GET, nothing
        decrypted. Raises BlobNotFound, encryption.IntegrityError."""
        start, object_size, _ = self._get_start(sha256, _HEADER_MAX)
        header = encryption.Header.read(io.BytesIO(start))
        if header is None:
            return encryption.FileInfo(False, None, object_size)
        return encryption.FileInfo(True, header.key_id, header.layout(object_size)[0])

    def size(self, sha256: str) -> int:
        """The plaintext's size (for an encrypted object: from its header and its size)."""
        return self.inspect(sha256).size

    def is_encrypted(self, sha256: str) -> bool:
        return self.inspect(sha256).encrypted

    def reseal(self, sha256: str) -> "encryption.Sealed | None":
        """Encrypt the content under the current key (a plain object, or one under an older
        key): read and authenticated, re-encrypted into a temporary file, PUT over the old
        object (atomic: readers see the old or the new one, and a reader in the middle gets
        BlobChanged rather than mixed bytes). None if it was deleted meanwhile."""
        previous = self.inspect(sha256).key_id
        with tempfile.TemporaryFile(dir=self.temp_dir, prefix="videoar-s3-seal-") as temp:
            out = _HashingWriter(temp)
            with self.open(sha256) as src:
                digest, size = encryption.encrypt_stream(src, out, self.keyring)
            temp.flush()
            if self._head(sha256) is None:
                return None
            self._upload(temp, out, sha256, conditional=False)
        return encryption.Sealed(digest, size, previous)

    def delete(self, sha256: str) -> bool:
        if self._head(sha256) is None:
            return False
        self.client.delete_object(Bucket=self.bucket, Key=self.key(sha256))
        return True

    def iter_sha256(self) -> Iterator[str]:
        start = f"{self.prefix}/" if self.prefix else ""
        name = re.compile(re.escape(start) + r"([0-9a-f]{2})/([0-9a-f]{64})")
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
            for item in page.get("Contents", ()):
                match = name.fullmatch(item["Key"])
                if match and match[2][:2] == match[1]:
                    yield match[2]

    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (development and tests; in production the bucket
        is made, with its access policy, by whoever runs the store)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) not in _NOT_FOUND | {"NoSuchBucket"}:
                raise
            args = {"Bucket": self.bucket}
            if self.region and self.region != "us-east-1":
                args["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            self.client.create_bucket(**args)


def from_config(config, keyring) -> S3Storage:
    """The S3Storage of the app's settings (S3_BUCKET, S3_PREFIX, S3_ENDPOINT_URL, S3_REGION,
    S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY; unset credentials: boto3's usual chain, e.g. an
    instance role or AWS_* variables)."""
    return S3Storage(config.get("S3_BUCKET") or "",
                     prefix=config.get("S3_PREFIX", "storage"),
                     endpoint_url=config.get("S3_ENDPOINT_URL") or None,
                     region=config.get("S3_REGION") or None,
                     access_key_id=config.get("S3_ACCESS_KEY_ID") or None,
                     secret_access_key=config.get("S3_SECRET_ACCESS_KEY") or None,
                     temp_dir=config.get("S3_TEMP_DIR") or None,
                     keyring=keyring)
