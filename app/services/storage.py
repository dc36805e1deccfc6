"""Content-addressed file storage: local disk now, an S3-compatible store later.

Files are named by the SHA-256 of their content, never by the client's file name, so identical
content is stored once. Reference counting lives in the database (the caller's job); `delete`
here just deletes.

    storage = get_storage()                       # the app's store (STORAGE_ROOT)
    blob = storage.put(file.stream, max_bytes=...)  # streams; raises FileTooLarge
    with storage.open(blob.sha256) as f: ...
    storage.put(jpeg, encrypt=True)               # encrypted at rest (face photos, recordings)

`LocalStorage` writes each upload to a temporary file in the same filesystem while hashing it,
fsyncs it, and only then links it under its final name `ab/cd/abcd…`, so a partial file is never
visible under a final name, even after a crash. Leftover temporary files of a crash are removed
by `cleanup_temp`.

Encryption at rest (app/services/encryption.py, docs/encryption.md): `put(..., encrypt=True)`
stores the ciphertext under the plaintext's SHA-256; `open` returns a seekable file of the
plaintext whichever way the file is stored (the magic at its start tells them apart) and `size`
is the plaintext's, so every reader works unchanged. Content that itself starts with the magic is
always stored encrypted, so that a plain file can never be mistaken for an encrypted one.
"""
import errno
import hashlib
import io
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Protocol, runtime_checkable

from flask import current_app
from flask_babel import lazy_gettext as _l

from . import ServiceError
from . import encryption

CHUNK_SIZE = 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TEMP_PREFIX = "put-"
_TEMP_SUFFIX = ".part"
_EXTENSION_KEY = "videoar.storage"


class StorageError(ServiceError):
    pass


class FileTooLarge(StorageError):
    """The stream went past `max_bytes`; nothing was stored."""

    def __init__(self, max_bytes: int):
        super().__init__(too_large_message(max_bytes))
        self.max_bytes = max_bytes


class BlobNotFound(StorageError):
    def __init__(self, sha256: str):
        super().__init__(_l("O arquivo não foi encontrado no armazenamento."))
        self.sha256 = sha256


def too_large_message(max_bytes: int):
    return _l("O arquivo passa do limite de %(limit)s MB por arquivo. Envie um arquivo menor.",
              limit=format_megabytes(max_bytes))


def format_megabytes(n_bytes: int) -> str:
    """`n_bytes` in MB (MiB) the pt-BR way: "20", "2,5"."""
    mb = n_bytes / (1024 * 1024)
    text = f"{mb:.1f}".rstrip("0").rstrip(".")
    return text.replace(".", ",")


@dataclass(frozen=True)
class StoredBlob:
    sha256: str
    size: int
    # False when identical content was already stored (this put added nothing).
    created: bool = True


@runtime_checkable
class Storage(Protocol):
    """What the app needs from a file store; every method is safe to call from many threads
    and processes at once."""

    def put(self, stream: BinaryIO | bytes, *, max_bytes: int | None = None,
            encrypt: bool = False) -> StoredBlob:
        """Store the stream's content (read in chunks) under its SHA-256; raises FileTooLarge
        as soon as more than `max_bytes` were read, leaving nothing behind. With `encrypt`,
        the content is encrypted at rest (an identical plain copy is replaced)."""

    def open(self, sha256: str) -> BinaryIO:
        """A readable, seekable binary file of the content (decrypted); raises BlobNotFound."""

    def exists(self, sha256: str) -> bool: ...

    def size(self, sha256: str) -> int:
        """Size in bytes; raises BlobNotFound."""

    def delete(self, sha256: str) -> bool:
        """Delete the content; False if it was not there. Callers check references first."""

    def iter_sha256(self) -> Iterator[str]:
        """Every stored digest (for sweeps of unreferenced content)."""


def _check_sha256(sha256: str) -> str:
    # The digest becomes a path: anything but 64 lowercase hex digits is a programming error
    # (and could be a path traversal), never a "not found".
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
    return sha256


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStorage:
    """Content-addressed files under `root`: `root/ab/cd/abcd…`, temporary files in
    `root/.tmp` (same filesystem, so publishing is an atomic link)."""

    def __init__(self, root: str | os.PathLike, *, chunk_size: int = CHUNK_SIZE,
                 keyring: "encryption.Keyring | Callable[[], encryption.Keyring] | None" = None):
        self.root = Path(root)
        self.chunk_size = chunk_size
        self.temp_dir = self.root / ".tmp"
        # The data keys, or a function giving them (read only when encrypted content is met).
        self._keyring = keyring

    def __repr__(self):
        return f"LocalStorage({str(self.root)!r})"

    def _path(self, sha256: str) -> Path:
        _check_sha256(sha256)
        return self.root / sha256[:2] / sha256[2:4] / sha256

    @property
    def keyring(self) -> "encryption.Keyring":
        keyring = self._keyring() if callable(self._keyring) else self._keyring
        if keyring is None:
            raise encryption.DataKeyError("this storage has no data keys")
        return keyring

    def blob_path(self, sha256: str) -> Path:
        """Where the content lives on disk (encrypted or not): for maintenance only."""
        return self._path(sha256)

    def put(self, stream: BinaryIO | bytes, *, max_bytes: int | None = None,
            encrypt: bool = False) -> StoredBlob:
        if isinstance(stream, (bytes, bytearray, memoryview)):
            stream = io.BytesIO(stream)
        self.temp_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(dir=self.temp_dir, prefix=_TEMP_PREFIX,
                                         suffix=_TEMP_SUFFIX)
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
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
                out.flush()
                os.fsync(out.fileno())
            sha256 = digest.hexdigest()
            created = self._publish(Path(temp_name), self._path(sha256), size, encrypt)
            return StoredBlob(sha256=sha256, size=size, created=created)
        finally:
            # Published content is a second link to the same inode; the temporary name goes.
            try:
                os.unlink(temp_name)
            except FileNotFoundError:
                pass

    def _keep_existing(self, final: Path, size: int, encrypted: bool) -> bool:
        """Whether the file already under `final` may stay instead of the new copy: it holds
        content of the right size, and is encrypted if the new copy is (under the current key
        then, which costs nothing to ensure here)."""
        try:
            info = encryption.inspect_path(final)
        except (OSError, encryption.IntegrityError):
            return False  # damaged: the new copy replaces it
        if info.size != size:
            return False  # a damaged copy (the name proves what the content must be)
        if encrypted:
            return info.encrypted and info.key_id == self.keyring.current_id
        return True

    def _publish(self, temp: Path, final: Path, size: int, encrypted: bool = False) -> bool:
        """Give the fsynced temporary file its final name; False if that name already held
        the same content."""
        new_dirs = [d for d in (final.parent.parent, final.parent) if not d.is_dir()]
        final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        renamed = False
        try:
            os.link(temp, final)  # atomic, and fails instead of replacing
            created = True
        except FileExistsError:
            created = False
            if not self._keep_existing(final, size, encrypted):
                os.replace(temp, final)
                renamed = True
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            # A filesystem without hard links: rename, which replaces identical content
            # (except an encrypted copy by a plain one).
            created = not final.exists()
            if created or not self._keep_existing(final, size, encrypted):
                os.replace(temp, final)
                renamed = True
        # Make the new name, and any new directory, survive a power cut before the caller
        # records the digest.
        if created or renamed:
            _fsync_dir(final.parent)
        for directory in new_dirs:
            _fsync_dir(directory.parent)
        return created

    def open(self, sha256: str) -> BinaryIO:
        """The plaintext, seekable; an encrypted file is decrypted chunk by chunk as it is
        read, and raises encryption.IntegrityError (at open or on the read) if changed."""
        try:
            return encryption.open_path(self._path(sha256), lambda: self.keyring)
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).is_file()

    def size(self, sha256: str) -> int:
        """The plaintext's size."""
        try:
            return encryption.inspect_path(self._path(sha256)).size
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None

    def is_encrypted(self, sha256: str) -> bool:
        try:
            return encryption.is_encrypted(self._path(sha256))
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None

    def reseal(self, sha256: str) -> "encryption.Sealed | None":
        """Encrypt the content in place under the current key (a plain file, or one under an
        older key): atomic replace, readers see the old or the new file whole. None if the
        content was deleted meanwhile. Raises BlobNotFound, encryption.IntegrityError."""
        path = self._path(sha256)
        if not path.is_file():
            raise BlobNotFound(sha256)
        self.temp_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return encryption.seal_file(path, self.keyring, temp_dir=self.temp_dir,
                                    temp_prefix=_TEMP_PREFIX, temp_suffix=_TEMP_SUFFIX,
                                    replace_if=path.exists)

    def delete(self, sha256: str) -> bool:
        # Empty directories stay: removing them would race with a put creating content there.
        try:
            os.unlink(self._path(sha256))
        except FileNotFoundError:
            return False
        return True

    def iter_sha256(self) -> Iterator[str]:
        if not self.root.is_dir():
            return
        for first in sorted(self.root.iterdir()):
            if len(first.name) != 2 or not first.is_dir():
                continue
            for second in sorted(first.iterdir()):
                if not second.is_dir():
                    continue
                for entry in sorted(second.iterdir()):
                    if _SHA256.fullmatch(entry.name) and entry.name[:4] == first.name + second.name:
                        yield entry.name

    def temp_files(self) -> list[Path]:
        """Temporary files now present (a put in progress, or left by a crash)."""
        if not self.temp_dir.is_dir():
            return []
        return sorted(p for p in self.temp_dir.iterdir()
                      if p.name.startswith(_TEMP_PREFIX) and p.name.endswith(_TEMP_SUFFIX))

    def cleanup_temp(self, older_than_seconds: float = 24 * 3600) -> int:
        """Remove temporary files older than `older_than_seconds` (left by a crashed process;
        a live put touches its file at least every chunk). Returns how many were removed."""
        removed = 0
        limit = time.time() - older_than_seconds
        for path in self.temp_files():
            try:
                if path.stat().st_mtime < limit:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed


def storage_root(config) -> Path:
    """STORAGE_ROOT, or `<INSTANCE_DIR>/storage` when it is empty."""
    return Path(config.get("STORAGE_ROOT") or Path(config["INSTANCE_DIR"]) / "storage")


def get_storage(app=None) -> Storage:
    """The app's storage (one per app), with the app's data keys (DATA_KEYS, read when first
    needed): STORAGE_BACKEND "local" (default) is the disk under STORAGE_ROOT, "s3" an
    S3-compatible bucket (S3_BUCKET, S3_PREFIX, S3_ENDPOINT_URL…; app/services/storage_s3.py)."""
    app = app or current_app._get_current_object()
    storage = app.extensions.get(_EXTENSION_KEY)
    if storage is None:
        backend = (app.config.get("STORAGE_BACKEND") or "local").strip().lower()
        keyring = lambda: encryption.get_keyring(app)  # noqa: E731
        if backend == "local":
            storage = LocalStorage(storage_root(app.config), keyring=keyring)
        elif backend == "s3":
            from . import storage_s3  # boto3 is imported only by an app that uses it

            storage = storage_s3.from_config(app.config, keyring)
        else:
            raise ValueError(f"STORAGE_BACKEND must be 'local' or 's3', not {backend!r}")
        app.extensions[_EXTENSION_KEY] = storage
    return storage


class EncryptingStorage:
    """A view of a storage whose `put` always encrypts: hand it to code that stores files of
    a person (uploads.store_upload for the call's captures) so that everything it stores,
    renditions included, is encrypted at rest."""

    def __init__(self, storage: Storage):
        self._storage = storage

    def put(self, stream, *, max_bytes: int | None = None, encrypt: bool = True) -> StoredBlob:
        return self._storage.put(stream, max_bytes=max_bytes, encrypt=True)

    def __getattr__(self, name):
        return getattr(self._storage, name)


def encrypting(storage: Storage | None = None) -> Storage:
    """`storage` (default: the app's) with every `put` encrypted."""
    return EncryptingStorage(storage if storage is not None else get_storage())
