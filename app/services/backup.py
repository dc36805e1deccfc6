"""Backups and restore of the whole system (docs/backup.md).

    report = create_backup(directory, with_secrets=False)   # one .tar.gz, taken while running
    result = restore_backup(archive, secrets=None)          # into an empty database and storage

The archive (`videoar-backup-<UTC time>.tar.gz`) holds:

    database/videoar.sqlite3 | database/videoar.pgdump   the database, one consistent snapshot
    storage/ab/cd/<sha256>                               every blob (as stored: some encrypted)
    recordings/<conference>/<connection>/<seq>.webm      raw recording segments (idem)
    ca/…                                                 the built-in CA (keys encrypted)
    settings.json                                        non-secret settings, for the record
    backup.json                                          the manifest, written last

The manifest has the format version, the time, the Alembic revision, the database kind, counts,
and the SHA-256 and size of every other member; restore refuses an archive whose members do
not match it. It is not signed: keep the archives where only the office can write.

Secrets are never in the archive: SECRET_KEY, KEYS_PASSPHRASE (decrypts the CA's and the
office's private keys), DATA_KEYS (decrypts face photos, stills and recordings) and the first
admin's credentials go, only when asked, into a separate `<name>.secrets.tar` (mode 600), to be
kept apart from the archives (a password manager, another medium): whoever holds both can read
everything, and the archive alone cannot decrypt the encrypted files nor use the keys.

Consistency while the system runs: the database is copied first (SQLite's online backup API;
`pg_dump` inside an exported REPEATABLE READ snapshot on PostgreSQL), and the lists of blobs and
segments it references are read from that same snapshot. Blobs and segments are immutable or
replaced by an atomic rename (re-encryption), so each file is opened once and its bytes are
those of one version. A blob stored after the snapshot is copied too when present (harmless); a
referenced file deleted after the snapshot (retention) is listed in the manifest as missing.
"""
import fcntl
import hashlib
import io
import json
import os
import re
import secrets as _secrets
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import text
from sqlalchemy.engine import make_url

from . import ServiceError

FORMAT_VERSION = 1
MANIFEST = "backup.json"
ARCHIVE_PREFIX = "videoar-backup-"
ARCHIVE_SUFFIX = ".tar.gz"
SECRETS_SUFFIX = ".secrets.tar"
LAST_FILE = "last.json"
SQLITE_MEMBER = "database/videoar.sqlite3"
PGDUMP_MEMBER = "database/videoar.pgdump"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1024 * 1024
# Secret files of the instance directory (generated on a development install).
SECRET_FILES = ("secret_key", "keys_passphrase", "data_keys", "admin-credentials.txt")
# Settings never written into the archive's settings.json (secrets, or holding one).
_SECRET_SETTING = re.compile(r"SECRET|PASSWORD|PASSPHRASE|TOKEN|DATA_KEYS|DATABASE_URI|"
                             r"REDIS_URL|RATELIMIT_STORAGE")
# Tables a freshly migrated database holds rows in before anything happened.
_SEED_TABLES = {"alembic_version", "audit_chain_head"}

KEPT_APART = _l("As chaves e os segredos (SECRET_KEY, KEYS_PASSPHRASE, DATA_KEYS) NÃO estão no "
                "arquivo de backup. Guarde-os à parte (num gerenciador de senhas ou em outra "
                "mídia): sem eles o backup não decifra as fotos, as gravações nem as chaves da "
                "AC; com eles junto do backup, quem tiver um tem tudo.")


class BackupError(ServiceError):
    pass


# --- shared helpers ---------------------------------------------------------------------------

def backup_dir(config) -> Path:
    """BACKUP_DIR, or `<INSTANCE_DIR>/backups` when it is empty."""
    return Path(config.get("BACKUP_DIR") or Path(config["INSTANCE_DIR"]) / "backups")


def _roots(config) -> dict[str, Path]:
    from .ca import ca_dir
    from .recording import recordings_root
    from .storage import storage_root

    return {"storage": storage_root(config), "recordings": recordings_root(config),
            "ca": ca_dir(current_app)}


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _fsync_dir(path: Path):
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes, mode: int = 0o600):
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


class _HashingReader:
    """Reads from `f`, hashing what was read (tarfile reads exactly the member's size)."""

    def __init__(self, f):
        self._f = f
        self.digest = hashlib.sha256()

    def read(self, n=-1):
        data = self._f.read(n)
        self.digest.update(data)
        return data


def _database_kind(url) -> str:
    backend = make_url(url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise BackupError(_l("Banco de dados não suportado pelo backup: %(kind)s.", kind=backend))
    return backend


def _sqlite_path(url) -> Path:
    database = make_url(url).database
    if database in (None, "", ":memory:"):
        raise BackupError(_l("Um banco SQLite em memória não tem backup."))
    return Path(database)


def _pg_env(url) -> tuple[dict, str]:
    """Environment for pg_dump / pg_restore (no password on the command line) and the
    database name."""
    u = make_url(url)
    env = dict(os.environ)
    for var, value in (("PGHOST", u.host), ("PGPORT", u.port), ("PGUSER", u.username),
                       ("PGPASSWORD", u.password)):
        if value not in (None, ""):
            env[var] = str(value)
    for key, value in (u.query or {}).items():
        if key == "sslmode":
            env["PGSSLMODE"] = value if isinstance(value, str) else value[0]
    return env, u.database


def _pg_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(_l("O programa %(name)s não foi encontrado (instale o pacote "
                             "postgresql-client).", name=name))
    return path


def _code_revisions() -> tuple[set[str], set[str]]:
    """Every Alembic revision the code knows, and its heads."""
    from alembic.script import ScriptDirectory

    migrate_ext = current_app.extensions["migrate"]
    config = migrate_ext.migrate.get_config(migrate_ext.directory)
    script = ScriptDirectory.from_config(config)
    return {r.revision for r in script.walk_revisions()}, set(script.get_heads())


def _local_storage():
    """The app's storage, which must be on local disk: an S3 bucket is kept by the bucket's own
    versioning and replication, not by these archives."""
    from .storage import get_storage

    storage = get_storage()
    if not hasattr(storage, "blob_path"):
        raise BackupError(_l("O backup cobre o armazenamento em disco local; com "
                             "STORAGE_BACKEND=s3, use o versionamento e a replicação do "
                             "bucket (docs/backup.md)."))
    return storage


@contextmanager
def _lock(directory: Path):
    """One backup or restore at a time per backup directory."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(_l("Outro backup está em andamento.")) from None
        yield


# --- backup -----------------------------------------------------------------------------------

@dataclass
class BackupReport:
    archive: Path
    size: int = 0
    created_at: str = ""
    revision: str | None = None
    database: str = ""
    counts: dict = field(default_factory=dict)
    missing: list = field(default_factory=list)  # referenced by the snapshot, gone when copied
    secrets: Path | None = None
    seconds: float = 0.0


@dataclass
class _Snapshot:
    member: str
    path: Path  # the copy, in a temporary directory
    revision: str | None
    blobs: set
    segments: list  # [(relative path, sha256)]


def _snapshot_sqlite(url, workdir: Path) -> _Snapshot:
    source = _sqlite_path(url)
    if not source.is_file():
        raise BackupError(_l("O banco de dados %(path)s não existe.", path=str(source)))
    copy = workdir / "videoar.sqlite3"
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(copy)
    try:
        src.execute("PRAGMA busy_timeout = 30000")
        # One step (pages=-1): the copy is the database at one instant, under a read lock
        # that WAL lets writers work beside.
        src.backup(dst)
    finally:
        src.close()
    try:
        dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        revision = _first(dst.execute("SELECT version_num FROM alembic_version"))
        blobs = {row[0] for row in dst.execute("SELECT sha256 FROM stored_file")}
        segments = list(dst.execute("SELECT path, sha256 FROM recording_segment ORDER BY id"))
    finally:
        dst.close()
    return _Snapshot(SQLITE_MEMBER, copy, revision, blobs, segments)


def _first(cursor):
    row = cursor.fetchone()
    return row[0] if row else None


def _snapshot_postgresql(engine, url, workdir: Path) -> _Snapshot:
    dump = workdir / "videoar.pgdump"
    env, dbname = _pg_env(url)
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        # The snapshot pg_dump reads is exported from this transaction, which reads the lists
        # of files from the very same snapshot; it stays open until pg_dump is done.
        snapshot_id = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        blobs = set(conn.execute(text("SELECT sha256 FROM stored_file")).scalars())
        segments = [tuple(r) for r in conn.execute(
            text("SELECT path, sha256 FROM recording_segment ORDER BY id"))]
        proc = subprocess.run(
            [_pg_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges",
             f"--snapshot={snapshot_id}", f"--file={dump}", dbname],
            env=env, capture_output=True, text=True)
        conn.rollback()
    if proc.returncode != 0:
        raise BackupError(_l("pg_dump falhou: %(error)s", error=proc.stderr.strip()[-500:]))
    return _Snapshot(PGDUMP_MEMBER, dump, revision, blobs, segments)


def _settings_record(config) -> dict:
    """The settings worth knowing on a new machine, secrets left out (named only)."""
    from ..config import Config

    values, kept_apart = {}, []
    for name in sorted(n for n in dir(Config) if n.isupper()):
        value = config.get(name)
        if _SECRET_SETTING.search(name):
            kept_apart.append(name)
        elif isinstance(value, (str, int, float, bool, list)) or value is None:
            values[name] = value
        elif isinstance(value, Path):
            values[name] = str(value)
    return {"settings": values, "kept_apart": kept_apart}


class _ArchiveWriter:
    def __init__(self, tar: tarfile.TarFile, mtime: float):
        self.tar = tar
        self.mtime = mtime
        self.members = {}  # name -> {"sha256", "size"}

    def add_bytes(self, name: str, data: bytes):
        self._add(name, io.BytesIO(data), len(data))

    def add_file(self, name: str, path: Path) -> bool:
        """Add the file as it is when opened (a rename over it afterwards changes nothing);
        False if it is gone."""
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            return False
        with f:
            self._add(name, f, os.fstat(f.fileno()).st_size)
        return True

    def _add(self, name: str, f, size: int):
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = self.mtime
        info.mode = 0o600
        reader = _HashingReader(f)
        self.tar.addfile(info, reader)
        self.members[name] = {"sha256": reader.digest.hexdigest(), "size": size}


def _skip(path: Path) -> bool:
    # Temporary files of a write or a re-encryption in progress.
    return path.name.startswith(".") or path.name.endswith((".part", ".sealing"))


def _walk(root: Path):
    """Regular files under `root` (relative POSIX paths), temporary ones left out."""
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not _skip(path) and path.is_file():
                yield path.relative_to(root).as_posix(), path


def create_backup(directory: str | os.PathLike | None = None, *,
                  with_secrets: bool = False) -> BackupReport:
    """Write one archive of the running system into `directory` (default BACKUP_DIR) and,
    with `with_secrets`, the secrets beside it in `<name>.secrets.tar` (mode 600). The
    archive appears under its final name only when complete. Raises BackupError."""
    from ..extensions import db

    started = time.monotonic()
    config = current_app.config
    directory = Path(directory) if directory else backup_dir(config)
    url = config["SQLALCHEMY_DATABASE_URI"]
    kind = _database_kind(url)
    created = _now()
    name = ARCHIVE_PREFIX + created.strftime("%Y%m%dT%H%M%SZ")
    with _lock(directory):
        archive = directory / (name + ARCHIVE_SUFFIX)
        n = 1
        while archive.exists():
            n += 1
            archive = directory / f"{name}-{n}{ARCHIVE_SUFFIX}"
        name = archive.name[:-len(ARCHIVE_SUFFIX)]
        report = BackupReport(archive=archive, created_at=created.isoformat(), database=kind)
        roots = _roots(config)
        storage = _local_storage()
        with tempfile.TemporaryDirectory(dir=directory, prefix=".work-") as work:
            work = Path(work)
            if kind == "sqlite":
                snap = _snapshot_sqlite(url, work)
            else:
                snap = _snapshot_postgresql(db.engine, url, work)
            db.session.remove()  # no transaction held while files are copied
            report.revision = snap.revision
            partial = work / "archive.part"
            # Light compression: photos, recordings and encrypted files do not shrink, the
            # database does at any level.
            with tarfile.open(partial, "w:gz", format=tarfile.PAX_FORMAT,
                              compresslevel=1) as tar:
                out = _ArchiveWriter(tar, created.timestamp())
                out.add_file(snap.member, snap.path)
                snap.path.unlink()
                blobs = set(storage.iter_sha256()) | snap.blobs
                for sha256 in sorted(blobs):
                    member = f"storage/{sha256[:2]}/{sha256[2:4]}/{sha256}"
                    if not out.add_file(member, storage.blob_path(sha256)) \
                            and sha256 in snap.blobs:
                        report.missing.append(member)
                referenced = {path for path, _sha in snap.segments}
                seen = set()
                for rel, path in _walk(roots["recordings"]):
                    if out.add_file(f"recordings/{rel}", path):
                        seen.add(rel)
                report.missing += [f"recordings/{p}" for p in sorted(referenced - seen)]
                for rel, path in _walk(roots["ca"]):
                    out.add_file(f"ca/{rel}", path)
                out.add_bytes("settings.json", json.dumps(
                    _settings_record(config), indent=1, sort_keys=True).encode())
                counts = {
                    "stored_files": len(snap.blobs),
                    "blobs": sum(1 for m in out.members if m.startswith("storage/")),
                    "segments": len(snap.segments),
                    "recording_files": sum(1 for m in out.members
                                           if m.startswith("recordings/")),
                    "ca_files": sum(1 for m in out.members if m.startswith("ca/")),
                }
                report.counts = counts
                manifest = {
                    "format": FORMAT_VERSION,
                    "app": "videoar",
                    "created_at": report.created_at,
                    "alembic_revision": snap.revision,
                    "database": kind,
                    "database_member": snap.member,
                    "counts": counts,
                    "missing": report.missing,
                    "secrets_included": False,
                    "secrets_note": str(KEPT_APART),
                    "members": out.members,
                }
                out.add_bytes(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
            with open(partial, "rb") as f:
                os.fsync(f.fileno())
            os.chmod(partial, 0o600)
            os.link(partial, archive)  # never replaces an archive
            _fsync_dir(directory)
        report.size = archive.stat().st_size
        if with_secrets:
            report.secrets = write_secrets(directory / (name + SECRETS_SUFFIX))
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _keyring_spec(keyring) -> str:
    import base64

    return ",".join(f"{key_id}:{base64.b64encode(key).decode()}"
                    for key_id, key in keyring.keys.items())


def write_secrets(path: Path) -> Path:
    """The secrets this system runs with, as a tar of instance files (mode 600): what
    `restore --secrets` writes back into the new machine's instance directory."""
    from .encryption import get_keyring

    config = current_app.config
    instance = Path(config["INSTANCE_DIR"])
    files = {
        "secret_key": config["SECRET_KEY"],
        "keys_passphrase": config["KEYS_PASSPHRASE"],
        # Every key, the decrypt-only ones too, the current one first.
        "data_keys": _keyring_spec(get_keyring()) + "\n",
    }
    credentials = instance / "admin-credentials.txt"
    if credentials.is_file():
        files["admin-credentials.txt"] = credentials.read_text()
    environment = {name: config.get(name) for name in sorted(n for n in config if n.isupper())
                   if _SECRET_SETTING.search(name) and isinstance(config.get(name), str)
                   and config.get(name) and name not in ("SECRET_KEY", "KEYS_PASSPHRASE")}
    files["environment.json"] = json.dumps(environment, indent=1, sort_keys=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, content in files.items():
                data = content.encode()
                info = tarfile.TarInfo(f"secrets/{name}")
                info.size, info.mode, info.mtime = len(data), 0o600, time.time()
                tar.addfile(info, io.BytesIO(data))
        f.flush()
        os.fsync(f.fileno())
    return path


# --- retention of archives and the status file -------------------------------------------------

def list_archives(directory: Path) -> list[Path]:
    """The archives in `directory`, oldest first (the name holds the UTC time)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir()
                  if p.name.startswith(ARCHIVE_PREFIX) and p.name.endswith(ARCHIVE_SUFFIX))


def prune(directory: Path, keep: int) -> list[Path]:
    """Delete the oldest archives (and their secrets files) beyond the newest `keep`."""
    archives = list_archives(directory)
    doomed = archives[:-keep] if keep > 0 else []
    for archive in doomed:
        archive.unlink(missing_ok=True)
        secrets_file = archive.with_name(archive.name[:-len(ARCHIVE_SUFFIX)] + SECRETS_SUFFIX)
        secrets_file.unlink(missing_ok=True)
    return doomed


def record_last(directory: Path, *, report: BackupReport | None = None,
                error: str | None = None) -> dict:
    """Write `last.json` (what the admin's status page shows) and return it."""
    status = {"at": _now().isoformat(), "ok": error is None, "error": error}
    if report is not None:
        status.update(file=report.archive.name, size=report.size, seconds=report.seconds,
                      counts=report.counts, missing=len(report.missing),
                      revision=report.revision)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_atomic(directory / LAST_FILE, json.dumps(status, indent=1).encode(), 0o644)
    return status


def last_backup(config=None) -> dict | None:
    """The last scheduled backup's outcome ({at, ok, error, file, size, …}), or None."""
    path = backup_dir(config or current_app.config) / LAST_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


# --- restore ----------------------------------------------------------------------------------

@dataclass
class RestoreReport:
    manifest: dict
    members: int = 0
    revision_from: str | None = None
    revision_to: str | None = None
    secrets_written: list = field(default_factory=list)
    secrets_overridden: list = field(default_factory=list)  # the environment wins over these
    missing_blobs: int = 0
    missing_segments: int = 0
    chain: object = None


def _member_target(name: str, roots: dict) -> Path | None:
    """Where a member goes; None for the manifest, settings and the database. Raises on a
    name that is not one of ours (no absolute paths, no `..`)."""
    parts = PurePosixPath(name).parts
    if name in (MANIFEST, "settings.json", SQLITE_MEMBER, PGDUMP_MEMBER):
        return None
    if not parts or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise BackupError(_l("O backup contém um nome inválido: %(name)s", name=name))
    top, rest = parts[0], parts[1:]
    if top == "storage":
        if not (len(rest) == 3 and _SHA256.fullmatch(rest[2])
                and rest[0] + rest[1] == rest[2][:4]):
            raise BackupError(_l("O backup contém um nome inválido: %(name)s", name=name))
        return roots["storage"].joinpath(*rest)
    if top in ("recordings", "ca") and rest:
        return roots[top].joinpath(*rest)
    raise BackupError(_l("O backup contém um nome inválido: %(name)s", name=name))


def _has_rows(engine) -> list[str]:
    """Tables with rows, those a freshly migrated database starts with aside."""
    names = sa_inspect(engine).get_table_names()
    busy = []
    with engine.connect() as conn:
        for table in names:
            if table in _SEED_TABLES:
                continue
            if conn.execute(text(f'SELECT 1 FROM "{table}" LIMIT 1')).first() is not None:
                busy.append(table)
        if "audit_chain_head" in names:
            seq = conn.execute(text("SELECT last_seq FROM audit_chain_head")).scalar()
            if seq:
                busy.append("audit_chain_head")
    return busy


def _not_empty(path: Path) -> bool:
    return path.is_dir() and any(not p.name.startswith(".") for p in path.iterdir())


def _check_empty(engine, roots: dict, force: bool):
    if force:
        return
    busy = _has_rows(engine)
    if busy:
        raise BackupError(_l("O banco de dados de destino não está vazio (%(tables)s): a "
                             "restauração só entra num banco vazio (ou use --force).",
                             tables=", ".join(busy[:5])))
    for key, root in roots.items():
        if _not_empty(root):
            raise BackupError(_l("A pasta de destino %(path)s não está vazia: a restauração "
                                 "só entra numa pasta vazia (ou use --force).", path=str(root)))


def _extract_verified(archive: Path, staging: Path, roots: dict) -> tuple[dict, dict]:
    """Extract every member into `staging`, hashing it; then check the members against the
    manifest (the last member). Returns the manifest and {member: staged path}."""
    staged, digests, manifest = {}, {}, None
    try:
        tar = tarfile.open(archive, "r|gz")
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(_l("O arquivo não é um backup legível: %(error)s",
                             error=str(exc))) from None
    try:
        with tar:
            for info in tar:
                if not info.isfile():
                    raise BackupError(_l("O backup contém um nome inválido: %(name)s",
                                         name=info.name))
                if info.name in digests:
                    raise BackupError(_l("O backup contém um membro repetido: %(name)s",
                                         name=info.name))
                f = tar.extractfile(info)
                if info.name == MANIFEST:
                    data = f.read()
                    digests[info.name] = hashlib.sha256(data).hexdigest()
                    try:
                        manifest = json.loads(data)
                    except ValueError:
                        raise BackupError(_l("O manifesto do backup é ilegível.")) from None
                    continue
                _member_target(info.name, roots)  # refuses foreign names before writing
                target = staging / info.name
                target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with open(target, "wb") as out:
                    while chunk := f.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                digests[info.name] = digest.hexdigest()
                staged[info.name] = target
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise BackupError(_l("O arquivo de backup está danificado: %(error)s",
                             error=str(exc))) from None
    if manifest is None or manifest.get("app") != "videoar":
        raise BackupError(_l("O arquivo não tem o manifesto de um backup do VideoAR."))
    if manifest.get("format") != FORMAT_VERSION:
        raise BackupError(_l("Formato de backup %(format)s não suportado.",
                             format=manifest.get("format")))
    expected = manifest.get("members") or {}
    bad = sorted(name for name in staged
                 if expected.get(name, {}).get("sha256") != digests[name])
    absent = sorted(set(expected) - set(staged))
    if bad or absent:
        raise BackupError(_l("O backup foi alterado ou está incompleto: %(members)s",
                             members=", ".join((bad + absent)[:5])))
    return manifest, staged


def _restore_sqlite(url, source: Path, force: bool):
    from ..extensions import db

    target = _sqlite_path(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    for engine in db.engines.values():
        engine.dispose()
    temp = target.with_name(f".{target.name}.restore-{_secrets.token_hex(4)}")
    shutil.copyfile(source, temp)
    for suffix in ("-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    os.replace(temp, target)
    _fsync_dir(target.parent)


def _restore_postgresql(url, source: Path, force: bool):
    from ..extensions import db

    # A migrated database without rows (checked before) or --force: its tables are dropped
    # and made again from the dump.
    clean = force or bool(sa_inspect(db.engine).get_table_names())
    for engine in db.engines.values():
        engine.dispose()
    env, dbname = _pg_env(url)
    command = [_pg_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
               "--single-transaction", f"--dbname={dbname}"]
    if clean:
        command += ["--clean", "--if-exists"]
    proc = subprocess.run(command + [str(source)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BackupError(_l("pg_restore falhou: %(error)s", error=proc.stderr.strip()[-500:]))


def _restore_secrets(path: Path, instance: Path, report: RestoreReport):
    """Write the secrets file's instance files (mode 600); an existing file is kept beside
    as `<name>.before-restore`."""
    from .encryption import _EXTENSION_KEY as KEYRING_KEY
    from .storage import _EXTENSION_KEY as STORAGE_KEY

    instance.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "r:") as tar:
        for info in tar:
            name = PurePosixPath(info.name).name
            if not info.isfile() or info.name != f"secrets/{name}" or name not in SECRET_FILES:
                continue
            data = tar.extractfile(info).read()
            target = instance / name
            if target.exists() and target.read_bytes() != data:
                shutil.copy2(target, target.with_name(name + ".before-restore"))
            _write_atomic(target, data)
            report.secrets_written.append(name)
    config = current_app.config
    for setting, name in (("SECRET_KEY", "secret_key"), ("KEYS_PASSPHRASE", "keys_passphrase")):
        if name in report.secrets_written:
            value = (instance / name).read_text().strip()
            if os.environ.get(setting) and os.environ[setting] != value:
                report.secrets_overridden.append(setting)
            else:
                config[setting] = value
    if os.environ.get("DATA_KEYS") and "data_keys" in report.secrets_written:
        report.secrets_overridden.append("DATA_KEYS")
    # This process read the keys already: read them again.
    current_app.extensions.pop(KEYRING_KEY, None)
    current_app.extensions.pop(STORAGE_KEY, None)


def restore_backup(archive: str | os.PathLike, *, secrets: str | os.PathLike | None = None,
                   force: bool = False) -> RestoreReport:
    """Bring back an archive into this app's database and folders, which must be empty
    (`force`: replace what is there). Every member is checked against the manifest before
    anything is written; the database is migrated if the archive is older than the code;
    the audit chain is checked at the end (`report.chain`). Raises BackupError."""
    from flask_migrate import upgrade

    from ..extensions import db
    from ..models import RecordingSegment, StoredFile
    from . import audit

    archive = Path(archive)
    config = current_app.config
    url = config["SQLALCHEMY_DATABASE_URI"]
    kind = _database_kind(url)
    roots = _roots(config)
    instance = Path(config["INSTANCE_DIR"])
    _local_storage()
    db.session.remove()
    _check_empty(db.engine, roots, force)
    instance.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=instance, prefix=".restore-") as staging:
        manifest, staged = _extract_verified(archive, Path(staging), roots)
        report = RestoreReport(manifest=manifest, members=len(staged) + 1)
        if manifest.get("database") != kind:
            raise BackupError(_l("O backup é de um banco %(theirs)s e este sistema usa "
                                 "%(ours)s.", theirs=manifest.get("database"), ours=kind))
        known, heads = _code_revisions()
        revision = manifest.get("alembic_revision")
        if revision is not None and revision not in known:
            raise BackupError(_l("O backup vem de uma versão mais nova do VideoAR (revisão "
                                 "%(rev)s): atualize o programa antes de restaurar.",
                                 rev=revision))
        report.revision_from = revision
        database_member = manifest.get("database_member")
        if database_member not in staged:
            raise BackupError(_l("O backup não contém o banco de dados."))
        if kind == "sqlite":
            _restore_sqlite(url, staged[database_member], force)
        else:
            _restore_postgresql(url, staged[database_member], force)
        for name, path in staged.items():
            target = _member_target(name, roots)
            if target is None:
                continue
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(path, 0o600)
            shutil.move(path, target)
        if secrets:
            _restore_secrets(Path(secrets), instance, report)
    if revision is None or revision not in heads:
        upgrade()
    db.session.remove()
    report.revision_to = db.session.execute(
        text("SELECT version_num FROM alembic_version")).scalar()
    from sqlalchemy import select

    from .recording import recordings_root
    from .storage import get_storage

    storage = get_storage()
    report.missing_blobs = sum(1 for sha256 in db.session.execute(
        select(StoredFile.sha256)).scalars() if not storage.exists(sha256))
    root = recordings_root(config)
    report.missing_segments = sum(1 for rel in db.session.execute(
        select(RecordingSegment.path)).scalars() if not (root / rel).is_file())
    db.session.commit()
    report.chain = audit.check_chain()
    return report
