"""The dossier export (a signed ZIP with a manifest of SHA-256s and the audit trail), the LGPD
export of one CPF, and the offline verifier `python -m app.dossier_verify`."""
import base64
import hashlib
import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from app import dossier_verify
from app.models import AuditEvent, Conference, IssuedCertificate, Termo, utcnow
from app.services import audit, documents, dossier_export, links, people
from app.services import ca as ca_service
from app.services.audit import staff_actor
from app.services.recording import recordings_root
from app.services.storage import get_storage
from tests.conftest import STAFF_PASSWORD
from tests.support.documents import jpeg
from tests.support.dossier import PASSWORD, call_done, install_ca, make_csr

pytestmark = pytest.mark.emails_ok

ROOT_DIR = Path(__file__).resolve().parent.parent


# --- helpers ---------------------------------------------------------------------------------

def _with_documents_and_call(app, db, cert_request, agent) -> Conference:
    """An uploaded ID page, then a finished call whose segment files exist on disk."""
    stored = documents.store_file(io.BytesIO(jpeg(text="RG FRENTE")))
    documents.add_page(cert_request, "identity", stored, "rg-frente.jpg", ip="203.0.113.9")
    db.session.commit()
    conference = call_done(db, cert_request, agent)
    root = recordings_root(app.config)
    for segment in conference.segments:
        data = f"webm {segment.role} {segment.seq} ".encode() * 40
        path = root / segment.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        segment.sha256 = hashlib.sha256(data).hexdigest()
        segment.size = len(data)
    db.session.commit()
    return conference


@pytest.fixture
def dossier(app, db, factory, agent):
    install_ca(app)
    cert_request = factory.request(agent=agent)
    _with_documents_and_call(app, db, cert_request, agent)
    return cert_request


@pytest.fixture
def verifier(factory):
    return factory.staff(roles=("verifier",), email="veri@ar-teste.example",
                         name="Vera Verificadora")


def _login(client, user):
    client.post("/equipe/sair")
    return client.post("/equipe/entrar", data={"email": user.email, "password": STAFF_PASSWORD})


def _root_pem(app, tmp_path) -> Path:
    path = tmp_path / "raiz.pem"
    path.write_bytes(ca_service.builtin_ca(app).root_cert.public_bytes(serialization.Encoding.PEM))
    return path


def _verify_cli(zip_path, *args):
    """The verifier as a user runs it: its own process, from the project directory."""
    result = subprocess.run([sys.executable, "-m", "app.dossier_verify", str(zip_path), *args],
                            capture_output=True, text=True, cwd=ROOT_DIR, timeout=120)
    return result.returncode, result.stdout.splitlines()


def _problems(lines):
    return [line for line in lines if line.startswith("ERRO: ")]


def _rewrite(src: Path, dst: Path, *, change=None, add=None, drop=()):
    """Copy a ZIP entry by entry, with `change` {name: function(bytes) -> bytes} applied."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename in drop:
                continue
            data = zin.read(info)
            if change and info.filename in change:
                data = change[info.filename](data)
            zout.writestr(info, data)
        for name, data in (add or {}).items():
            zout.writestr(name, data)
    return dst


def _manifest(zf: zipfile.ZipFile, prefix="") -> dict:
    return json.loads(zf.read(prefix + "manifest.json"))


def _face_path(cert_request) -> str:
    conference = cert_request.conferences[-1]
    face = next(c for c in conference.captures if c.kind == "face")
    return f"videoconferencias/{conference.id}/capturas/rosto-{face.id}.jpg"


def _events(db, action, request_id=None):
    query = select(AuditEvent).where(AuditEvent.action == action)
    if request_id is not None:
        query = query.where(AuditEvent.request_id == request_id)
    return db.session.execute(query.order_by(AuditEvent.seq)).scalars().all()


# --- what the ZIP holds ---------------------------------------------------------------------

def test_export_holds_every_file_with_its_sha256(app, db, agent, dossier, tmp_path):
    cert_request = dossier
    path = dossier_export.export_request(cert_request, staff_actor(agent))
    db.session.commit()
    db.session.refresh(cert_request)
    conference = cert_request.conferences[-1]
    page = cert_request.documents[0].all_pages[0]
    with zipfile.ZipFile(path) as zf:
        manifest = _manifest(zf)
        files = {f["path"]: f for f in manifest["files"]}
        names = set(zf.namelist())
        # Every file of the ZIP is listed, except the manifest and its signature.
        assert names - set(files) == {"manifest.json", "manifest.json.p7s"}
        for name, entry in files.items():
            data = zf.read(name)
            assert hashlib.sha256(data).hexdigest() == entry["sha256"], name
            assert len(data) == entry["size"], name
        kinds = {f["kind"] for f in manifest["files"]}
        assert {"document_original", "document_rendition", "still", "face_photo",
                "recording_processed", "recording_segment", "consent_json", "conference_json",
                "emails_json", "sms_json", "request_json", "signing_chain"} <= kinds
        # The bytes are the stored ones, named where the layout says.
        original = f"documentos/identity/pagina-{page.id}-original.jpg"
        with get_storage().open(page.original_sha256) as f:
            assert zf.read(original) == f.read()
        with get_storage().open(conference.recording_sha256) as f:
            assert zf.read(f"videoconferencias/{conference.id}/gravacao.mp4") == f.read()
        segment = conference.segments[0]
        segment_name = (f"videoconferencias/{conference.id}/segmentos/{segment.role}-"
                        f"{segment.conn_id}/{segment.seq:05d}.webm")
        assert zf.read(segment_name) == (recordings_root(app.config) / segment.path).read_bytes()
        assert sum(f["kind"] == "recording_segment" for f in manifest["files"]) == 4
        assert zf.read(_face_path(cert_request))[:2] == b"\xff\xd8"
        consent = json.loads(zf.read(f"videoconferencias/{conference.id}/consentimento.json"))
        assert "autorizo a captura de fotografias" in consent[0]["text"]
        request_json = json.loads(zf.read("solicitacao.json"))
        assert request_json["request"]["protocol"] == cert_request.protocol
        assert request_json["holder"]["cpf"] == cert_request.holder.cpf
        assert request_json["documents"][0]["pages"][0]["original_file"] == original
        assert agent.email in {s["email"] for s in request_json["staff"]}
        # The signing chain is the seal's certificate and its CA's.
        chain = x509.load_pem_x509_certificates(zf.read("chain.pem"))
        assert "(selo)" in chain[0].subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        # Secrets stay out: the password's hash, link nonces, the access code's nonce.
        text = b"".join(zf.read(n) for n in names if n.endswith(".json")).decode()
        assert cert_request.revocation_password_hash not in text
        assert "revocation_password_hash" not in text and "code_nonce" not in text
        for link in cert_request.links:
            assert link.nonce not in text and link.token_digest not in text
        assert conference.code_nonce not in text
        # The request's whole trail, each event with its hashed fields and hash.
        stored = [e.hash for e in db.session.execute(select(AuditEvent).where(
            AuditEvent.request_id == cert_request.id, AuditEvent.action != "dossier.export")
            .order_by(AuditEvent.seq)).scalars()]
        assert [e["hash"] for e in manifest["audit_events"]] == stored
        assert set(manifest["audit_events"][0]) == set(audit.HASHED_FIELDS) | {"hash"}
        assert manifest["request"]["protocol"] == cert_request.protocol
    export = _events(db, "dossier.export", cert_request.id)
    assert len(export) == 1 and export[0].actor_label == agent.email
    details = json.loads(export[0].details)
    assert details["manifest_sha256"] == hashlib.sha256(
        zipfile.ZipFile(path).read("manifest.json")).hexdigest()
    code, lines = _verify_cli(path)
    assert code == 0, lines
    assert lines[-1] == "OK: nenhum problema encontrado."
    assert any("conferidos (SHA-256 e tamanho)" in line for line in lines)
    assert any("NÃO foi verificada" in line and "(selo)" in line for line in lines)


@pytest.mark.one_database  # the ZIP and its offline verifier, not the database
def test_encrypted_segments_are_exported_in_clear(app, db, agent, dossier):
    """Once processed, raw segments are encrypted in place: the export holds their plaintext,
    which matches the recorded SHA-256, and a tampered encrypted segment stops it."""
    from app.services import encryption

    cert_request = dossier
    conference = cert_request.conferences[-1]
    root = recordings_root(app.config)
    plain = {}
    for segment in conference.segments:
        path = root / segment.path
        plain[segment.id] = path.read_bytes()
        encryption.seal_file(path, encryption.get_keyring())
        assert encryption.is_encrypted(path) and path.read_bytes() != plain[segment.id]
    path = dossier_export.export_request(cert_request, staff_actor(agent))
    db.session.commit()
    segment = conference.segments[0]
    name = (f"videoconferencias/{conference.id}/segmentos/{segment.role}-{segment.conn_id}/"
            f"{segment.seq:05d}.webm")
    with zipfile.ZipFile(path) as zf:
        assert zf.read(name) == plain[segment.id]
    raw = bytearray((root / segment.path).read_bytes())
    raw[-5] ^= 0xFF
    (root / segment.path).write_bytes(bytes(raw))
    with pytest.raises(dossier_export.DossierIntegrityError) as caught:
        dossier_export.export_request(cert_request, staff_actor(agent))
    db.session.commit()
    assert [p.path for p in caught.value.problems] == [name]


def test_the_verifier_hashes_events_as_the_app_does(app, db, dossier):
    assert dossier_verify.HASHED_FIELDS == audit.HASHED_FIELDS
    for event in _events(db, "request.transition", dossier.id):
        record = dossier_export.audit_record(event)
        # Through JSON, as the verifier reads it.
        assert dossier_verify.event_hash(json.loads(json.dumps(record))) == event.hash


def test_issued_request_export_through_the_dossier_page(app, db, client, agent, verifier, dossier,
                                                        tmp_path):
    cert_request = dossier
    _login(client, agent)
    client.post(f"/solicitacoes/{cert_request.id}/continuar", data={"confirm": "1"})
    _login(client, verifier)
    client.post(f"/solicitacoes/{cert_request.id}/segunda-conferencia/aprovar")
    client.post("/equipe/sair")
    db.session.refresh(cert_request)
    assert cert_request.state == "approved"
    token = links.url_for_link(links.current_link(cert_request, "issuance")).rsplit("/", 1)[1]
    assert client.post(f"/emissao/{token}/senha", json={"password": PASSWORD},
                       headers={"Accept": "application/json"}).status_code == 200
    csr, _ = make_csr()
    assert client.post("/emissao/requisicao",
                       json={"csr": base64.b64encode(csr).decode()}).status_code == 200

    _login(client, verifier)
    response = client.post(f"/solicitacoes/{cert_request.id}/dossie/exportar")
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/zip"
    assert (f'attachment; filename=dossie-{cert_request.protocol}.zip'
            in response.headers["Content-Disposition"])
    assert response.headers["Cache-Control"] == "private, no-store"
    zip_path = tmp_path / "dossie.zip"
    zip_path.write_bytes(response.data)
    assert int(response.headers["Content-Length"]) == len(response.data)
    # The temporary file is gone once handed out.
    assert list(dossier_export.export_dir(app).glob("*")) == []

    issued = db.session.execute(select(IssuedCertificate)).scalar_one()
    termo = db.session.execute(select(Termo)).scalar_one()
    with zipfile.ZipFile(zip_path) as zf:
        kinds = {f["path"]: f["kind"] for f in _manifest(zf)["files"]}
        assert zf.read(f"emissao/certificado-{issued.serial}.cer") == issued.der
        with get_storage().open(termo.sha256) as f:
            assert zf.read(f"emissao/termo-{termo.id}.pdf") == f.read()
        assert kinds[f"emissao/termo-{termo.id}.pdf"] == "termo"
        assert kinds[f"emissao/certificado-{issued.serial}.cer"] == "certificate"
        checks = json.loads(zf.read("emissao/segunda-conferencia.json"))
        assert checks[0]["decision"] == "approved" and checks[0]["verifier_id"] == verifier.id
        emails = json.loads(zf.read("mensagens/emails.json"))
        assert "issuance_invitation" in {m["kind"] for m in emails}
        sms = json.loads(zf.read("mensagens/sms.json"))
        assert sms and sms[0]["to"] == cert_request.holder.phone
        actions = [e["action"] for e in _manifest(zf)["audit_events"]]
        assert "certificate.issue" in actions
    event = _events(db, "dossier.export", cert_request.id)[-1]
    assert event.actor_label == verifier.email

    code, lines = _verify_cli(zip_path, "--trust", str(_root_pem(app, tmp_path)))
    assert code == 0, lines
    assert any("cadeia confiável até" in line for line in lines)
    # The root as the office serves it (DER) does as well.
    root_der = tmp_path / "raiz.crt"
    root_der.write_bytes(client.get("/ac/raiz.crt").data)
    code, lines = _verify_cli(zip_path, "--trust", str(root_der))
    assert code == 0, lines
    assert any(f"cadeia confiável até {root_der}." in line for line in lines)
    # Another root: the same signature is not trusted.
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Outra Raiz")])
    other = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
             .public_key(other_key.public_key()).serial_number(1)
             .not_valid_before(utcnow().replace(year=2020)).not_valid_after(
                 utcnow().replace(year=2040))
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
             .sign(other_key, hashes.SHA256()))
    other_pem = tmp_path / "outra.pem"
    other_pem.write_bytes(other.public_bytes(serialization.Encoding.PEM))
    code, lines = _verify_cli(zip_path, "--trust", str(other_pem))
    assert code == 1
    assert _problems(lines) == [line for line in lines if "manifest.json: assinatura inválida "
                                "ou cadeia não confiável" in line]
    assert len(_problems(lines)) == 1


def test_roles_for_the_exports(app, db, client, factory, agent, dossier):
    _login(client, agent)
    person = dossier.holder
    assert client.post(f"/pessoas/{person.id}/dados/exportar").status_code == 403
    assert client.post("/solicitacoes/999999/dossie/exportar").status_code == 404
    assert client.post(f"/solicitacoes/{dossier.id}/dossie/exportar").status_code == 200
    client.post("/equipe/sair")
    response = client.post(f"/solicitacoes/{dossier.id}/dossie/exportar")
    assert response.status_code == 302 and "/equipe/entrar" in response.location
    assert _events(db, "person.export") == []


# --- a file changed in the dossier ----------------------------------------------------------

def test_a_replaced_file_in_the_dossier_stops_the_export(app, db, client, agent, dossier):
    cert_request = dossier
    conference = cert_request.conferences[-1]
    face = next(c for c in conference.captures if c.kind == "face")
    face_name = _face_path(cert_request)
    storage = get_storage()
    # Someone with disk access edits the face photo in place: same name (the SHA-256), same
    # size, other bytes.
    blob_path = storage._path(face.file_sha256)
    original = blob_path.read_bytes()
    middle = len(original) // 2
    blob_path.write_bytes(original[:middle] + bytes(b ^ 0x55 for b in original[middle:middle + 64])
                          + original[middle + 64:])
    assert blob_path.stat().st_size == len(original)
    # …and a segment of the recording disappears.
    segment = conference.segments[1]
    (recordings_root(app.config) / segment.path).unlink()
    segment_name = (f"videoconferencias/{conference.id}/segmentos/{segment.role}-"
                    f"{segment.conn_id}/{segment.seq:05d}.webm")

    with pytest.raises(dossier_export.DossierIntegrityError) as caught:
        dossier_export.export_request(cert_request, staff_actor(agent))
    db.session.commit()
    problems = {p.path: p for p in caught.value.problems}
    assert set(problems) == {face_name, segment_name}
    assert problems[face_name].problem == "changed"
    assert problems[face_name].expected_sha256 == face.file_sha256
    assert problems[face_name].actual_sha256 == hashlib.sha256(blob_path.read_bytes()).hexdigest()
    assert problems[segment_name].problem == "missing"
    assert "não confere com o SHA-256 registrado" in str(problems[face_name])
    # Nothing handed out, nothing left behind, and the refusal is in the request's trail.
    assert list(dossier_export.export_dir(app).glob("*")) == []
    assert _events(db, "dossier.export", cert_request.id) == []
    refused = _events(db, "dossier.export_refused", cert_request.id)
    assert len(refused) == 1
    recorded = {p["path"]: p for p in json.loads(refused[0].details)["problems"]}
    assert recorded[face_name]["expected_sha256"] == face.file_sha256
    assert recorded[segment_name]["problem"] == "missing"

    # Through the page: the agent reads which files, and gets no ZIP.
    _login(client, agent)
    response = client.post(f"/solicitacoes/{cert_request.id}/dossie/exportar")
    assert response.status_code == 302
    assert response.location.endswith(f"/solicitacoes/{cert_request.id}/dossie")
    page = client.get(response.location).get_data(as_text=True)
    assert "A exportação foi interrompida" in page
    assert face_name in page and segment_name in page
    assert len(_events(db, "dossier.export_refused", cert_request.id)) == 2

    # Put back as it was, the export goes through.
    blob_path.write_bytes(original)
    (recordings_root(app.config) / segment.path).write_bytes(
        f"webm {segment.role} {segment.seq} ".encode() * 40)
    assert client.post(f"/solicitacoes/{cert_request.id}/dossie/exportar").status_code == 200


# --- the offline verifier -------------------------------------------------------------------

@pytest.fixture
def exported(app, db, agent, dossier, tmp_path):
    path = dossier_export.export_request(dossier, staff_actor(agent))
    db.session.commit()
    target = tmp_path / "dossie.zip"
    shutil.move(path, target)
    return target


@pytest.mark.one_database  # the ZIP and its offline verifier, not the database
def test_a_zip_with_a_changed_file_names_it(db, dossier, exported, tmp_path):
    face_name = _face_path(dossier)
    changed = _rewrite(exported, tmp_path / "alterado.zip",
                       change={face_name: lambda data: data[:-10] + b"0123456789"})
    code, lines = _verify_cli(changed)
    assert code == 1
    assert len(_problems(lines)) == 1, lines
    assert _problems(lines)[0].startswith(f"ERRO: {face_name}: alterado: o SHA-256 não confere")
    assert not any(line.startswith("OK: nenhum") for line in lines)

    # Added, removed, and damaged inside the ZIP (CRC): each named.
    request_json = "solicitacao.json"
    other = _rewrite(exported, tmp_path / "outro.zip", drop={request_json},
                     add={"documentos/identity/extra.jpg": b"\xff\xd8 incluido depois"})
    code, lines = _verify_cli(other)
    assert code == 1
    assert sorted(_problems(lines)) == sorted([
        f"ERRO: {request_json}: ausente do ZIP (o manifesto lista este arquivo).",
        "ERRO: documentos/identity/extra.jpg: não consta de nenhum manifesto (incluído depois "
        "da exportação?).",
    ])

    damaged = tmp_path / "danificado.zip"
    damaged.write_bytes(exported.read_bytes())
    with zipfile.ZipFile(damaged) as zf:
        info = zf.getinfo(face_name)
    assert info.compress_type == zipfile.ZIP_STORED
    with open(damaged, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(f.read(2), "little"),
                               int.from_bytes(f.read(2), "little"))
        f.seek(info.header_offset + 30 + name_len + extra_len + 500)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    code, lines = _verify_cli(damaged)
    assert code == 1
    assert [line.split(":")[1].strip() for line in _problems(lines)] == [face_name]


@pytest.mark.one_database  # the ZIP and its offline verifier, not the database
def test_a_changed_manifest_fails_the_signature(db, dossier, exported, tmp_path):
    """Changing a file and its line in the manifest passes the hashes, not the signature."""
    fake = b'[{"kind": "outro"}]\n'

    def forged(data):
        manifest = json.loads(data)
        for entry in manifest["files"]:
            if entry["path"] == "mensagens/emails.json":
                entry["sha256"] = hashlib.sha256(fake).hexdigest()
                entry["size"] = len(fake)
        return json.dumps(manifest, ensure_ascii=False, indent=2).encode()

    changed = _rewrite(exported, tmp_path / "manifesto.zip",
                       change={"manifest.json": forged, "mensagens/emails.json": lambda _: fake})
    code, lines = _verify_cli(changed)
    assert code == 1
    problems = _problems(lines)
    assert len(problems) == 1, lines
    assert problems[0].startswith("ERRO: manifest.json: assinatura inválida (o manifesto ou a "
                                  "assinatura foi alterado)")
    # The files themselves all matched the (forged) manifest.
    report = dossier_verify.verify(str(changed))
    assert any(line.startswith("OK: manifest.json:") and "arquivos conferidos" in line
               for line in report.ok)

    # An audit event edited in the manifest: its own hash and the signature both say so.
    def edited_event(data):
        manifest = json.loads(data)
        manifest["audit_events"][1]["reason"] = "editado"
        return json.dumps(manifest, ensure_ascii=False, indent=2).encode()

    with zipfile.ZipFile(exported) as zf:
        seq = _manifest(zf)["audit_events"][1]["seq"]
    code, lines = _verify_cli(_rewrite(exported, tmp_path / "evento.zip",
                                       change={"manifest.json": edited_event}))
    assert code == 1
    problems = _problems(lines)
    assert f"ERRO: manifest.json (auditoria, evento nº {seq}): o conteúdo foi alterado depois " \
           "de gravado (o hash não confere)." in problems
    assert any("assinatura inválida" in line for line in problems)
    assert len(problems) == 2, lines

    # A signature that is not the manifest's own (removed): named too.
    code, lines = _verify_cli(_rewrite(exported, tmp_path / "sem.zip",
                                       drop={"manifest.json.p7s"}))
    assert code == 1
    assert _problems(lines) == ["ERRO: manifest.json.p7s: ausente do ZIP: o manifesto não está "
                                "assinado."]


def test_an_unlinked_event_is_named(db, dossier, exported, tmp_path):
    """Consecutive events whose link does not hold (one replaced by a re-hashed forgery)."""
    def relinked(data):
        manifest = json.loads(data)
        events = manifest["audit_events"]
        for before, event in zip(events, events[1:]):
            if event["seq"] == before["seq"] + 1:
                event["prev_hash"] = "f" * 64
                event["hash"] = dossier_verify.event_hash(event)
                return json.dumps(manifest, ensure_ascii=False, indent=2).encode(), event["seq"]
        raise AssertionError("no consecutive events")

    holder = {}

    def change(data):
        out, holder["seq"] = relinked(data)
        return out

    code, lines = _verify_cli(_rewrite(exported, tmp_path / "elo.zip",
                                       change={"manifest.json": change}))
    seq = holder["seq"]
    assert code == 1
    assert (f"ERRO: manifest.json (auditoria, evento nº {seq}): não se encadeia ao evento "
            f"nº {seq - 1} (o hash anterior não confere).") in _problems(lines)


@pytest.mark.one_database  # the ZIP and its offline verifier, not the database
def test_the_verifier_runs_without_the_app(exported, tmp_path):
    """Copied alone and run without site-packages: only the standard library and openssl."""
    script = tmp_path / "isolado" / "dossier_verify.py"
    script.parent.mkdir()
    shutil.copy(ROOT_DIR / "app" / "dossier_verify.py", script)
    result = subprocess.run([sys.executable, "-I", "-S", str(script), str(exported)],
                            capture_output=True, text=True, cwd=script.parent, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "OK: nenhum problema encontrado."


# --- LGPD: everything about one CPF ---------------------------------------------------------

def test_person_export_holds_every_request_and_the_records(app, db, client, factory, agent,
                                                           admin, dossier, tmp_path):
    person = dossier.holder
    company = people.find_or_register_company("11444777000161", "Padaria Pão & Cia Ltda",
                                              "São Paulo", "SP", person)
    db.session.commit()
    second = factory.request(person=person, product_code="ecnpj-a1", agent=agent,
                             company=company)
    first_protocol, second_protocol = dossier.protocol, second.protocol
    _login(client, admin)
    response = client.post(f"/pessoas/{person.id}/dados/exportar")
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert f"dados-pessoais-{person.cpf}.zip" in response.headers["Content-Disposition"]
    zip_path = tmp_path / "dados.zip"
    zip_path.write_bytes(response.data)

    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
        root = _manifest(zf)
        assert root["kind"] == "person" and root["person"]["cpf"] == person.cpf
        assert {p["protocol"] for p in root["parts"]} == {first_protocol, second_protocol}
        record = json.loads(zf.read("pessoa.json"))
        assert record["person"]["cpf"] == person.cpf and record["person"]["rg_number"]
        companies = json.loads(zf.read("empresas.json"))
        assert [c["cnpj"] for c in companies] == ["11444777000161"]
        for protocol in (first_protocol, second_protocol):
            folder = f"solicitacoes/{protocol}/"
            assert {folder + "manifest.json", folder + "manifest.json.p7s",
                    folder + "chain.pem", folder + "solicitacao.json"} <= names
            assert _manifest(zf, folder)["request"]["protocol"] == protocol
        assert f"solicitacoes/{first_protocol}/{_face_path(dossier)}" in names
        # The person's own trail (registered, company created) is in the root manifest.
        actions = {e["action"] for e in root["audit_events"]}
        assert {"person.create", "company.create"} <= actions
        root_files = {f["path"] for f in root["files"]}
        assert f"solicitacoes/{second_protocol}/manifest.json" in root_files

    code, lines = _verify_cli(zip_path)
    assert code == 0, lines
    assert any(line.startswith(f"OK: solicitacoes/{first_protocol}/manifest.json:")
               for line in lines)

    export = _events(db, "person.export")
    assert len(export) == 1 and export[0].object_id == str(person.id)
    assert sorted(json.loads(export[0].details)["requests"]) == sorted([dossier.id, second.id])
    for request_id in (dossier.id, second.id):
        event = _events(db, "dossier.export", request_id)[-1]
        assert json.loads(event.details)["person_export"] is True

    # A file changed inside one request's folder is named with its path in the ZIP.
    face_name = f"solicitacoes/{first_protocol}/{_face_path(dossier)}"
    changed = _rewrite(zip_path, tmp_path / "alterado.zip",
                       change={face_name: lambda data: data[:-4] + b"XXXX"})
    code, lines = _verify_cli(changed)
    assert code == 1
    assert len(_problems(lines)) == 1 and _problems(lines)[0].startswith(f"ERRO: {face_name}: ")
    # A request's manifest swapped: the root manifest's SHA-256 of it and its signature fail.
    sub = f"solicitacoes/{second_protocol}/manifest.json"
    code, lines = _verify_cli(_rewrite(zip_path, tmp_path / "sub.zip", change={
        sub: lambda data: data.replace(b'"kind": "request"', b'"kind": "requests"')}))
    assert code == 1
    assert {line.split(": ")[1] for line in _problems(lines)} == {sub}
    assert len(_problems(lines)) == 2, lines


def test_person_export_refused_when_a_file_changed(app, db, client, admin, dossier):
    person = dossier.holder
    page = dossier.documents[0].all_pages[0]
    blob_path = get_storage()._path(page.original_sha256)
    blob_path.write_bytes(jpeg(text="OUTRO DOCUMENTO"))
    _login(client, admin)
    response = client.post(f"/pessoas/{person.id}/dados/exportar", follow_redirects=True)
    page_text = response.get_data(as_text=True)
    name = f"solicitacoes/{dossier.protocol}/documentos/identity/pagina-{page.id}-original.jpg"
    assert name in page_text and "A exportação foi interrompida" in page_text
    assert response.request.path == f"/pessoas/{person.id}"
    refused = _events(db, "person.export_refused")
    assert len(refused) == 1
    assert json.loads(refused[0].details)["problems"][0]["path"] == name
    assert _events(db, "person.export") == []


def test_the_export_cards(app, agent, admin, dossier):
    """The cards the dossier and person pages include: a form posting to the export."""
    from flask import render_template
    from flask_login import login_user

    for user in (agent, admin):
        with app.test_request_context("/"):
            login_user(user)
            card = render_template("dossier/_export.html", cert_request=dossier)
            assert f'action="/solicitacoes/{dossier.id}/dossie/exportar"' in card
            assert 'name="csrf_token"' in card and "Exportar dossiê (ZIP)" in card
            person_card = render_template("people/_export.html", person=dossier.holder)
            if user is admin:
                assert f'action="/pessoas/{dossier.holder.id}/dados/exportar"' in person_card
                assert "Exportar dados pessoais (ZIP)" in person_card
            else:
                assert person_card.strip() == ""


def test_an_audit_event_that_no_longer_matches_its_hash_stops_the_export(
        app, db, agent, dossier, monkeypatch):
    # The database refuses edits of audit rows; reading one back changed is what an edit made
    # behind those triggers looks like to the export.
    page_add = _events(db, "document.page_add", dossier.id)[0]
    real = audit.event_hash
    monkeypatch.setattr(audit, "event_hash",
                        lambda event: "0" * 64 if event.seq == page_add.seq else real(event))
    with pytest.raises(dossier_export.DossierIntegrityError) as caught:
        dossier_export.export_request(dossier, staff_actor(agent))
    db.session.commit()
    [problem] = caught.value.problems
    assert (problem.problem, problem.seq, problem.path) == ("audit_changed", page_add.seq,
                                                            "manifest.json")
    assert f"evento de auditoria nº {page_add.seq} foi alterado" in str(problem)
    assert list(dossier_export.export_dir(app).glob("*")) == []
    assert len(_events(db, "dossier.export_refused", dossier.id)) == 1
