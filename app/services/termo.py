"""The termo de titularidade of an issued certificate: rendered, counter-signed by the agent of
the call, signed by the holder (A1: in the browser with the new key; A3: by the token's software,
or accepted with the password) and sealed by the office with a timestamp and the validation
data embedded (PAdES B-LT). Each version of the PDF is a stored file; the row points at the
newest and every step is audited.
"""
import base64

from cryptography import x509
from flask import current_app
from flask_babel import lazy_gettext as _l

from ..extensions import db
from ..models import Termo, utcnow
from . import ServiceError, audit, ca as ca_service
from .office import get_settings
from .storage import get_storage


class TermoError(ServiceError):
    pass


AGENT_FIELD, HOLDER_FIELD, SEAL_FIELD = "AgenteDeRegistro", "Titular", "SeloDoEscritorio"
TIMESTAMP_FIELD = "CarimboDoTempo"  # the document timestamp over the seal and validation data


def current_termo(cert_request) -> Termo | None:
    return cert_request.termos[-1] if cert_request.termos else None


def _store(pdf: bytes) -> str:
    from ..models import StoredFile

    blob = get_storage().put(pdf)
    if db.session.get(StoredFile, blob.sha256) is None:
        db.session.add(StoredFile(sha256=blob.sha256, size=blob.size, mime="application/pdf"))
        db.session.flush()
    return blob.sha256


def _read(termo: Termo) -> bytes:
    with get_storage().open(termo.sha256) as f:
        return f.read()


def termo_data(issued):
    """What the termo shows, from the request's dossier."""
    from ..pki.termo import TermoData
    from .issuance import last_call

    cert_request = issued.request
    conference = last_call(cert_request)
    office = get_settings()
    face = next((c for c in conference.captures if c.kind == "face" and c.status == "accepted"),
                None) if conference else None
    face_jpeg = None
    if face is not None and face.file_sha256:
        with get_storage().open(face.file_sha256) as f:
            face_jpeg = f.read()
    consent = conference.consents[-1] if conference and conference.consents else None
    holder = cert_request.holder
    company = cert_request.company if cert_request.product.is_company else None
    return TermoData(
        holder_name=company.legal_name if company else holder.name,
        holder_cpf=holder.cpf, holder_email=holder.email,
        product_name=cert_request.product.name, certificate_serial=issued.serial,
        certificate_sha256=issued.fingerprint_sha256, valid_from=issued.not_before,
        valid_until=issued.not_after, ra_name=office.authority_name,
        ra_cnpj=office.cnpj or "", agent_name=conference.agent.name
        if conference and conference.agent else "—",
        call_at=conference.started_at if conference else issued.issued_at,
        consent_text=consent.text if consent else "—",
        consent_accepted_at=consent.accepted_at if consent else issued.issued_at,
        protocol=cert_request.protocol,
        company_name=company.legal_name if company else None,
        company_cnpj=company.cnpj if company else None,
        responsible_name=holder.name if company else None,
        responsible_cpf=holder.cpf if company else None,
        face_photo_jpeg=face_jpeg,
        recording_hashes=[(f"{s.role}-{s.seq:04d}", s.sha256) for s in conference.segments]
        if conference else [],
        homologation=issued.homologation, zone=office.time_zone,
        certificate_subject=issued.subject, issued_at=utcnow(),
    )


def _agent_of(issued):
    from .issuance import last_call

    conference = last_call(issued.request)
    return conference.agent if conference is not None else None


def _timestamper():
    from ..pki.tsa import HttpTSA

    url = current_app.config["TSA_URL"]
    return HttpTSA(url).timestamper() if url else local_tsa().timestamper()


def local_tsa():
    """The local RFC 3161 timestamp authority, with its credential (made on first use in
    homologação)."""
    from ..pki.tsa import LocalTSA

    key, cert, chain = ca_service.credential_parts(ca_service.credential_for("tsa"))
    return LocalTSA(cert, key, chain)


def _validation_context():
    """Offline: the trust roots and the built-in CA's current CRLs (an external CA's
    revocation data would be fetched by a later version; docs/issuance.md)."""
    from ..pki.pades import make_validation_context

    crls = []
    ca = ca_service.builtin_ca() if ca_service.is_homologation() else None
    if ca is not None:
        crl = ca_service.current_crl() or ca_service.publish_crl(ca)
        now = utcnow().replace(microsecond=0)
        from datetime import timedelta

        crls = [crl.der, ca.root_crl(crl_number=int(now.timestamp()), this_update=now,
                                     next_update=now + timedelta(days=30))]
    return make_validation_context(ca_service.trust_roots_der(), crls)


def create(issued, *, actor=None) -> Termo:
    """Render the termo and counter-sign it with the agent's certificate."""
    from ..pki import pades
    from ..pki.termo import render_termo_pdf

    agent = _agent_of(issued)
    if agent is None:
        raise TermoError(_l("Não há agente da videoconferência para contra-assinar o termo."))
    key, cert, chain = ca_service.credential_parts(ca_service.credential_for("agent", agent,
                                                                             actor=actor))
    pdf = render_termo_pdf(termo_data(issued))
    pdf = pades.sign_pdf(pdf, key=key, cert=cert, chain=chain, field_name=AGENT_FIELD,
                         reason="Contra-assinatura do Agente de Registro", name=agent.name,
                         timestamper=_timestamper())
    termo = Termo(request=issued.request, certificate=issued, state="agent_signed",
                  sha256=_store(pdf))
    db.session.add(termo)
    db.session.flush()
    audit.record("termo.agent_signed", actor=actor, obj=termo, cert_request=issued.request,
                 details={"sha256": termo.sha256, "agent": agent.email})
    return termo


def start_holder_signature(issued) -> dict | None:
    """A1, right after issuance: the termo counter-signed, and the bytes the holder's browser
    signs with the new key. None when the termo could not be made (the certificate stands; staff
    see the termo missing)."""
    from ..pki import pades

    try:
        termo = current_termo(issued.request) or create(issued)
        state = pades.prepare_external(
            _read(termo), cert_der=issued.der, chain_der=ca_service.chain_of(issued),
            field_name=HOLDER_FIELD, reason="Assinatura do titular",
            timestamper=_timestamper())
    except (TermoError, ca_service.CaUnavailable) as exc:
        current_app.logger.warning("termo not prepared for %s: %s", issued.serial, exc.message)
        return None
    termo.pending_signature = state.to_json()
    return {"to_be_signed": base64.b64encode(state.to_be_signed).decode()}


def finish_holder_signature(issued, signature: bytes, *, actor) -> Termo:
    """Embed the browser's signature and seal the termo."""
    from ..pki import pades

    termo = current_termo(issued.request)
    if termo is None or termo.state != "agent_signed" or not termo.pending_signature:
        raise TermoError(_l("O termo não está aguardando a assinatura do titular."))
    try:
        pdf = pades.finish_external(pades.ExternalSigning.from_json(termo.pending_signature),
                                    signature, timestamper=_timestamper())
    except ValueError:
        audit.record("termo.holder_signature_rejected", actor=actor, obj=termo,
                     cert_request=issued.request)
        raise TermoError(_l("A assinatura do termo não confere com o certificado emitido."))
    termo.sha256 = _store(pdf)
    termo.pending_signature = None
    termo.state = "holder_signed"
    audit.record("termo.holder_signed", actor=actor, obj=termo, cert_request=issued.request,
                 details={"sha256": termo.sha256})
    return seal(termo, actor=actor)


def prepare_for_token(issued) -> Termo | None:
    """A3: the counter-signed termo the holder signs with the token's software."""
    try:
        return current_termo(issued.request) or create(issued)
    except (TermoError, ca_service.CaUnavailable) as exc:
        current_app.logger.warning("termo not prepared for %s: %s", issued.serial, exc.message)
        return None


def upload_holder_signed(issued, pdf: bytes, *, actor) -> Termo:
    """A3: the termo signed by the token's software. It must keep the agent's signature intact
    and add a valid signature by the issued certificate."""
    from ..pki import pades

    termo = current_termo(issued.request)
    if termo is None or termo.state != "agent_signed":
        raise TermoError(_l("O termo não está aguardando a assinatura do titular."))
    if not pdf.startswith(b"%PDF") or len(pdf) > 20 * 1024 * 1024:
        raise TermoError(_l("Envie o termo assinado em PDF."))
    original = _read(termo)
    if not pdf.startswith(original):
        raise TermoError(_l("Este PDF não é o termo enviado: assine o arquivo baixado desta "
                            "página, sem alterá-lo."))
    try:
        reports = [r for r in pades.validate_pdf(pdf, trust_roots_der=ca_service.trust_roots_der())
               if r.kind == "signature"]
    except Exception:
        raise TermoError(_l("Não foi possível ler as assinaturas do PDF.")) from None
    holder_cert = x509.load_der_x509_certificate(issued.der)
    holder_cn = holder_cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    if not any(r.signer_cn == holder_cn and r.intact and r.valid for r in reports) or \
            not all(r.intact for r in reports):
        raise TermoError(_l("O PDF não traz uma assinatura válida com o certificado emitido."))
    termo.sha256 = _store(pdf)
    termo.state = "holder_signed"
    audit.record("termo.holder_signed", actor=actor, obj=termo, cert_request=issued.request,
                 details={"sha256": termo.sha256, "via": "token"})
    return seal(termo, actor=actor)


def accept_with_password(issued, *, actor) -> Termo:
    """A3 whose token cannot sign a PDF: the holder accepted with the password (the caller
    checked it); recorded, then sealed."""
    termo = current_termo(issued.request)
    if termo is None or termo.state != "agent_signed":
        raise TermoError(_l("O termo não está aguardando a assinatura do titular."))
    termo.state = "holder_accepted"
    termo.holder_accepted_at = utcnow()
    audit.record("termo.holder_accepted", actor=actor, obj=termo, cert_request=issued.request,
                 details={"sha256": termo.sha256})
    return seal(termo, actor=actor)


def seal(termo: Termo, *, actor=None) -> Termo:
    """The office's seal, last: timestamp and validation data embedded (PAdES B-LT)."""
    from ..pki import pades

    key, cert, chain = ca_service.credential_parts(ca_service.credential_for("seal",
                                                                             actor=actor))
    pdf = pades.seal_pdf(_read(termo), key=key, cert=cert, chain=chain,
                         timestamper=_timestamper(), validation_context=_validation_context(),
                         field_name=SEAL_FIELD, timestamp_field_name=TIMESTAMP_FIELD)
    termo.sha256 = _store(pdf)
    termo.state = "sealed"
    audit.record("termo.sealed", actor=actor, obj=termo, cert_request=termo.request,
                 details={"sha256": termo.sha256})
    return termo
