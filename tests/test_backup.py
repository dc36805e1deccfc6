"""Backups and restore: a consistent archive taken while uploads and audit appends go on,
restored into an empty database and storage with the dossier's hashes and the audit chain
intact; a tampered archive and a non-empty target are refused."""
import hashlib
import io
import json
import os
import secrets
import stat
import tarfile
import threading
import time

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from app import create_app
from app.config import TestConfig
from app.models import CertificateRequest, RecordingSegment, StoredFile
from app.services import audit, backup, encryption
from app.services.ca import ca_dir
from app.services.recording import recordings_root
from app.services.storage import get_storage, storage_root
from tests.support.dossier import call_done, install_ca


def _segment_files(app, conference):
    """The raw segments call_done hashed (sha256 of "<role><seq>"), written the way the media
    process leaves them, half of them encrypted at rest."""
    root = recordings_root(app.config)
    keyring = encryption.get_keyring()
    for n, segment in enumerate(conference.segments):
        path = root / segment.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"{segment.role}{segment.seq}".encode())
        if n % 2:
            encryption.seal_file(path, keyring)


def _finished_dossier(app, db, factory, agent):
    install_ca(app)
    cert_request = factory.request(agent=agent)
    conference = call_done(db, cert_request, agent)
    _segment_files(app, conference)
    # The face photo encrypted at rest, as the call stores it.
    face = next(c.file_sha256 for c in conference.captures if c.kind == "face")
    storage = get_storage()
    for sha256 in (face, conference.recording_sha256):
        storage.reseal(sha256)
    # Enough content that the backup takes a while next to the writer.
    for n in range(150):
        blob = storage.put(os.urandom(40_000), encrypt=bool(n % 2))
        db.session.add(StoredFile(sha256=blob.sha256, size=blob.size, mime="application/pdf"))
    audit.record("test.seeded", actor=audit.SYSTEM, cert_request=cert_request)
    db.session.commit()
    return cert_request


class _Writer(threading.Thread):
    """Uploads blobs with their rows and appends audit events until stopped."""

    def __init__(self, app):
        super().__init__(daemon=True)
        self.app = app
        self.stop = threading.Event()
        self.commits = 0
        self.error = None

    def run(self):
        from app.extensions import db

        try:
            with self.app.app_context():
                storage = get_storage()
                n = 0
                while not self.stop.is_set():
                    n += 1
                    blob = storage.put(os.urandom(3000), encrypt=bool(n % 2))
                    if db.session.get(StoredFile, blob.sha256) is None:
                        db.session.add(StoredFile(sha256=blob.sha256, size=blob.size,
                                                  mime="image/jpeg"))
                    audit.record("test.concurrent_upload", actor=audit.SYSTEM,
                                 details={"n": n, "sha256": blob.sha256})
                    db.session.commit()
                    self.commits += 1
                db.session.remove()
        except Exception as exc:  # reported by the test
            self.error = exc


@pytest.fixture
def restore_target(db, tmp_path):
    """A fresh, empty database of the test's kind (PostgreSQL: created here, dropped after)."""
    if db.engine.dialect.name == "sqlite":
        yield f"sqlite:///{tmp_path / 'restored.db'}"
        return
    base = make_url(db.engine.url.render_as_string(hide_password=False))
    name = f"test_restore_{secrets.token_hex(4)}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _restored_app(url, instance):
    class Config(TestConfig):
        SQLALCHEMY_DATABASE_URI = url
        INSTANCE_DIR = instance
        REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
        RATELIMIT_STORAGE_URI = REDIS_URL

    return create_app(Config)


def _dispose(app):
    from app.extensions import db

    with app.app_context():
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


def _count(db, column):
    return db.session.execute(select(func.count(column))).scalar_one()


def test_backup_while_running_restores_dossier_and_audit_chain(app, db, factory, agent, mailbox,
                                                               restore_target, tmp_path):
    cert_request = _finished_dossier(app, db, factory, agent)
    protocol = cert_request.protocol
    dossier_blobs = set(db.session.execute(select(StoredFile.sha256)).scalars())
    events_before = audit.check_chain().events
    db.session.commit()

    writer = _Writer(app)
    writer.start()
    try:
        deadline = time.monotonic() + 10
        while writer.commits < 3 and writer.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        commits_at_start = writer.commits
        report = backup.create_backup(tmp_path / "backups", with_secrets=True)
        commits_at_end = writer.commits
        # A few more after the backup: the restored system must not have them.
        time.sleep(0.05)
    finally:
        writer.stop.set()
        writer.join(20)
    assert writer.error is None, writer.error
    assert commits_at_end > commits_at_start, "nothing was written while the backup ran"

    # The archive holds no secret, and says so; the secrets file is apart and private.
    archive = report.archive
    assert archive.name.endswith(".tar.gz") and stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert stat.S_IMODE(report.secrets.stat().st_mode) == 0o600
    with tarfile.open(archive, "r:gz") as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile(backup.MANIFEST).read())
        settings = tar.extractfile("settings.json").read().decode()
    assert names[-1] == backup.MANIFEST and manifest["secrets_included"] is False
    assert not any(n.endswith(backup.SECRET_FILES) for n in names)
    assert app.config["KEYS_PASSPHRASE"] not in settings
    assert app.config["SECRET_KEY"] not in settings
    assert set(manifest["members"]) == set(names) - {backup.MANIFEST}
    assert manifest["counts"]["segments"] == 4 and manifest["missing"] == []

    source_storage = storage_root(app.config)
    restored = _restored_app(restore_target, tmp_path / "restored-instance")
    try:
        with restored.app_context():
            result = backup.restore_backup(archive, secrets=report.secrets)
            assert result.chain.intact, [str(b) for b in result.chain.breaks]
            assert result.missing_blobs == 0 and result.missing_segments == 0
            assert set(result.secrets_written) >= {"secret_key", "keys_passphrase", "data_keys"}
            assert storage_root(restored.config) != source_storage

            # The dossier: same request, every blob hashes to its name (decrypting).
            restored_request = db.session.execute(select(CertificateRequest).where(
                CertificateRequest.protocol == protocol)).scalar_one()
            assert restored_request.state == "conference_done"
            storage = get_storage()
            restored_blobs = set(db.session.execute(select(StoredFile.sha256)).scalars())
            assert dossier_blobs <= restored_blobs
            for sha256 in restored_blobs:
                digest = hashlib.sha256()
                with storage.open(sha256) as f:
                    while chunk := f.read(1 << 20):
                        digest.update(chunk)
                assert digest.hexdigest() == sha256
            assert any(storage.is_encrypted(s) for s in dossier_blobs)

            keyring = encryption.get_keyring()
            root = recordings_root(restored.config)
            segments = db.session.execute(select(RecordingSegment)).scalars().all()
            assert len(segments) == 4
            for segment in segments:
                with encryption.open_path(root / segment.path, keyring) as f:
                    assert hashlib.sha256(f.read()).hexdigest() == segment.sha256
            assert any(encryption.is_encrypted(root / s.path) for s in segments)

            # The audit chain: intact, with the events up to the snapshot and no later one
            # than the writer's last commit.
            check = audit.check_chain()
            assert check.intact
            assert check.events >= events_before + commits_at_start
            assert check.events <= events_before + commits_at_end
            # Every concurrent upload the snapshot recorded came with its blob.
            uploaded = _count(db, StoredFile.sha256) - len(dossier_blobs)
            assert uploaded >= commits_at_start
            # The built-in CA came back (its keys still under KEYS_PASSPHRASE).
            assert sorted(p.name for p in ca_dir(restored).rglob("*") if p.is_file()) == \
                sorted(p.name for p in ca_dir(app).rglob("*") if p.is_file())
            from app.services import ca as ca_service

            assert ca_service.builtin_ca().issuing_cert is not None
            db.session.remove()
    finally:
        _dispose(restored)


def _rewrite(archive, tampered, change):
    """Copy `archive` into `tampered`, passing each member's bytes through `change`."""
    with tarfile.open(archive, "r:gz") as src, tarfile.open(tampered, "w:gz") as out:
        for info in src:
            data = src.extractfile(info).read()
            data = change(info.name, data)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))


def test_tampered_archive_is_refused(app, db, factory, agent, mailbox, restore_target,
                                     tmp_path):
    _finished_dossier(app, db, factory, agent)
    report = backup.create_backup(tmp_path / "backups")
    with tarfile.open(report.archive, "r:gz") as tar:
        victim = next(n for n in tar.getnames() if n.startswith("storage/"))
    tampered = tmp_path / "tampered.tar.gz"
    _rewrite(report.archive, tampered,
             lambda name, data: data[:-1] + bytes([data[-1] ^ 1]) if name == victim else data)

    restored = _restored_app(restore_target, tmp_path / "restored-instance")
    try:
        with restored.app_context():
            with pytest.raises(backup.BackupError) as refused:
                backup.restore_backup(tampered)
            assert victim in str(refused.value.message)
            # Nothing was written: the database and the storage are still empty.
            assert backup._has_rows(db.engine) == []
            assert not backup._not_empty(storage_root(restored.config))
            db.session.remove()
        # The untouched archive goes in, through the command.
        from app.jobs.backup import restore_command

        with restored.app_context():  # the test's own app context is the source's
            result = restored.test_cli_runner().invoke(restore_command, [str(report.archive)])
        assert result.exit_code == 0, result.output
        assert "Cadeia de auditoria íntegra" in result.output
        assert "Sem --secrets" in result.output
    finally:
        _dispose(restored)


def test_restore_refuses_a_database_that_is_not_empty(app, db, factory, agent, mailbox,
                                                     runner, tmp_path):
    _finished_dossier(app, db, factory, agent)
    report = backup.create_backup(tmp_path / "backups")
    requests_before = _count(db, CertificateRequest.id)
    db.session.commit()
    with pytest.raises(backup.BackupError) as refused:
        backup.restore_backup(report.archive)
    assert "não está vazio" in str(refused.value.message)
    from app.jobs.backup import restore_command

    result = runner.invoke(restore_command, [str(report.archive)])
    assert result.exit_code == 1 and "não está vazio" in result.output
    assert _count(db, CertificateRequest.id) == requests_before


def test_scheduled_backup_keeps_the_newest_and_records_the_last(app, db, tmp_path, monkeypatch):
    from app.jobs.backup import scheduled_backup

    directory = tmp_path / "scheduled"
    monkeypatch.setitem(app.config, "BACKUP_DIR", str(directory))
    monkeypatch.setitem(app.config, "BACKUP_KEEP", 2)
    monkeypatch.setitem(app.config, "BACKUP_SECONDS", 1)  # each run is due
    names = []
    for _ in range(3):
        names.append(scheduled_backup()["file"])
        time.sleep(1.01)  # archives are named by the second
    assert [p.name for p in backup.list_archives(directory)] == names[1:]
    # A worker restart runs the job at once: with the last backup recent, nothing is made.
    monkeypatch.setitem(app.config, "BACKUP_SECONDS", 86400)
    assert scheduled_backup()["skipped"]
    assert [p.name for p in backup.list_archives(directory)] == names[1:]
    last = backup.last_backup(app.config)
    assert last["ok"] and last["file"] == names[-1] and last["size"] > 0
    assert not list(directory.glob("*.secrets.tar"))


def test_backup_command_says_secrets_are_kept_apart(app, runner, tmp_path):
    from app.jobs.backup import backup_command

    result = runner.invoke(backup_command, ["--dir", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert "NÃO estão no arquivo de backup" in result.output
    assert len(list((tmp_path / "cli").glob("*.tar.gz"))) == 1
    assert not list((tmp_path / "cli").glob("*.secrets.tar"))
