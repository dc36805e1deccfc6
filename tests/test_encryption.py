"""Encryption at rest (docs/encryption.md): the format, random access, tampering, rotation, the
call's face photo and recording encrypted on disk and served decrypted; and the LGPD privacy
notice on the client's pages."""
import base64
import hashlib
import io
import json
import os
import random
from datetime import datetime, timezone

import av
import pytest
from sqlalchemy import select

from app.models import (AuditEvent, Conference, OfficeSettings, RecordingSegment,
                        StoredFile)
from app.services import encryption
from app.services.encryption import CHUNK_SIZE, MAGIC, parse_data_keys
from app.services.storage import LocalStorage, get_storage
from tests.support.documents import jpeg
from tests.test_admin import OFFICE
from tests.test_conference_call import bind_client, open_room, started
from tests.test_recording_processing import SMALL_SECONDS, _conference, call_small  # noqa: F401

PATTERN = b"SEGREDO-DO-TITULAR-52998224725-"


def spec(key_id: str, fill: int) -> str:
    return f"{key_id}:{base64.b64encode(bytes([fill]) * 32).decode()}"


KEYRING = parse_data_keys(spec("k1", 1))


@pytest.fixture
def storage(tmp_path):
    return LocalStorage(tmp_path / "storage", keyring=KEYRING)


def on_disk(storage, sha256) -> bytes:
    return storage.blob_path(sha256).read_bytes()


def use_keys(app, value: str):
    """Switch the app's DATA_KEYS (as a restart with a new environment would)."""
    app.config["DATA_KEYS"] = value
    app.extensions.pop("videoar.data_keys", None)


# --- keys ---------------------------------------------------------------------------------------

def test_data_keys_are_parsed_and_checked():
    ring = parse_data_keys(f"{spec('new', 2)}, {spec('old', 3)}")
    assert ring.current_id == "new" and list(ring.keys) == ["new", "old"]
    assert ring.current == bytes([2]) * 32
    urlsafe = base64.urlsafe_b64encode(b"\xfb" * 32).decode().rstrip("=")
    assert parse_data_keys(f"u:{urlsafe}").current == b"\xfb" * 32
    for bad in ["", "nokey", "k:" + base64.b64encode(b"short").decode(),
                f"{spec('a', 1)},{spec('a', 2)}", "bad id!:" + spec("x", 1)[2:], "k:***"]:
        with pytest.raises(encryption.DataKeyError) as exc:
            parse_data_keys(bad)
        assert base64.b64encode(bytes([1]) * 32).decode() not in str(exc.value)
    with pytest.raises(encryption.DataKeyError):
        ring.key("gone")
    assert parse_data_keys(encryption.new_key_spec("k2")).current_id == "k2"


def test_without_data_keys_one_key_is_generated_once_with_mode_600(tmp_path, monkeypatch):
    monkeypatch.delenv("DATA_KEYS", raising=False)
    config = {"INSTANCE_DIR": tmp_path, "DATA_KEYS": ""}
    first = encryption.load_keyring(config)
    path = tmp_path / "data_keys"
    assert path.stat().st_mode & 0o777 == 0o600
    assert encryption.load_keyring(config) == first
    # Set later in the environment: the generated key stays readable until rotated away.
    ring = encryption.load_keyring({**config, "DATA_KEYS": spec("prod", 9)})
    assert ring.current_id == "prod" and first.current_id in ring.keys


# --- the format and random access ---------------------------------------------------------------

def test_encrypted_blob_hides_the_plaintext_and_reads_back(storage):
    photo = jpeg(640, 480, text="ROSTO")
    secret = PATTERN * 5000
    for data in (photo, secret):
        blob = storage.put(data, encrypt=True)
        assert blob.sha256 == hashlib.sha256(data).hexdigest()  # the plaintext's: evidence
        raw = on_disk(storage, blob.sha256)
        assert raw.startswith(MAGIC) and storage.is_encrypted(blob.sha256)
        assert data[:16] not in raw and PATTERN not in raw and b"JFIF" not in raw
        assert storage.size(blob.sha256) == len(data) < len(raw)
        with storage.open(blob.sha256) as f:
            assert f.read() == data
        assert list(storage.iter_sha256()).count(blob.sha256) == 1
    assert storage.temp_files() == []


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1,
                                  3 * CHUNK_SIZE, 3 * CHUNK_SIZE + 12345])
def test_round_trip_at_chunk_boundaries(storage, size):
    data = os.urandom(size)
    blob = storage.put(data, encrypt=True)
    assert storage.size(blob.sha256) == size
    with storage.open(blob.sha256) as f:
        assert f.read() == data
        assert f.read() == b""


def test_random_ranges_equal_the_plaintext_slices(storage):
    rng = random.Random(20261122)
    data = rng.randbytes(5 * CHUNK_SIZE + 777)
    blob = storage.put(io.BytesIO(data), encrypt=True)
    with storage.open(blob.sha256) as f:
        assert f.seekable() and f.seek(0, io.SEEK_END) == len(data)
        for _ in range(500):
            start = rng.randrange(0, len(data) + 10)
            length = rng.choice([0, 1, 7, 4096, CHUNK_SIZE, rng.randrange(0, 3 * CHUNK_SIZE)])
            f.seek(start)
            assert f.read(length) == data[start:start + length], (start, length)
            assert f.tell() == min(start + length, max(start, len(data)))
        f.seek(-100, io.SEEK_END)
        f.seek(10, io.SEEK_CUR)
        assert f.read() == data[-90:]


def test_the_reader_offers_no_file_descriptor(storage):
    """A server must not sendfile() the ciphertext (gunicorn does when fileno() works)."""
    blob = storage.put(b"x" * 100, encrypt=True)
    with storage.open(blob.sha256) as f:
        with pytest.raises(io.UnsupportedOperation):
            f.fileno()


def test_a_tampered_chunk_is_an_error_not_garbage(storage):
    data = (PATTERN * (3 * CHUNK_SIZE // len(PATTERN) + 1))[:3 * CHUNK_SIZE]
    blob = storage.put(data, encrypt=True)
    path = storage.blob_path(blob.sha256)
    raw = bytearray(path.read_bytes())
    header = len(raw) - 3 * (CHUNK_SIZE + 16)
    raw[header + CHUNK_SIZE + 16 + 100] ^= 0x01  # one bit of chunk 1
    path.write_bytes(raw)
    with storage.open(blob.sha256) as f:
        assert f.read(1000) == data[:1000]  # chunk 0 is intact
        with pytest.raises(encryption.IntegrityError):
            f.read(2 * CHUNK_SIZE)
    with pytest.raises(encryption.IntegrityError):
        with storage.open(blob.sha256) as f:
            f.read()


def test_swapped_chunks_and_a_changed_header_are_refused(storage):
    data = os.urandom(3 * CHUNK_SIZE)
    blob = storage.put(data, encrypt=True)
    path = storage.blob_path(blob.sha256)
    raw = path.read_bytes()
    header, record = len(raw) - 3 * (CHUNK_SIZE + 16), CHUNK_SIZE + 16
    chunks = [raw[header + i * record: header + (i + 1) * record] for i in range(3)]
    path.write_bytes(raw[:header] + chunks[1] + chunks[0] + chunks[2])
    with storage.open(blob.sha256) as f, pytest.raises(encryption.IntegrityError):
        f.read(10)
    # Another file's salt in the header: every chunk fails.
    other = on_disk(storage, storage.put(os.urandom(3 * CHUNK_SIZE), encrypt=True).sha256)
    path.write_bytes(other[:header] + raw[header:])
    with pytest.raises(encryption.IntegrityError):
        storage.open(blob.sha256)


@pytest.mark.parametrize("cut", ["one chunk", "mid chunk", "header only", "extra byte"])
def test_a_truncated_or_padded_file_is_detected(storage, cut):
    data = os.urandom(3 * CHUNK_SIZE + 500)
    blob = storage.put(data, encrypt=True)
    path = storage.blob_path(blob.sha256)
    raw = path.read_bytes()
    header = len(raw) - len(data) - 4 * 16
    changed = {"one chunk": raw[:header + 3 * (CHUNK_SIZE + 16)],
               "mid chunk": raw[:-300],
               "header only": raw[:header],
               "extra byte": raw + b"\0" * 20}[cut]
    path.write_bytes(changed)
    with pytest.raises(encryption.IntegrityError):
        with storage.open(blob.sha256) as f:
            f.read()


def test_plain_files_keep_working_and_a_lookalike_is_stored_encrypted(storage):
    plain = storage.put(b"documento em claro")
    assert not storage.is_encrypted(plain.sha256)
    with storage.open(plain.sha256) as f:
        assert f.read() == b"documento em claro"
    # Content that itself starts with the magic can never be mistaken for ciphertext.
    lookalike = MAGIC + b"\x02k1" + b"not really encrypted"
    blob = storage.put(lookalike)
    assert storage.is_encrypted(blob.sha256)
    with storage.open(blob.sha256) as f:
        assert f.read() == lookalike


def test_identical_content_is_upgraded_to_encrypted_never_downgraded(storage):
    photo = jpeg(320, 240)
    first = storage.put(photo)
    assert not storage.is_encrypted(first.sha256)
    again = storage.put(photo, encrypt=True)
    assert (again.sha256, again.created) == (first.sha256, False)
    assert storage.is_encrypted(first.sha256)
    assert storage.put(photo).created is False
    assert storage.is_encrypted(first.sha256)
    with storage.open(first.sha256) as f:
        assert f.read() == photo
    assert storage.temp_files() == []


def test_a_file_under_an_unknown_key_is_not_readable(storage, tmp_path):
    blob = storage.put(b"foto", encrypt=True)
    other = LocalStorage(storage.root, keyring=parse_data_keys(spec("k9", 9)))
    with pytest.raises(encryption.DataKeyError):
        other.open(blob.sha256)
    assert other.size(blob.sha256) == 4  # the size needs no key


def test_pyav_and_pil_read_through_the_decrypting_reader(storage):
    from PIL import Image

    photo = jpeg(800, 600)
    blob = storage.put(photo, encrypt=True)
    with storage.open(blob.sha256) as f:
        assert Image.open(f).size == (800, 600)


def test_seal_file_encrypts_in_place_and_keeps_the_digest(tmp_path):
    path = tmp_path / "00001.webm"
    data = PATTERN * 10000
    path.write_bytes(data)
    sealed = encryption.seal_file(path, KEYRING)
    assert sealed.sha256 == hashlib.sha256(data).hexdigest() and sealed.previous_key is None
    assert PATTERN not in path.read_bytes() and encryption.is_encrypted(path)
    assert encryption.sha256_of(path, KEYRING) == (sealed.sha256, len(data))
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


# --- rotation and older files (app, audit) ------------------------------------------------------

def _segment_file(app, conference_id, data: bytes):
    from app.services.recording import recordings_root

    path = recordings_root(app.config) / str(conference_id) / "client-c1" / "00001.webm"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_rotation_with_two_keys(app, db, runner, tmp_path):
    storage = get_storage()
    use_keys(app, spec("old", 1))
    photo, doc = jpeg(400, 300, text="ROSTO"), b"%PDF-1.4 documento"
    old_blob = storage.put(photo, encrypt=True)
    plain_blob = storage.put(doc)
    segment = _segment_file(app, 1, PATTERN * 3000)
    encryption.seal_file(segment, encryption.get_keyring())
    old_copy = on_disk(storage, old_blob.sha256)

    use_keys(app, f"{spec('new', 2)},{spec('old', 1)}")
    with storage.open(old_blob.sha256) as f:  # the old key still decrypts
        assert f.read() == photo
    new_blob = storage.put(b"nova foto", encrypt=True)
    assert encryption.inspect_path(storage.blob_path(new_blob.sha256)).key_id == "new"

    result = runner.invoke(encryption.storage_cli, ["rotate-keys"])
    assert result.exit_code == 0, result.output
    assert "Re-encrypted: 2 file(s)" in result.output
    for sha256 in (old_blob.sha256, new_blob.sha256):
        assert encryption.inspect_path(storage.blob_path(sha256)).key_id == "new"
    assert encryption.inspect_path(segment).key_id == "new"
    assert not storage.is_encrypted(plain_blob.sha256)  # rotation does not encrypt
    assert on_disk(storage, old_blob.sha256) != old_copy
    event = db.session.execute(select(AuditEvent).where(
        AuditEvent.action == "storage.keys_rotated")).scalar_one()
    details = json.loads(event.details)
    assert details["sealed"] == 2 and details["from_keys"] == {"old": 2}
    assert details["key_id"] == "new" and event.actor_type == "system"
    assert spec("new", 2).split(":")[1] not in event.details

    # The old key can go: everything still reads; a copy from before would not.
    use_keys(app, spec("new", 2))
    with storage.open(old_blob.sha256) as f:
        assert f.read() == photo
    with storage.open(new_blob.sha256) as f:
        assert f.read() == b"nova foto"
    assert encryption.sha256_of(segment, encryption.get_keyring())[0] == \
        hashlib.sha256(PATTERN * 3000).hexdigest()
    stale = tmp_path / "stale"
    stale.write_bytes(old_copy)
    with pytest.raises(encryption.DataKeyError):
        encryption.open_path(stale, encryption.get_keyring())
    # Run again: nothing left to do.
    result = runner.invoke(encryption.storage_cli, ["rotate-keys"])
    assert "Re-encrypted: 0 file(s)" in result.output


@pytest.mark.one_database  # files and their encryption, whatever the database
def test_encrypt_existing_captures_recordings_and_segments(app, db, runner, factory, agent):
    from app.services import audit, conference as conference_service

    storage = get_storage()
    room = open_room(db, factory, agent)
    started(db, room, agent)
    capture = conference_service.request_capture(room, "face", actor=audit.staff_actor(agent))
    photo = jpeg(640, 480, text="ROSTO ANTIGO")
    blob = storage.put(photo)  # stored in clear before encryption at rest
    db.session.add(StoredFile(sha256=blob.sha256, size=blob.size, mime="image/jpeg"))
    capture.file_sha256, capture.status = blob.sha256, "received"
    data = PATTERN * 2000
    segment = _segment_file(app, room.id, data)
    db.session.add(RecordingSegment(
        conference=room, conn_id="c1", role="client", seq=1,
        path=f"{room.id}/client-c1/00001.webm", sha256=hashlib.sha256(data).hexdigest(),
        size=len(data), started_at=datetime.now(timezone.utc), duration_ms=1000))
    document = storage.put(b"%PDF-1.4 documento de identidade")
    db.session.commit()

    result = runner.invoke(encryption.storage_cli, ["encrypt-existing"])
    assert result.exit_code == 0, result.output
    assert storage.is_encrypted(blob.sha256) and encryption.is_encrypted(segment)
    assert not storage.is_encrypted(document.sha256)  # not a face, still or recording
    with storage.open(blob.sha256) as f:
        assert f.read() == photo
    assert PATTERN not in segment.read_bytes()
    event = db.session.execute(select(AuditEvent).where(
        AuditEvent.action == "storage.encrypted_existing")).scalar_one()
    assert json.loads(event.details)["sealed"] == 2

    result = runner.invoke(encryption.storage_cli, ["encrypt-existing", "--all"])
    assert result.exit_code == 0, result.output
    assert "Encrypted: 1 file(s)" in result.output
    assert storage.is_encrypted(document.sha256)


# --- the call: face photo and recording ---------------------------------------------------------

def test_face_photo_posted_by_the_client_is_encrypted_on_disk_and_served_decrypted(
        app, db, client, factory, agent):
    from app.services import audit, conference as conference_service
    from tests.conftest import Auth

    room = open_room(db, factory, agent)
    started(db, room, agent)
    face = conference_service.request_capture(room, "face", actor=audit.staff_actor(agent))
    db.session.commit()
    bind_client(client, room)
    photo = jpeg(1280, 720, text="ROSTO")
    response = client.post(f"/conferencia/captura/{face.id}",
                           data={"image": (io.BytesIO(photo), "f.jpg")})
    assert response.status_code == 200
    db.session.refresh(face)
    assert face.file_sha256 == hashlib.sha256(photo).hexdigest()

    storage = get_storage()
    stored = list(storage.iter_sha256())
    assert face.file_sha256 in stored and len(stored) >= 2  # with its renditions
    for sha256 in stored:  # the photo and its renditions: all encrypted
        raw = on_disk(storage, sha256)
        assert raw.startswith(MAGIC) and b"JFIF" not in raw and photo[:32] not in raw

    Auth(client).login(agent.email)
    image = client.get(f"/conferencias/{room.id}/capturas/{face.id}/imagem")
    assert image.status_code == 200 and image.mimetype == "image/jpeg"
    assert image.data == photo


@pytest.mark.one_database  # the files are the same whatever the database
def test_recording_encrypted_at_rest_and_served_with_ranges(app, db, client, auth, factory,
                                                            agent, call_small):  # noqa: F811
    from app.services import recording

    conference = _conference(app, db, factory, call_small, SMALL_SECONDS)
    recording.ingest_segments(conference)
    db.session.commit()
    root = recording.recordings_root(app.config)
    plain = {s.id: (root / s.path).read_bytes() for s in conference.segments}
    assert all(not encryption.is_encrypted(root / s.path) for s in conference.segments)

    sha256 = recording.process(conference.id)

    conference = db.session.get(Conference, conference.id)
    assert conference.recording_state == "done" and not conference.recording_notes.get(
        "changed_segments")
    keyring = encryption.get_keyring()
    for segment in conference.segments:  # sealed in place; the dossier's digests unchanged
        path = root / segment.path
        raw = path.read_bytes()
        assert raw.startswith(MAGIC) and plain[segment.id][:64] not in raw
        assert encryption.sha256_of(path, keyring) == (segment.sha256, segment.size)
        assert not list(path.parent.glob(".*.sealing"))
    storage = get_storage()
    assert storage.is_encrypted(sha256)
    assert storage.is_encrypted(conference.recording_thumbnail_sha256)
    with storage.open(sha256) as f:
        video = f.read()
    assert hashlib.sha256(video).hexdigest() == sha256
    assert video[4:8] == b"ftyp" and b"ftyp" not in on_disk(storage, sha256)[:64]
    with storage.open(sha256) as f, av.open(f) as container:
        assert container.streams.video[0].width == 1280

    # Reprocessing reads the encrypted segments through the same opener.
    assert recording.process(conference.id, force=True) == sha256

    auth.login(agent.email)
    url = f"/conferencias/{conference.id}/gravacao/arquivo"
    full = client.get(url)
    assert full.status_code == 200 and full.data == video
    assert full.headers["Accept-Ranges"] == "bytes"
    rng = random.Random(7)
    ranges = [(0, 1), (0, 99), (len(video) - 100, len(video) - 1)] + [
        (a, min(len(video) - 1, a + rng.randrange(1, 300_000)))
        for a in (rng.randrange(0, len(video)) for _ in range(15))]
    for start, end in ranges:
        part = client.get(url, headers={"Range": f"bytes={start}-{end}"})
        assert part.status_code == 206, (start, end)
        assert part.data == video[start:end + 1], (start, end)
        assert part.headers["Content-Range"] == f"bytes {start}-{end}/{len(video)}"
    tail = client.get(url, headers={"Range": "bytes=-500"})
    assert tail.status_code == 206 and tail.data == video[-500:]
    assert client.get(url, headers={"Range": f"bytes={len(video) + 10}-"}).status_code == 416
    thumb = client.get(f"/conferencias/{conference.id}/gravacao/miniatura")
    assert thumb.status_code == 200 and thumb.data[:3] == b"\xff\xd8\xff"


@pytest.mark.one_database  # files and their encryption, whatever the database
def test_a_tampered_segment_is_noted_as_changed(app, db, factory, call_small):  # noqa: F811
    from app.services import recording

    conference = _conference(app, db, factory, call_small, SMALL_SECONDS)
    recording.ingest_segments(conference)
    db.session.commit()
    root = recording.recordings_root(app.config)
    segments = [(s.path, s.sha256) for s in conference.segments]
    rel = segments[0][0]
    encryption.seal_file(root / rel, encryption.get_keyring())
    raw = bytearray((root / rel).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (root / rel).write_bytes(raw)
    usable = recording._seal_segments([recording._Segment(
        "client", "c", 1, root / path, path, sha, 0.0, 1.0) for path, sha in segments])
    missing, changed, ok = usable
    assert missing == [] and changed == [rel] and len(ok) == len(segments) - 1
    assert all(encryption.is_encrypted(root / path) for path, _ in segments)


# --- the privacy notice (LGPD) ------------------------------------------------------------------

def test_every_client_page_links_the_privacy_notice_and_names_the_contact(app, db, client):
    settings = db.session.get(OfficeSettings, 1)
    settings.privacy_contact_name = "Beatriz Encarregada"
    settings.privacy_contact_email = "dpo@ar-teste.example"
    db.session.commit()
    for url in ("/", "/solicitar"):
        page = client.get(url).text
        assert 'href="/privacidade"' in page and "Aviso de privacidade" in page
        assert "Encarregado de dados:" in page and "Beatriz Encarregada" in page
        assert 'href="mailto:dpo@ar-teste.example"' in page

    notice = client.get("/privacidade")
    assert notice.status_code == 200
    text = notice.text
    for expected in ("Quais dados coletamos", "documento de identidade",
                     "a sua imagem e a sua voz", "fotografia do seu rosto", "consentimento",
                     "ICP-Brasil", "e-Notariado", "10 anos depois da expiração ou da revogação",
                     "Registros de auditoria: 6 anos", "Beatriz Encarregada",
                     "dpo@ar-teste.example", "AR Teste", "11.222.333/0001-81"):
        assert expected in text, expected


def test_without_a_named_contact_the_notice_gives_the_office_email(app, db, client):
    page = client.get("/privacidade").text
    assert 'href="mailto:contato@ar-teste.example"' in page
    assert 'href="/privacidade"' in client.get("/").text


def test_admin_edits_the_privacy_contact(client, auth, admin, db):
    auth.login(admin.email)
    response = client.post("/admin/escritorio", data={
        **OFFICE, "privacy_contact_name": " Beatriz Encarregada ",
        "privacy_contact_email": "DPO@Cartorio.Example"})
    assert response.status_code == 302
    settings = db.session.get(OfficeSettings, 1)
    assert settings.privacy_contact_name == "Beatriz Encarregada"
    assert settings.privacy_contact_email.lower() == "dpo@cartorio.example"
    event = db.session.execute(select(AuditEvent).where(
        AuditEvent.action == "office.update")).scalar_one()
    assert "privacy_contact_name" in event.details
    assert 'value="Beatriz Encarregada"' in client.get("/admin/escritorio").text
    bad = client.post("/admin/escritorio", data={**OFFICE, "privacy_contact_email": "nao-e-email"})
    assert bad.status_code == 422 and "E-mail inválido." in bad.text


def test_a_plain_file_is_opened_at_its_start_for_the_descriptor_too(tmp_path):
    """gunicorn sends a file with sendfile from the descriptor's own offset: after the magic
    check, a plain blob's descriptor must be at 0, not past the bytes read to look for it (a
    served photo was cut otherwise)."""
    storage = LocalStorage(tmp_path / "storage")
    data = jpeg(1600, 1200)
    blob = storage.put(data)
    with storage.open(blob.sha256) as f:
        assert os.lseek(f.fileno(), 0, os.SEEK_CUR) == 0
        assert os.pread(f.fileno(), len(data), 0) == data
        assert f.read() == data
