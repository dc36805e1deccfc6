"""A request just after its call ("conference_done"), with what a real call leaves in the
dossier: the accepted face photo and a still (stored JPEGs), the consent, hashed recording
segments, the processed recording and the revocation password's hash. The call itself is
test_browser_call.py's; this builds its outcome directly so issuance tests start from it."""
import hashlib
import secrets
from datetime import timedelta

from app.models import (Conference, ConferenceCapture, ConferenceConsent, ConferenceConnection,
                        RecordingSegment, StoredFile, utcnow)
from app.services import workflow
from app.services.conference import CONSENT_TEXT, _password_hasher
from app.services.storage import get_storage
from tests.support.documents import jpeg

PASSWORD = "Senha2026ok"


def _stored(db, data: bytes, mime: str) -> str:
    blob = get_storage().put(data)
    if db.session.get(StoredFile, blob.sha256) is None:
        db.session.add(StoredFile(sha256=blob.sha256, size=blob.size, mime=mime))
        db.session.flush()
    return blob.sha256


def call_done(db, cert_request, agent, *, recording_state="done", password=PASSWORD):
    """Move `cert_request` through documents and a finished, recorded call run by `agent`."""
    if cert_request.state == "requested" and cert_request.product.needs_documents:
        workflow.transition(cert_request, "documents_pending")
    if cert_request.state in ("documents_pending",):
        workflow.transition(cert_request, "documents_submitted")
        workflow.transition(cert_request, "documents_approved")
    if cert_request.state == "documents_approved":
        workflow.transition(cert_request, "scheduled")
    workflow.transition(cert_request, "in_conference")
    now = utcnow()
    conference = Conference(request=cert_request, kind="scheduled", state="ended",
                            opens_at=now - timedelta(minutes=20), code_nonce=secrets.token_hex(16),
                            agent=agent, created_by=agent, client_first_entry_at=now - timedelta(
                                minutes=15), started_at=now - timedelta(minutes=14),
                            ended_at=now - timedelta(minutes=2), ended_by=agent,
                            recording_state=recording_state)
    db.session.add(conference)
    db.session.flush()
    db.session.add_all([
        ConferenceConnection(conference=conference, role="agent", conn_id=secrets.token_hex(8),
                             staff_id=agent.id, joined_at=now - timedelta(minutes=14),
                             left_at=now - timedelta(minutes=2), end_reason="ended"),
        ConferenceConnection(conference=conference, role="client", conn_id=secrets.token_hex(8),
                             joined_at=now - timedelta(minutes=14),
                             left_at=now - timedelta(minutes=2), end_reason="ended",
                             ip="203.0.113.9", user_agent="Mozilla/5.0 (Linux; Android 14)"),
        ConferenceConsent(conference=conference, text=str(CONSENT_TEXT), locale="pt_BR",
                          accepted_at=now - timedelta(minutes=15), ip="203.0.113.9",
                          user_agent="Mozilla/5.0 (Linux; Android 14)"),
    ])
    face = _stored(db, jpeg(1280, 720, color=(210, 170, 140), text="ROSTO"), "image/jpeg")
    still = _stored(db, jpeg(1280, 720, text="DOCUMENTO"), "image/jpeg")
    db.session.add_all([
        ConferenceCapture(conference=conference, kind="face", status="accepted",
                          requested_by_id=agent.id, received_at=now - timedelta(minutes=8),
                          decided_at=now - timedelta(minutes=8), file_sha256=face, width=1280,
                          height=720),
        ConferenceCapture(conference=conference, kind="still", status="received",
                          requested_by_id=agent.id, received_at=now - timedelta(minutes=10),
                          file_sha256=still, width=1280, height=720),
    ])
    for role in ("agent", "client"):
        for seq in range(2):
            db.session.add(RecordingSegment(
                conference=conference, conn_id=f"{role}-conn", role=role, seq=seq,
                path=f"{conference.id}/{role}-{seq}.webm",
                sha256=hashlib.sha256(f"{role}{seq}".encode()).hexdigest(), size=1000,
                started_at=now - timedelta(minutes=12 - seq), duration_ms=10_000))
    if recording_state == "done":
        conference.recording_sha256 = _stored(db, b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64,
                                              "video/mp4")
        conference.recording_duration_ms = 20_000
    cert_request.revocation_password_hash = _password_hasher.hash(password)
    cert_request.revocation_password_set_at = now - timedelta(minutes=5)
    workflow.transition(cert_request, "conference_done")
    db.session.commit()
    return conference


_CA_CACHE = {}


def install_ca(app, tmp_path_factory=None):
    """The built-in CA in this test's instance, copied from one made once per session (its keys
    encrypted with the test KEYS_PASSPHRASE)."""
    import shutil
    import tempfile
    from pathlib import Path

    from app.services import ca as ca_service

    if "dir" not in _CA_CACHE:
        source = Path(tempfile.mkdtemp(prefix="videoar-ca-")) / "ca"
        with app.app_context():
            from app.pki.builtin_ca import BuiltinCA

            BuiltinCA.create(source, app.config["KEYS_PASSPHRASE"].encode(),
                             base_url="http://localhost")
        _CA_CACHE["dir"] = source
    target = ca_service.ca_dir(app)
    if not target.exists():
        shutil.copytree(_CA_CACHE["dir"], target)
        for path in target.rglob("*"):
            if path.is_file():
                path.chmod(0o600)
    return target


def make_csr(common_name="MARIA DA SILVA SOUZA", *, key=None, cpf=None, key_size=2048):
    """A holder's PKCS#10 request (DER) and its key, as a browser or a token would make it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = key or rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    cn = f"{common_name}:{cpf}" if cpf else common_name
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.DER), key
