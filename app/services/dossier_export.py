"""The dossier export: one request's dossier, or everything held about one CPF (LGPD), as a
signed ZIP that `python -m app.dossier_verify` checks offline. See docs/dossier.md.

    path = dossier_export.export_request(cert_request, actor)   # dossie-<protocol>.zip
    path = dossier_export.export_person(person, actor)          # one folder per request

A ZIP holds the dossier's files (document pages and their renditions, the call's stills, face
photo, processed recording and raw segments, the termo, the certificate), JSON files with the
rows behind them (request, consent, second checks, emails, SMS), a `manifest.json` listing each
file with its SHA-256, size and what it is, plus the request's audit events with every hashed
field, and `manifest.json.p7s`: a detached CMS signature of the manifest by the office seal,
whose certificate and chain are `chain.pem`.

Every stored file is hashed again as it is copied: one whose bytes no longer match the SHA-256
it is named or recorded by (or that is gone) stops the export. Nothing is handed out then; the
refusal is audited and `DossierIntegrityError` names each file. Files are streamed into a
temporary file under `<INSTANCE_DIR>/exports`, never held in memory whole.

Never exported: the revocation password's hash, access-link nonces and digests, the call's
access-code nonce, the holder's pending termo signature, any private key.
"""
import hashlib
import json
import mimetypes
import os
import re
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from flask import current_app
from flask_babel import lazy_gettext as _l
from flask_babel import lazy_ngettext
from sqlalchemy import and_, or_, select

from ..extensions import db
from ..models import (AuditEvent, CertificateRequest, Company, EmailMessage, Person, SmsMessage,
                      StaffUser, StoredFile, utcnow)
from . import ServiceError, audit
from . import ca as ca_service
from . import encryption
from .recording import recordings_root
from .storage import BlobNotFound, get_storage

FORMAT = "videoar-dossie/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.p7s"
CHAIN = "chain.pem"
CHUNK_SIZE = 1024 * 1024
EXPORT_DIR = "exports"
# Temporary files of exports a crash left behind are removed after this long.
STALE_SECONDS = 24 * 3600

# Columns never written to an export, whatever table they are in: secrets, or what derives one.
SECRET_COLUMNS = frozenset({
    "revocation_password_hash", "code_nonce", "nonce", "token_digest", "pending_signature",
    "encrypted_key", "password_hash",
})
# Columns naming a staff member: the export lists who they are (name and e-mail).
STAFF_COLUMNS = frozenset({
    "assigned_agent_id", "created_by_id", "reviewed_by_id", "raised_by_id", "agent_id",
    "ended_by_id", "requested_by_id", "verifier_id", "staff_id", "staff_user_id",
})
# Compressed in the ZIP; the rest (JPEG, PDF, MP4, WebM: compressed already) is stored as is.
_DEFLATE_SUFFIXES = (".json", ".pem", ".txt")
_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/heic": "heic",
               "image/heif": "heif", "image/webp": "webp", "application/pdf": "pdf",
               "video/mp4": "mp4", "video/webm": "webm"}


class DossierExportError(ServiceError):
    pass


@dataclass(frozen=True)
class FileProblem:
    """A file of the dossier that cannot be exported as recorded."""

    path: str  # in the ZIP
    kind: str  # what it is (manifest kind)
    problem: str  # changed | missing | audit_changed
    expected_sha256: str | None = None
    actual_sha256: str | None = None
    expected_size: int | None = None
    actual_size: int | None = None
    seq: int | None = None  # the audit event's number (audit_changed)

    def __str__(self) -> str:
        if self.problem == "missing":
            return str(_l("%(path)s: o arquivo não foi encontrado (apagado ou movido).",
                          path=self.path))
        if self.problem == "audit_changed":
            return str(_l("%(path)s: o evento de auditoria nº %(seq)s foi alterado depois de "
                          "gravado (o hash não confere).", path=self.path, seq=self.seq))
        return str(_l("%(path)s: o conteúdo não confere com o SHA-256 registrado (o arquivo foi "
                      "alterado ou substituído).", path=self.path))

    def as_details(self) -> dict:
        return {k: v for k, v in (
            ("path", self.path), ("kind", self.kind), ("problem", self.problem),
            ("expected_sha256", self.expected_sha256), ("actual_sha256", self.actual_sha256),
            ("expected_size", self.expected_size), ("actual_size", self.actual_size),
            ("seq", self.seq),
        ) if v is not None}


class DossierIntegrityError(DossierExportError):
    """Files of the dossier no longer match what was recorded: nothing was exported."""

    def __init__(self, problems: list[FileProblem]):
        super().__init__(lazy_ngettext(
            "A exportação foi interrompida: %(num)d item do dossiê não confere com o que foi "
            "registrado. Nada foi exportado, e a recusa ficou registrada na auditoria.",
            "A exportação foi interrompida: %(num)d itens do dossiê não conferem com o que foi "
            "registrado. Nada foi exportado, e a recusa ficou registrada na auditoria.",
            len(problems)))
        self.problems = problems


# --- what goes in ---------------------------------------------------------------------------

@dataclass
class _Entry:
    """One file of a bundle: where its bytes come from and what they must hash to."""

    path: str  # relative to the bundle's folder
    kind: str
    blob: str | None = None  # a storage digest
    file: Path | None = None  # a file on disk (recording segments)
    data: bytes | None = None  # made here (JSON) or read from the database (certificate)
    sha256: str | None = None  # what the bytes must hash to (None: made here)
    size: int | None = None
    meta: dict = field(default_factory=dict)


@dataclass
class _Bundle:
    """A folder with its own manifest: the request's dossier, or the person's root."""

    prefix: str
    header: dict
    entries: list[_Entry] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    parts: list["_Bundle"] = field(default_factory=list)
    problems: list[FileProblem] = field(default_factory=list)


def _plain(value):
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


class _Rows:
    """Rows as JSON objects: every column but secrets and binaries; collects the staff named."""

    def __init__(self):
        self.staff_ids: set[int] = set()

    def __call__(self, obj, **extra) -> dict:
        out = {}
        for column in obj.__table__.columns:
            name = column.key
            if name in SECRET_COLUMNS:
                continue
            value = getattr(obj, name)
            if isinstance(value, (bytes, bytearray, memoryview)):
                continue
            if name in STAFF_COLUMNS and value is not None:
                self.staff_ids.add(value)
            out[name] = _plain(value)
        out.update(extra)
        return out

    def staff(self) -> list[dict]:
        if not self.staff_ids:
            return []
        users = db.session.execute(select(StaffUser).where(StaffUser.id.in_(self.staff_ids))
                                   .order_by(StaffUser.id)).scalars()
        return [{"id": u.id, "name": u.name, "email": u.email} for u in users]


def _json_bytes(value) -> bytes:
    return (json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str)
            + "\n").encode("utf-8")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", (text or "").lower()).strip("-") or "x"


def _extension(mime: str | None, default: str = "bin") -> str:
    if mime in _EXTENSIONS:
        return _EXTENSIONS[mime]
    guessed = mimetypes.guess_extension(mime or "") or ""
    return guessed.lstrip(".") or default


def _blob(path, kind, stored_file, sha256, **meta) -> _Entry:
    return _Entry(path=path, kind=kind, blob=sha256, sha256=sha256,
                  size=stored_file.size if stored_file is not None else None, meta=meta)


def audit_record(event: AuditEvent) -> dict:
    """The event as the manifest lists it: every hashed field, `at` as it is hashed, and
    `hash` (app/services/audit.py `_hash_values`)."""
    values = {name: getattr(event, name) for name in audit.HASHED_FIELDS}
    values["at"] = audit._as_utc(values["at"]).isoformat(timespec="microseconds")
    values["hash"] = event.hash
    return values


def _events(bundle: _Bundle, events) -> None:
    for event in events:
        bundle.events.append(audit_record(event))
        if audit.event_hash(event) != event.hash:
            bundle.problems.append(FileProblem(
                path=bundle.prefix + MANIFEST, kind="audit_event", problem="audit_changed",
                expected_sha256=event.hash, actual_sha256=audit.event_hash(event),
                seq=event.seq))


def _request_bundle(cert_request: CertificateRequest, prefix: str = "") -> _Bundle:
    """Read everything `cert_request` holds into a bundle (no file is read yet)."""
    rows = _Rows()
    bundle = _Bundle(prefix=prefix, header={
        "kind": "request",
        "request": {"id": cert_request.id, "protocol": cert_request.protocol,
                    "state": cert_request.state, "product": cert_request.product.code},
        "holder": {"id": cert_request.holder.id, "cpf": cert_request.holder.cpf,
                   "name": cert_request.holder.name},
    })
    add = bundle.entries.append

    documents = []
    for doc in cert_request.documents:
        folder = f"documentos/{_slug(doc.kind)}"
        pages = []
        for page in doc.all_pages:
            stem = f"{folder}/pagina-{page.id}"
            original = f"{stem}-original.{_extension(page.mime)}"
            add(_blob(original, "document_original", page.original, page.original_sha256,
                      page_id=page.id, document=doc.kind))
            renditions = []
            for rendition in page.renditions:
                web = f"{stem}-{rendition.index + 1}-web.jpg"
                thumb = f"{stem}-{rendition.index + 1}-miniatura.jpg"
                for path, sha256, variant in ((web, rendition.web_sha256, "web"),
                                              (thumb, rendition.thumbnail_sha256, "thumbnail")):
                    add(_blob(path, "document_rendition", db.session.get(StoredFile, sha256),
                              sha256, page_id=page.id, index=rendition.index, variant=variant))
                renditions.append(rows(rendition, web_file=web, thumbnail_file=thumb))
            pages.append(rows(page, original_file=original, renditions=renditions))
        documents.append(rows(doc, pages=pages,
                              pendencies=[rows(p) for p in doc.pendencies]))

    conferences = []
    for conference in cert_request.conferences:
        folder = f"videoconferencias/{conference.id}"
        captures = []
        for capture in conference.captures:
            if not capture.file_sha256:
                captures.append(rows(capture))
                continue
            kind = "face_photo" if capture.kind == "face" else "still"
            name = "rosto" if capture.kind == "face" else "documento"
            path = f"{folder}/capturas/{name}-{capture.id}.{_extension(capture.file.mime, 'jpg')}"
            add(_blob(path, kind, capture.file, capture.file_sha256, capture_id=capture.id,
                      status=capture.status))
            captures.append(rows(capture, file=path))
        recording = thumbnail = None
        if conference.recording_sha256:
            recording = f"{folder}/gravacao.{_extension(conference.recording.mime, 'mp4')}"
            add(_blob(recording, "recording_processed", conference.recording,
                      conference.recording_sha256, conference_id=conference.id))
        if conference.recording_thumbnail_sha256:
            thumbnail = f"{folder}/gravacao-miniatura.jpg"
            add(_blob(thumbnail, "recording_thumbnail", conference.recording_thumbnail,
                      conference.recording_thumbnail_sha256, conference_id=conference.id))
        segments = []
        root = recordings_root(current_app.config)
        for segment in conference.segments:
            suffix = Path(segment.path).suffix or ".webm"
            path = (f"{folder}/segmentos/{_slug(segment.role)}-{_slug(segment.conn_id)}/"
                    f"{segment.seq:05d}{suffix}")
            add(_Entry(path=path, kind="recording_segment", file=root / segment.path,
                       sha256=segment.sha256, size=segment.size,
                       meta={"conference_id": conference.id, "role": segment.role,
                             "conn_id": segment.conn_id, "seq": segment.seq}))
            segments.append(rows(segment, file=path))
        if conference.consents:
            add(_Entry(path=f"{folder}/consentimento.json", kind="consent_json",
                       data=_json_bytes([rows(c) for c in conference.consents]),
                       meta={"conference_id": conference.id}))
        add(_Entry(path=f"{folder}/videoconferencia.json", kind="conference_json",
                   data=_json_bytes(rows(conference, recording_file=recording,
                                         recording_thumbnail_file=thumbnail,
                                         connections=[rows(c) for c in conference.connections],
                                         captures=captures, segments=segments)),
                   meta={"conference_id": conference.id}))
        conferences.append({"id": conference.id, "folder": f"{folder}/"})

    certificates = []
    for issued in cert_request.certificates:
        path = f"emissao/certificado-{_slug(issued.serial)}.cer"
        add(_Entry(path=path, kind="certificate", data=issued.der,
                   sha256=issued.fingerprint_sha256, size=len(issued.der),
                   meta={"serial": issued.serial}))
        certificates.append(rows(issued, file=path))
    termos = []
    for termo in cert_request.termos:
        path = f"emissao/termo-{termo.id}.pdf"
        add(_blob(path, "termo", termo.file, termo.sha256, termo_id=termo.id, state=termo.state))
        termos.append(rows(termo, file=path))
    if cert_request.second_checks:
        add(_Entry(path="emissao/segunda-conferencia.json", kind="second_checks_json",
                   data=_json_bytes([rows(c) for c in cert_request.second_checks])))

    emails = db.session.execute(select(EmailMessage).where(
        EmailMessage.request_id == cert_request.id).order_by(EmailMessage.id)).scalars().all()
    add(_Entry(path="mensagens/emails.json", kind="emails_json",
               data=_json_bytes([rows(m) for m in emails])))
    sms = db.session.execute(select(SmsMessage).where(
        SmsMessage.request_id == cert_request.id).order_by(SmsMessage.id)).scalars().all()
    add(_Entry(path="mensagens/sms.json", kind="sms_json",
               data=_json_bytes([rows(m) for m in sms])))

    request_json = {
        "request": rows(cert_request),
        "product": rows(cert_request.product),
        "holder": rows(cert_request.holder),
        "company": rows(cert_request.company) if cert_request.company else None,
        "access_links": [rows(link) for link in cert_request.links],
        "documents": documents,
        "conferences": conferences,
        "certificates": certificates,
        "termos": termos,
    }
    request_json["staff"] = rows.staff()  # last: every row above has named its staff
    add(_Entry(path="solicitacao.json", kind="request_json", data=_json_bytes(request_json)))

    _events(bundle, db.session.execute(select(AuditEvent).where(
        AuditEvent.request_id == cert_request.id).order_by(AuditEvent.seq)).scalars())
    return bundle


def _companies_of(person: Person) -> list[Company]:
    ids = {r.company_id for r in person.requests if r.company_id}
    query = select(Company).where(or_(Company.responsible_id == person.id, Company.id.in_(ids))
                                  if ids else Company.responsible_id == person.id)
    return db.session.execute(query.order_by(Company.id)).scalars().all()


def _person_bundle(person: Person) -> _Bundle:
    rows = _Rows()
    requests = sorted(person.requests, key=lambda r: r.id)
    companies = _companies_of(person)
    bundle = _Bundle(prefix="", header={
        "kind": "person",
        "person": {"id": person.id, "cpf": person.cpf, "name": person.name},
        "requests": [{"id": r.id, "protocol": r.protocol, "folder": f"solicitacoes/{r.protocol}/"}
                     for r in requests],
    })
    for cert_request in requests:
        bundle.parts.append(_request_bundle(cert_request, f"solicitacoes/{cert_request.protocol}/"))
    bundle.entries.append(_Entry(path="pessoa.json", kind="person_json", data=_json_bytes({
        "person": rows(person),
        "requests": [{"id": r.id, "protocol": r.protocol, "state": r.state,
                      "folder": f"solicitacoes/{r.protocol}/"} for r in requests],
    })))
    bundle.entries.append(_Entry(path="empresas.json", kind="companies_json",
                                 data=_json_bytes([rows(c) for c in companies])))
    # Messages to the person's address or number that belong to no request.
    emails = db.session.execute(select(EmailMessage).where(
        EmailMessage.request_id.is_(None), EmailMessage.to_address == person.email)
        .order_by(EmailMessage.id)).scalars().all()
    bundle.entries.append(_Entry(path="mensagens/emails.json", kind="emails_json",
                                 data=_json_bytes([rows(m) for m in emails])))
    sms = db.session.execute(select(SmsMessage).where(
        SmsMessage.request_id.is_(None), SmsMessage.to == person.phone)
        .order_by(SmsMessage.id)).scalars().all()
    bundle.entries.append(_Entry(path="mensagens/sms.json", kind="sms_json",
                                 data=_json_bytes([rows(m) for m in sms])))
    about = [and_(AuditEvent.object_type == "person", AuditEvent.object_id == str(person.id))]
    if companies:
        about.append(and_(AuditEvent.object_type == "company",
                          AuditEvent.object_id.in_([str(c.id) for c in companies])))
    _events(bundle, db.session.execute(select(AuditEvent).where(
        AuditEvent.request_id.is_(None), or_(*about)).order_by(AuditEvent.seq)).scalars())
    return bundle


# --- writing the ZIP ------------------------------------------------------------------------

@dataclass(frozen=True)
class _Signer:
    key: object
    cert: object
    chain: tuple
    pem: bytes

    @classmethod
    def seal(cls, actor) -> "_Signer":
        """The office seal; raises CaUnavailable when there is none."""
        key, cert, chain = ca_service.credential_parts(ca_service.credential_for("seal",
                                                                                 actor=actor))
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [cert, *chain])
        return cls(key, cert, tuple(chain), pem)

    def sign(self, data: bytes) -> bytes:
        builder = pkcs7.PKCS7SignatureBuilder().set_data(data).add_signer(
            self.cert, self.key, hashes.SHA256())
        for cert in self.chain:
            builder = builder.add_certificate(cert)
        return builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature,
                                                         pkcs7.PKCS7Options.Binary])


class _Writer:
    """Streams entries into the ZIP, hashing each as it goes."""

    def __init__(self, zf: zipfile.ZipFile, storage, when: datetime):
        self.zf = zf
        self.storage = storage
        self.date_time = when.timetuple()[:6]
        self.total = 0

    def _info(self, name: str, size: int | None) -> tuple[zipfile.ZipInfo, bool]:
        info = zipfile.ZipInfo(name, date_time=self.date_time)
        info.compress_type = (zipfile.ZIP_DEFLATED if name.endswith(_DEFLATE_SUFFIXES)
                              else zipfile.ZIP_STORED)
        info.external_attr = 0o644 << 16
        return info, size is None or size >= 0x7FFF0000

    def write_bytes(self, name: str, data: bytes) -> tuple[str, int]:
        info, _ = self._info(name, len(data))
        self.zf.writestr(info, data)
        self.total += len(data)
        return hashlib.sha256(data).hexdigest(), len(data)

    def write_stream(self, name: str, stream, expected_size: int | None) -> tuple[str, int]:
        info, zip64 = self._info(name, expected_size)
        digest = hashlib.sha256()
        size = 0
        with self.zf.open(info, "w", force_zip64=zip64) as out:
            while True:
                chunk = stream.read(CHUNK_SIZE)
                if not chunk:
                    break
                size += len(chunk)
                if not zip64 and size >= 0x7FFF0000:
                    # Grown past what the entry was opened for: it is not the recorded file.
                    digest.update(chunk)
                    break
                digest.update(chunk)
                out.write(chunk)
        self.total += size
        return digest.hexdigest(), size

    def entry(self, bundle: _Bundle, entry: _Entry) -> dict | None:
        """Write one entry; its manifest line, or None (and a problem) when it does not match."""
        name = bundle.prefix + entry.path
        if entry.data is not None:
            sha256, size = self.write_bytes(name, entry.data)
        else:
            try:
                # Segments are encrypted in place by the processing job: read them through
                # the decrypting opener (plain ones pass through).
                stream = (self.storage.open(entry.blob) if entry.blob is not None
                          else encryption.open_path(entry.file, encryption.get_keyring))
            except (BlobNotFound, FileNotFoundError):
                bundle.problems.append(FileProblem(
                    path=name, kind=entry.kind, problem="missing",
                    expected_sha256=entry.sha256, expected_size=entry.size))
                return None
            except encryption.IntegrityError:  # an encrypted file altered on disk
                bundle.problems.append(FileProblem(
                    path=name, kind=entry.kind, problem="changed", expected_sha256=entry.sha256,
                    expected_size=entry.size))
                return None
            try:
                with stream:
                    sha256, size = self.write_stream(name, stream, entry.size)
            except encryption.IntegrityError:  # an encrypted file altered on disk
                bundle.problems.append(FileProblem(
                    path=name, kind=entry.kind, problem="changed", expected_sha256=entry.sha256,
                    expected_size=entry.size))
                return None
        if (entry.sha256 is not None and sha256 != entry.sha256) or (
                entry.size is not None and size != entry.size):
            bundle.problems.append(FileProblem(
                path=name, kind=entry.kind, problem="changed", expected_sha256=entry.sha256,
                actual_sha256=sha256, expected_size=entry.size, actual_size=size))
            return None
        return {"path": entry.path, "sha256": sha256, "size": size, "kind": entry.kind,
                **({"meta": entry.meta} if entry.meta else {})}


def _write_bundle(writer: _Writer, bundle: _Bundle, signer: _Signer, header: dict
                  ) -> tuple[list[FileProblem], list[tuple[str, str, int, str]]]:
    """Write a bundle (its parts first) and its signed manifest. Returns the problems found
    and the (path, sha256, size, kind) of its manifest, signature and chain."""
    problems = []
    files = []
    parts = []
    for part in bundle.parts:
        part_problems, signed = _write_bundle(writer, part, signer, header)
        problems += part_problems
        for path, sha256, size, kind in signed:
            files.append({"path": path[len(bundle.prefix):], "sha256": sha256, "size": size,
                          "kind": kind})
        parts.append({"path": part.prefix[len(bundle.prefix):],
                      "request_id": part.header["request"]["id"],
                      "protocol": part.header["request"]["protocol"]})
    for entry in bundle.entries:
        line = writer.entry(bundle, entry)
        if line is not None:
            files.append(line)
    sha256, size = writer.write_bytes(bundle.prefix + CHAIN, signer.pem)
    files.append({"path": CHAIN, "sha256": sha256, "size": size, "kind": "signing_chain"})
    problems += bundle.problems
    manifest = {
        "format": FORMAT,
        **header,
        **bundle.header,
        "signature": {"file": SIGNATURE, "chain": CHAIN,
                      "signer": signer.cert.subject.rfc4514_string(),
                      "format": "CMS SignedData (PKCS#7), detached, SHA-256, DER"},
        **({"parts": parts} if parts else {}),
        "files": sorted(files, key=lambda f: f["path"]),
        "audit_hashed_fields": list(audit.HASHED_FIELDS),
        "audit_events": bundle.events,
    }
    # Keys in this order (not sorted): what the export is, then its files, then the trail.
    data = (json.dumps(manifest, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    m_sha, m_size = writer.write_bytes(bundle.prefix + MANIFEST, data)
    signature = signer.sign(data)
    s_sha, s_size = writer.write_bytes(bundle.prefix + SIGNATURE, signature)
    return problems, [(bundle.prefix + MANIFEST, m_sha, m_size, "part_manifest"),
                      (bundle.prefix + SIGNATURE, s_sha, s_size, "part_signature"),
                      (bundle.prefix + CHAIN, sha256, size, "part_chain")]


def export_dir(app=None) -> Path:
    return Path((app or current_app).config["INSTANCE_DIR"]) / EXPORT_DIR


def _remove_stale(directory: Path) -> None:
    limit = time.time() - STALE_SECONDS
    for path in directory.glob("*.zip.part"):
        try:
            if path.stat().st_mtime < limit:
                path.unlink()
        except FileNotFoundError:
            pass


@dataclass(frozen=True)
class _Written:
    path: Path
    files: int
    bytes: int
    manifest_sha256: str


def _write_zip(bundle: _Bundle, signer: _Signer, header: dict) -> _Written:
    """The ZIP in a temporary file; raises DossierIntegrityError (leaving nothing) when a
    file does not match."""
    directory = export_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _remove_stale(directory)
    fd, name = tempfile.mkstemp(dir=directory, prefix="dossie-", suffix=".zip.part")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", allowZip64=True) as zf:
            writer = _Writer(zf, get_storage(), utcnow())
            problems, signed = _write_bundle(writer, bundle, signer, header)
            count = len(zf.infolist())
        if problems:
            raise DossierIntegrityError(problems)
        return _Written(path=path, files=count, bytes=writer.total, manifest_sha256=signed[0][1])
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _header(actor) -> dict:
    from .office import get_settings

    office = get_settings()
    return {
        "exported_at": utcnow().isoformat(timespec="seconds"),
        "exported_by": {"type": actor.type, "id": actor.id, "label": actor.label},
        "office": {"name": office.authority_name, "cnpj": office.cnpj},
    }


def _export(bundle: _Bundle, actor) -> _Written:
    signer = _Signer.seal(actor)  # may be made just now (homologação): the export is later
    header = _header(actor)
    # Copying a recording takes a while: hold no transaction (nor SQLite's write lock) meanwhile.
    # Everything needed was read into `bundle`.
    db.session.commit()
    return _write_zip(bundle, signer, header)


def export_request(cert_request: CertificateRequest, actor) -> Path:
    """Write the request's dossier to a ZIP and return its path (a temporary file the caller
    hands out and deletes).

    Commits the session once everything is read, before the files are copied. Audits
    `dossier.export` (with the manifest's SHA-256) in a new transaction the caller commits.
    Raises DossierIntegrityError after auditing `dossier.export_refused` when a file no
    longer matches its SHA-256 or is gone (the caller commits, so the refusal stays
    recorded), and CaUnavailable when there is no office seal to sign with.
    """
    request_id = cert_request.id
    try:
        written = _export(_request_bundle(cert_request), actor)
    except DossierIntegrityError as exc:
        cert_request = db.session.get(CertificateRequest, request_id)
        audit.record("dossier.export_refused", actor=actor, obj=cert_request,
                     cert_request=cert_request,
                     details={"problems": [p.as_details() for p in exc.problems]})
        raise
    cert_request = db.session.get(CertificateRequest, request_id)
    audit.record("dossier.export", actor=actor, obj=cert_request, cert_request=cert_request,
                 details={"manifest_sha256": written.manifest_sha256, "files": written.files,
                          "bytes": written.bytes})
    return written.path


def export_person(person: Person, actor) -> Path:
    """Everything held about the person's CPF (LGPD): their record, their companies, and every
    request of theirs as a folder like `export_request`'s, each with its own signed manifest,
    under a signed root manifest. Returns the ZIP's path.

    Commits as `export_request` does. Audits `person.export`, and `dossier.export` on each
    request's trail; raises DossierIntegrityError after auditing `person.export_refused`.
    """
    person_id = person.id
    bundle = _person_bundle(person)
    request_ids = [part.header["request"]["id"] for part in bundle.parts]
    try:
        written = _export(bundle, actor)
    except DossierIntegrityError as exc:
        person = db.session.get(Person, person_id)
        audit.record("person.export_refused", actor=actor, obj=person,
                     details={"problems": [p.as_details() for p in exc.problems]})
        raise
    person = db.session.get(Person, person_id)
    audit.record("person.export", actor=actor, obj=person,
                 details={"manifest_sha256": written.manifest_sha256, "files": written.files,
                          "bytes": written.bytes, "requests": request_ids})
    for request_id in request_ids:
        cert_request = db.session.get(CertificateRequest, request_id)
        audit.record("dossier.export", actor=actor, obj=cert_request, cert_request=cert_request,
                     details={"person_export": True,
                              "root_manifest_sha256": written.manifest_sha256})
    return written.path

