"""Encryption at rest of the files that show a person: face photos, stills of the ID, the call's
recordings (raw segments, the processed MP4 and its thumbnail). See docs/encryption.md.

    keyring = get_keyring()                          # DATA_KEYS, or instance/data_keys
    with open_path(path, keyring) as f: ...          # plain or encrypted: reads the plaintext
    seal_file(path, keyring)                         # encrypt in place (atomic replace)

An encrypted file ("VARE1") is a header and a series of AES-256-GCM chunks:

    b"VARE1" | key id length (1) | key id (ASCII) | log2 of the chunk size (1) | salt (16)
    chunk 0 | chunk 1 | … | chunk n-1      each: ciphertext of ≤ CHUNK_SIZE bytes + 16-byte tag

Each file has its own key, HKDF-SHA256(data key, salt); chunk i's nonce is i (96-bit big-endian)
and its associated data is the header + i + a last-chunk flag, so chunks cannot be moved,
swapped between files, dropped from the end nor the file cut short without the read failing.
A reader decrypts only the chunks it touches: seeking in a recording costs one chunk.

The SHA-256 recorded everywhere (the blob's name, the dossier, the termo) is always the one of
the plaintext: encrypting, rotating or decrypting a file never changes an evidence hash.

Data keys come from DATA_KEYS, "keyid:base64(32 bytes)[,keyid2:…]": the first encrypts, the
others only decrypt (key rotation: put the new key first, run `flask storage rotate-keys`, then
drop the old one). Without DATA_KEYS one key is generated once into `<INSTANCE_DIR>/data_keys`
(mode 600), as SECRET_KEY is.
"""
import base64
import hashlib
import io
import logging
import os
import re
import secrets
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

import click
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app
from flask.cli import AppGroup

log = logging.getLogger(__name__)

MAGIC = b"VARE1"
CHUNK_LOG2 = 16  # 64 KiB of plaintext per chunk
CHUNK_SIZE = 1 << CHUNK_LOG2
TAG_SIZE = 16
SALT_SIZE = 16
KEY_SIZE = 32
_HKDF_INFO = b"videoar blob encryption v1"
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_KEYS_FILE = "data_keys"
_EXTENSION_KEY = "videoar.data_keys"
_READ_SIZE = 1024 * 1024
_SEAL_SUFFIX = ".sealing"


class EncryptionError(Exception):
    """Encrypted content that cannot be read: a server fault, never something to show a user."""


class DataKeyError(EncryptionError):
    """DATA_KEYS is malformed, or a file names a key that is not configured."""


class IntegrityError(EncryptionError):
    """An encrypted file was changed, cut short or is not ours: no byte of it is trusted."""


# --- keys ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Keyring:
    """The data keys: `current_id` encrypts, every key in `keys` decrypts."""

    keys: dict = field(default_factory=dict)  # key id -> 32 bytes, the current one first
    current_id: str = ""

    def key(self, key_id: str) -> bytes:
        try:
            return self.keys[key_id]
        except KeyError:
            raise DataKeyError(f"data key {key_id!r} is not configured (DATA_KEYS)") from None

    @property
    def current(self) -> bytes:
        return self.key(self.current_id)

    def with_old_keys(self, other: "Keyring") -> "Keyring":
        """This keyring plus `other`'s keys it lacks, as decrypt-only keys."""
        keys = dict(self.keys)
        for key_id, key in other.keys.items():
            keys.setdefault(key_id, key)
        return Keyring(keys, self.current_id)


def new_key_spec(key_id: str | None = None) -> str:
    """A fresh "keyid:base64" entry for DATA_KEYS."""
    key_id = key_id or "k" + secrets.token_hex(4)
    if not _KEY_ID.fullmatch(key_id):
        raise DataKeyError(f"a key id is 1 to 32 of A-Z a-z 0-9 _ . - : {key_id!r}")
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(KEY_SIZE)).decode()}"


def parse_data_keys(spec: str) -> Keyring:
    """Read "keyid:base64[,keyid2:base64…]" (commas, spaces or new lines between entries);
    raises DataKeyError, never naming the key material."""
    keys = {}
    for entry in re.split(r"[,\s]+", spec.strip()):
        if not entry:
            continue
        key_id, sep, encoded = entry.partition(":")
        if not sep or not _KEY_ID.fullmatch(key_id):
            raise DataKeyError("DATA_KEYS: each entry is keyid:base64 (key id: 1 to 32 of "
                               "A-Z a-z 0-9 _ . -)")
        if key_id in keys:
            raise DataKeyError(f"DATA_KEYS: key id {key_id!r} appears twice")
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4),
                                   altchars=b"-_" if ("-" in encoded or "_" in encoded) else None,
                                   validate=True)
        except ValueError:
            raise DataKeyError(f"DATA_KEYS: key {key_id!r} is not valid base64") from None
        if len(key) != KEY_SIZE:
            raise DataKeyError(f"DATA_KEYS: key {key_id!r} must be {KEY_SIZE} bytes "
                               f"(it has {len(key)})")
        keys[key_id] = key
    if not keys:
        raise DataKeyError("DATA_KEYS holds no key")
    return Keyring(keys, next(iter(keys)))


def _instance_keys(path: Path) -> Keyring:
    """The generated keys of a development install, created once (mode 600)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under a temporary name and linked: another process starting at the same
        # moment either wins the link or reads the complete file, never a half-written one.
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".data_keys-")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(new_key_spec() + "\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(temp, path)
                log.warning("DATA_KEYS is not set: generated a data key into %s; keep a copy of "
                            "it apart from the backups of the storage (see docs/encryption.md)",
                            path)
            except FileExistsError:
                pass
        finally:
            os.unlink(temp)
    return parse_data_keys(path.read_text())


def load_keyring(config) -> Keyring:
    """DATA_KEYS (the setting, else the environment); without it, `<INSTANCE_DIR>/data_keys`.
    When DATA_KEYS is set and that file exists too (an install moved from the generated key
    to the environment), the file's keys are kept as decrypt-only keys until `rotate-keys`."""
    spec = config.get("DATA_KEYS") or os.environ.get("DATA_KEYS", "")
    path = Path(config["INSTANCE_DIR"]) / _KEYS_FILE
    if not spec.strip():
        return _instance_keys(path)
    keyring = parse_data_keys(spec)
    if path.exists():
        generated = parse_data_keys(path.read_text())
        missing = [k for k in generated.keys if k not in keyring.keys]
        if missing:
            log.warning("keys %s of %s are not in DATA_KEYS: kept for decryption only; run "
                        "`flask storage rotate-keys`, then move that file away", missing, path)
            keyring = keyring.with_old_keys(generated)
    return keyring


def get_keyring(app=None) -> Keyring:
    """The app's keyring (read once per process)."""
    app = app or current_app._get_current_object()
    keyring = app.extensions.get(_EXTENSION_KEY)
    if keyring is None:
        keyring = app.extensions[_EXTENSION_KEY] = load_keyring(app.config)
    return keyring


# --- the format ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Header:
    key_id: str
    chunk_size: int
    salt: bytes
    raw: bytes  # the header's bytes, authenticated with every chunk

    @classmethod
    def new(cls, key_id: str) -> "Header":
        salt = secrets.token_bytes(SALT_SIZE)
        kid = key_id.encode("ascii")
        raw = MAGIC + bytes([len(kid)]) + kid + bytes([CHUNK_LOG2]) + salt
        return cls(key_id, CHUNK_SIZE, salt, raw)

    @classmethod
    def read(cls, f: BinaryIO) -> "Header | None":
        """The header at `f`'s current position, or None when the file does not start with
        the magic (a plain file). Raises IntegrityError for a malformed header."""
        if f.read(len(MAGIC)) != MAGIC:
            return None
        length = f.read(1)
        if not length or not 1 <= length[0] <= 32:
            raise IntegrityError("malformed encryption header")
        kid = f.read(length[0])
        rest = f.read(1 + SALT_SIZE)
        if len(kid) != length[0] or len(rest) != 1 + SALT_SIZE or not 10 <= rest[0] <= 24:
            raise IntegrityError("malformed encryption header")
        try:
            key_id = kid.decode("ascii")
        except UnicodeDecodeError:
            raise IntegrityError("malformed encryption header") from None
        if not _KEY_ID.fullmatch(key_id):
            raise IntegrityError("malformed encryption header")
        return cls(key_id, 1 << rest[0], rest[1:], MAGIC + length + kid + rest)

    def aead(self, keyring: Keyring) -> AESGCM:
        file_key = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=self.salt,
                        info=_HKDF_INFO).derive(keyring.key(self.key_id))
        return AESGCM(file_key)

    def layout(self, file_size: int) -> tuple[int, int]:
        """(plaintext size, number of chunks) of a file of `file_size` bytes with this header;
        IntegrityError when no whole number of chunks fits."""
        body = file_size - len(self.raw)
        record = self.chunk_size + TAG_SIZE
        full, rest = divmod(body, record)
        if body <= 0 or (rest and rest < TAG_SIZE):
            raise IntegrityError("encrypted file cut short or padded")
        if rest == 0:
            return full * self.chunk_size, full
        return full * self.chunk_size + rest - TAG_SIZE, full + 1

    def nonce_aad(self, index: int, last: bool) -> tuple[bytes, bytes]:
        return struct.pack(">4xQ", index), self.raw + struct.pack(">QB", index, int(last))


@dataclass(frozen=True)
class FileInfo:
    encrypted: bool
    key_id: str | None
    size: int  # of the plaintext


def inspect_path(path: str | os.PathLike) -> FileInfo:
    """Whether the file is encrypted, under which key, and its plaintext size (from the header
    and the file's size: nothing is decrypted). Raises FileNotFoundError, IntegrityError."""
    with open(path, "rb") as f:
        header = Header.read(f)
        size = os.fstat(f.fileno()).st_size
    if header is None:
        return FileInfo(False, None, size)
    return FileInfo(True, header.key_id, header.layout(size)[0])


class ChunkEncryptor:
    """Writes the encrypted form of what is given to `write` into `out` (a binary file): the
    header at once, then each chunk once the next byte proves it is not the last."""

    def __init__(self, out: BinaryIO, keyring: Keyring):
        self.out = out
        self.header = Header.new(keyring.current_id)
        self._aead = self.header.aead(keyring)
        self._buffer = bytearray()
        self._index = 0
        out.write(self.header.raw)

    def _emit(self, data, last: bool):
        nonce, aad = self.header.nonce_aad(self._index, last)
        self.out.write(self._aead.encrypt(nonce, data, aad))
        self._index += 1

    def write(self, data) -> None:
        size = self.header.chunk_size
        self._buffer += data
        view, offset = memoryview(self._buffer), 0
        try:
            # Strictly more than a chunk: the chunk kept back may turn out to be the last.
            while len(self._buffer) - offset > size:
                self._emit(view[offset:offset + size], False)
                offset += size
        finally:
            view.release()
        del self._buffer[:offset]

    def finish(self) -> None:
        self._emit(self._buffer, True)
        self._buffer = bytearray()


class DecryptingReader(io.RawIOBase):
    """The plaintext of an encrypted file, seekable; decrypts only the chunks a read touches
    (keeping the last one). No `fileno()`: a server must not sendfile() the ciphertext."""

    def __init__(self, f: BinaryIO, header: Header, keyring: Keyring):
        super().__init__()
        self._f = f
        self._header = header
        self._aead = header.aead(keyring)
        self._record = header.chunk_size + TAG_SIZE
        self.size, self._chunks = header.layout(os.fstat(f.fileno()).st_size)
        self._pos = 0
        self._cached = (None, b"")
        # Authenticate the final chunk now: a file cut short (even at a chunk boundary) is
        # refused at open, so the size a Range response announces can be trusted.
        self._chunk(self._chunks - 1)

    def _chunk(self, index: int) -> bytes:
        if self._cached[0] == index:
            return self._cached[1]
        last = index == self._chunks - 1
        self._f.seek(len(self._header.raw) + index * self._record)
        want = (self.size - index * self._header.chunk_size + TAG_SIZE) if last else self._record
        data = self._f.read(want)
        if len(data) != want:
            raise IntegrityError("encrypted file cut short")
        nonce, aad = self._header.nonce_aad(index, last)
        try:
            plain = self._aead.decrypt(nonce, data, aad)
        except InvalidTag:
            raise IntegrityError(f"encrypted chunk {index} fails authentication") from None
        self._cached = (index, plain)
        return plain

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
        view = memoryview(buffer).cast("B")
        wanted, written = len(view), 0
        chunk_size = self._header.chunk_size
        while written < wanted and self._pos < self.size:
            index, offset = divmod(self._pos, chunk_size)
            plain = self._chunk(index)
            n = min(len(plain) - offset, wanted - written)
            view[written:written + n] = plain[offset:offset + n]
            written += n
            self._pos += n
        return written

    def readall(self):
        out = bytearray(max(0, self.size - self._pos))
        n = self.readinto(out)
        del out[n:]
        return bytes(out)

    def close(self):
        if not self.closed:
            self._f.close()
        super().close()


def open_path(path: str | os.PathLike, keyring: Keyring | Callable[[], Keyring]) -> BinaryIO:
    """A readable, seekable binary file of `path`'s plaintext: the file itself when it is
    plain, a decrypting reader when it starts with the magic. `keyring` may be a function,
    called only for an encrypted file. Raises FileNotFoundError, IntegrityError, DataKeyError."""
    f = open(path, "rb")
    try:
        header = Header.read(f)
        if header is None:
            # A fresh file: reading the magic filled the buffer and moved the descriptor past
            # it, and a seek back inside the buffer does not move the descriptor, while
            # sendfile (gunicorn's file wrapper) reads from the descriptor's own offset.
            f.close()
            return open(path, "rb")
        ring = keyring() if callable(keyring) else keyring
        return io.BufferedReader(DecryptingReader(f, header, ring),
                                 buffer_size=header.chunk_size)
    except BaseException:
        f.close()
        raise


def is_encrypted(path: str | os.PathLike) -> bool:
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def sha256_of(path: str | os.PathLike, keyring) -> tuple[str, int]:
    """SHA-256 and size of the plaintext (decrypting and authenticating when encrypted)."""
    digest, size = hashlib.sha256(), 0
    with open_path(path, keyring) as f:
        while chunk := f.read(_READ_SIZE):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def encrypt_stream(src: BinaryIO, out: BinaryIO, keyring: Keyring) -> tuple[str, int]:
    """Write the encryption of `src` (read to its end) into `out`; the plaintext's SHA-256
    and size."""
    digest, size = hashlib.sha256(), 0
    encryptor = ChunkEncryptor(out, keyring)
    while chunk := src.read(_READ_SIZE):
        digest.update(chunk)
        size += len(chunk)
        encryptor.write(chunk)
    encryptor.finish()
    return digest.hexdigest(), size


def needs_sealing(path: str | os.PathLike, keyring: Keyring) -> bool:
    """True when the file is plain or encrypted under another key than the current one."""
    with open(path, "rb") as f:
        header = Header.read(f)
    return header is None or header.key_id != keyring.current_id


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Sealed:
    sha256: str  # of the plaintext
    size: int
    previous_key: str | None  # None: it was plain


def seal_file(path: str | os.PathLike, keyring: Keyring, *, temp_dir: Path | None = None,
              temp_prefix: str | None = None, temp_suffix: str = _SEAL_SUFFIX,
              replace_if: Callable[[], bool] | None = None) -> Sealed | None:
    """Encrypt `path` in place under the current key (a plain file, or one under an older key):
    the plaintext is read (and authenticated), encrypted into a temporary file in `temp_dir`
    (the same file system; default: beside it), fsynced, and renamed over `path`, so a reader
    sees either the old file or the new one, whole. Returns None, touching nothing, when
    `replace_if` (checked just before the rename) says no."""
    path = Path(path)
    info = inspect_path(path)
    temp_dir = Path(temp_dir or path.parent)
    prefix = temp_prefix if temp_prefix is not None else f".{path.name}.{os.getpid()}."
    fd, temp = tempfile.mkstemp(dir=temp_dir, prefix=prefix, suffix=temp_suffix)
    try:
        with open_path(path, keyring) as src, os.fdopen(fd, "wb") as out:
            sha256, size = encrypt_stream(src, out, keyring)
            out.flush()
            os.fsync(out.fileno())
        if replace_if is not None and not replace_if():
            return None
        os.chmod(temp, path.stat().st_mode & 0o777)
        os.replace(temp, path)
        fsync_dir(path.parent)
    finally:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
    return Sealed(sha256, size, info.key_id)


def remove_stale_seal_files(directory: Path, name: str) -> None:
    """Temporary files that a killed `seal_file` of `directory/name` left behind."""
    for temp in directory.glob(f".{name}.*{_SEAL_SUFFIX}"):
        try:
            pid = int(temp.name[len(name) + 2:].split(".", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            temp.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- rotation and the one-off encryption of older files -----------------------------------------

@dataclass
class SealReport:
    sealed: int = 0  # files (re-)encrypted
    skipped: int = 0  # already under the current key, or plain and not asked for
    total_bytes: int = 0
    from_keys: dict = field(default_factory=dict)  # previous key id ("plain") -> count
    errors: list = field(default_factory=list)  # [{"file": …, "error": …}]

    def add(self, sealed: Sealed):
        self.sealed += 1
        self.total_bytes += sealed.size
        key = sealed.previous_key or "plain"
        self.from_keys[key] = self.from_keys.get(key, 0) + 1

    def details(self, **extra) -> dict:
        return {"sealed": self.sealed, "skipped": self.skipped, "bytes": self.total_bytes,
                "from_keys": self.from_keys, "errors": len(self.errors) or None,
                "error_files": [e["file"] for e in self.errors[:20]] or None, **extra}


def _segment_files(root: Path) -> Iterable[Path]:
    """Every raw segment under RECORDINGS_ROOT: `<conference id>/<role>-<conn>/<seq>.webm`."""
    if not root.is_dir():
        return
    for room in sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit()):
        yield from sorted(room.glob("*/[0-9]*.webm"))


def _seal_blob(storage, sha256: str, keyring: Keyring, report: SealReport, *, plain_too: bool):
    try:
        path = storage.blob_path(sha256)
        if not path.is_file():
            return
        info = inspect_path(path)
        if (info.encrypted and info.key_id == keyring.current_id) or (
                not info.encrypted and not plain_too):
            report.skipped += 1
            return
        sealed = storage.reseal(sha256)
        if sealed is not None:
            report.add(sealed)
            if sealed.sha256 != sha256:
                report.errors.append({"file": sha256, "error": "content does not match its name"})
    except (OSError, EncryptionError) as exc:
        report.errors.append({"file": sha256, "error": f"{type(exc).__name__}: {exc}"})


def _seal_segment(path: Path, keyring: Keyring, report: SealReport, *, plain_too: bool,
                  expected_sha256: str | None = None, name: str = ""):
    try:
        if not path.is_file():
            return
        info = inspect_path(path)
        if (info.encrypted and info.key_id == keyring.current_id) or (
                not info.encrypted and not plain_too):
            report.skipped += 1
            return
        remove_stale_seal_files(path.parent, path.name)
        sealed = seal_file(path, keyring)
        report.add(sealed)
        if expected_sha256 and sealed.sha256 != expected_sha256:
            report.errors.append({"file": name or str(path),
                                  "error": "content does not match the dossier's digest"})
    except (OSError, EncryptionError) as exc:
        report.errors.append({"file": name or str(path), "error": f"{type(exc).__name__}: {exc}"})


def rotate_keys() -> SealReport:
    """Re-encrypt under the current key every encrypted blob and raw segment that is under
    another key (each an atomic replace), and audit it. Plain files are left as they are.
    After it reports no error, the older keys can be removed from DATA_KEYS."""
    from ..extensions import db
    from . import audit
    from .recording import recordings_root
    from .storage import get_storage

    keyring = get_keyring()
    storage = get_storage()
    report = SealReport()
    for sha256 in storage.iter_sha256():
        _seal_blob(storage, sha256, keyring, report, plain_too=False)
    root = recordings_root(current_app.config)
    for path in _segment_files(root):
        _seal_segment(path, keyring, report, plain_too=False,
                      name=str(path.relative_to(root)))
    audit.record("storage.keys_rotated", actor=audit.SYSTEM,
                 details=report.details(key_id=keyring.current_id))
    db.session.commit()
    return report


def encrypt_existing(*, every_blob: bool = False) -> SealReport:
    """Encrypt what was stored in clear before encryption at rest: face photos and stills,
    processed recordings and thumbnails, raw segments (with `every_blob`, every blob of the
    storage too: documents, termos). Audited; safe to run again."""
    from sqlalchemy import select

    from ..extensions import db
    from ..models import Conference, ConferenceCapture, RecordingSegment
    from . import audit
    from .recording import recordings_root
    from .storage import get_storage

    keyring = get_keyring()
    storage = get_storage()
    report = SealReport()
    if every_blob:
        blobs = list(storage.iter_sha256())
    else:
        found = set(db.session.execute(select(ConferenceCapture.file_sha256).where(
            ConferenceCapture.file_sha256.is_not(None))).scalars())
        for video, thumb in db.session.execute(select(
                Conference.recording_sha256, Conference.recording_thumbnail_sha256)):
            found.update(x for x in (video, thumb) if x)
        blobs = sorted(found)
    segments = db.session.execute(select(RecordingSegment.path, RecordingSegment.sha256)
                                  .order_by(RecordingSegment.id)).all()
    db.session.commit()  # no transaction held while files are rewritten
    for sha256 in blobs:
        _seal_blob(storage, sha256, keyring, report, plain_too=True)
    root = recordings_root(current_app.config)
    for rel, sha256 in segments:
        _seal_segment(root / rel, keyring, report, plain_too=True, expected_sha256=sha256,
                      name=rel)
    audit.record("storage.encrypted_existing", actor=audit.SYSTEM,
                 details=report.details(key_id=keyring.current_id, every_blob=every_blob))
    db.session.commit()
    return report


# Registered by app/cli.py; AppGroup runs each command inside the app's context.
storage_cli = AppGroup("storage", help="The file storage: encryption at rest.")


def _echo_report(report: SealReport, verb: str):
    click.echo(f"{verb}: {report.sealed} file(s), {report.total_bytes} bytes; "
               f"already done or not concerned: {report.skipped}; "
               f"from: {report.from_keys or '-'}")
    for error in report.errors:
        click.echo(f"- {error['file']}: {error['error']}", err=True)
    if report.errors:
        raise SystemExit(1)


@storage_cli.command("new-key")
@click.option("--key-id", default=None, help="Default: a random one (k + 8 hex digits).")
def new_key_command(key_id):
    """Print a new data key entry to put first in DATA_KEYS."""
    click.echo(new_key_spec(key_id))


@storage_cli.command("rotate-keys")
def rotate_keys_command():
    """Re-encrypt every file under an older key with the current (first) key of DATA_KEYS."""
    _echo_report(rotate_keys(), "Re-encrypted")


@storage_cli.command("encrypt-existing")
@click.option("--all", "every_blob", is_flag=True,
              help="Every blob of the storage (documents and termos too), not only face "
                   "photos, stills and recordings.")
def encrypt_existing_command(every_blob):
    """Encrypt face photos, stills and recordings stored in clear before encryption at rest."""
    _echo_report(encrypt_existing(every_blob=every_blob), "Encrypted")
