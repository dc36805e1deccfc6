"""From the end of the call to the certificate: "Continuar", the second check, the holder's
invitation, the holder's password, the certificate request (CSR) and revocation.

The holder's private key never reaches the server. For an A1 the holder's browser makes the
key pair and sends a PKCS#10 request; for an A3 the token's software makes it and the holder
uploads the request. Either way the server checks it against the holder's data and key policy
and passes it to the CA (app.services.ca).
"""
from datetime import timedelta

from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from ..extensions import db
from ..models import IssuanceAttempt, IssuedCertificate, SecondCheck, utcnow
from ..pki.authority import CertificateAuthorityError
from ..pki.csr import CsrRejected, check_csr, parse_csr
from . import ServiceError, audit, ca as ca_service, links, workflow
from .conference import verify_password
from .email import queue_email
from .office import get_settings


class IssuanceError(ServiceError):
    pass


class WrongPassword(IssuanceError):
    pass


REVOCATION_REASONS = {
    "loss": _l("Perda do dispositivo ou da mídia"),
    "theft": _l("Roubo do dispositivo ou da mídia"),
    "key_compromise": _l("Comprometimento da chave privada ou da senha"),
    "superseded": _l("Substituição por outro certificado"),
    "cessation_of_operation": _l("Fim do uso (encerramento de atividade)"),
    "unspecified": _l("Outro motivo"),
}
HOLDER_REVOCATION_REASONS = ("loss", "theft", "key_compromise")

CSR_MESSAGES = {
    "malformed": _l("O arquivo não é uma requisição de certificado (PKCS#10) válida."),
    "bad_signature": _l("A assinatura da requisição não confere: gere a requisição novamente."),
    "weak_key": _l("A chave da requisição não atende à política: use RSA de 2048 bits ou mais "
                   "(expoente 65537) ou curva elíptica P-256, P-384 ou P-521."),
    "other_holder": _l("A requisição traz o CPF ou CNPJ de outra pessoa. Gere a requisição com "
                       "os dados deste titular."),
}


# --- after the call ---------------------------------------------------------------------------

def last_call(cert_request):
    """The request's latest conference that really took place (ended after it started)."""
    for conference in reversed(cert_request.conferences):
        if conference.started_at is not None and conference.state == "ended":
            return conference
    return None


def call_staff_ids(conference) -> set[int]:
    """Every staff member who acted as the agent of the call: started it, ended it, or joined it
    as the agent. None of them may do its second check."""
    ids = {conference.agent_id, conference.ended_by_id}
    ids.update(c.staff_id for c in conference.connections if c.role == "agent")
    return {i for i in ids if i is not None}


def continue_after_call(cert_request, *, staff, actor):
    """"Continuar" after the call, once the agent confirmed the data: to the second check, or,
    for a product without it (e-Notariado), straight to the holder's invitation."""
    if cert_request.state != "conference_done":
        raise IssuanceError(_l("Esta solicitação não está aguardando a continuação após a "
                               "videoconferência."))
    conference = last_call(cert_request)
    if conference is None:
        raise IssuanceError(_l("Não há videoconferência encerrada para esta solicitação."))
    if not cert_request.revocation_password_hash:
        raise IssuanceError(_l("O titular ainda não cadastrou a senha de revogação. Refaça a "
                               "videoconferência para cadastrá-la."))
    if not any(c.kind == "face" and c.status == "accepted" for c in conference.captures):
        raise IssuanceError(_l("Não há foto do rosto aceita nesta videoconferência."))
    if cert_request.product.needs_second_check:
        workflow.transition(cert_request, "second_check", actor=actor,
                            details={"conference_id": conference.id})
        return "second_check"
    workflow.transition(cert_request, "approved", actor=actor,
                        details={"conference_id": conference.id, "second_check": False})
    send_invitation(cert_request, actor=actor)
    return "approved"


def may_verify(cert_request, staff) -> bool:
    conference = last_call(cert_request)
    return (staff.has_role("verifier") and conference is not None
            and staff.id not in call_staff_ids(conference))


def _check_verifier(cert_request, staff):
    if cert_request.state != "second_check":
        raise IssuanceError(_l("Esta solicitação não está na segunda conferência."))
    if not staff.has_role("verifier"):
        raise IssuanceError(_l("Apenas um verificador pode fazer a segunda conferência."))
    conference = last_call(cert_request)
    if conference is None or staff.id in call_staff_ids(conference):
        raise IssuanceError(_l("Quem conduziu a videoconferência não pode fazer a segunda "
                               "conferência desta solicitação. Peça a outro verificador."))
    return conference


def approve(cert_request, *, staff, actor, override: str | None = None):
    """The verifier approves the dossier: the holder is invited to issue the certificate.
    The recording must be processed ("concluído") unless the verifier gives a reason."""
    conference = _check_verifier(cert_request, staff)
    override = (override or "").strip() or None
    if conference.recording_state != "done" and not override:
        raise IssuanceError(_l("A gravação ainda não está concluída. Aguarde o processamento ou "
                               "informe o motivo para aprovar mesmo assim."))
    check = SecondCheck(request=cert_request, conference=conference, verifier_id=staff.id,
                        decision="approved",
                        recording_override=override if conference.recording_state != "done"
                        else None)
    db.session.add(check)
    db.session.flush()
    workflow.transition(cert_request, "approved", actor=actor, reason=check.recording_override,
                        details={"second_check_id": check.id,
                                 "recording_state": conference.recording_state})
    if check.recording_override:
        audit.record("second_check.recording_override", actor=actor, obj=check,
                     cert_request=cert_request, reason=override,
                     details={"recording_state": conference.recording_state})
    send_invitation(cert_request, actor=actor)
    return check


def return_to_agent(cert_request, *, staff, actor, reason: str):
    """The verifier returns the dossier to the agent, who may redo the call."""
    conference = _check_verifier(cert_request, staff)
    reason = (reason or "").strip()
    if not reason:
        raise IssuanceError(_l("Informe o motivo da devolução."))
    check = SecondCheck(request=cert_request, conference=conference, verifier_id=staff.id,
                        decision="returned", reason=reason)
    db.session.add(check)
    db.session.flush()
    workflow.transition(cert_request, "conference_done", actor=actor, reason=reason,
                        details={"second_check_id": check.id})
    return check


# --- the holder's invitation -----------------------------------------------------------------

def issuance_link(cert_request):
    return links.current_link(cert_request, "issuance")


def send_invitation(cert_request, *, actor=None):
    """Email and SMS with the issuance link. A live link is sent again as it is; an expired one
    is replaced."""
    from . import sms

    link = issuance_link(cert_request)
    if link is None or link.expires_at <= utcnow():
        link = links.create_link(cert_request, "issuance",
                                 days=current_app.config["ISSUANCE_LINK_DAYS"], actor=actor)
    url = links.url_for_link(link)
    office = get_settings()
    queue_email("issuance_invitation", cert_request.holder.email,
                str(_l("Emita seu certificado digital — protocolo %(protocol)s",
                       protocol=cert_request.protocol)),
                "issuance_invitation", cert_request=cert_request, link=link, link_url=url)
    sms.queue_sms(
        "issuance_invitation", cert_request.holder.phone,
        str(_l("%(office)s: seu certificado está pronto para emissão. Protocolo %(protocol)s. "
               "Acesse %(url)s", office=office.authority_name[:30],
               protocol=cert_request.protocol, url=url)),
        cert_request=cert_request)
    return link


def resend_invitation(cert_request, *, actor):
    if cert_request.state != "approved":
        raise IssuanceError(_l("O convite de emissão só pode ser reenviado enquanto o "
                               "certificado não foi emitido."))
    return send_invitation(cert_request, actor=actor)


# --- the holder's password ------------------------------------------------------------------

def _attempts(cert_request) -> IssuanceAttempt:
    row = db.session.execute(select(IssuanceAttempt).where(
        IssuanceAttempt.request_id == cert_request.id).with_for_update()).scalar_one_or_none()
    if row is None:
        row = IssuanceAttempt(request_id=cert_request.id, failed=0)
        db.session.add(row)
        db.session.flush()
    return row


def locked_until(cert_request):
    row = db.session.execute(select(IssuanceAttempt).where(
        IssuanceAttempt.request_id == cert_request.id)).scalar_one_or_none()
    if row is not None and row.locked_until and row.locked_until > utcnow():
        return row.locked_until
    return None


def check_password(cert_request, password: str, *, purpose: str) -> None:
    """Verify the revocation password typed by the holder; wrong ones are counted per request
    and pause the page after ISSUANCE_MAX_TRIES. The caller commits in both cases."""
    config = current_app.config
    row = _attempts(cert_request)
    now = utcnow()
    if row.locked_until and row.locked_until > now:
        raise WrongPassword(_l("Muitas tentativas com senha errada. Tente novamente depois de "
                               "%(minutes)s minutos.", minutes=config["ISSUANCE_LOCK_MINUTES"]))
    if verify_password(cert_request, password):
        row.failed = 0
        row.locked_until = None
        if purpose == "issuance":
            row.unlocked_at = now
        audit.record("holder.password_ok", actor=audit.client_actor(cert_request),
                     obj=cert_request, cert_request=cert_request, details={"purpose": purpose})
        return
    row.failed += 1
    details = {"purpose": purpose, "failed": row.failed}
    if row.failed >= config["ISSUANCE_MAX_TRIES"]:
        row.locked_until = now + timedelta(minutes=config["ISSUANCE_LOCK_MINUTES"])
        row.failed = 0
        details["locked_until"] = row.locked_until.isoformat()
    audit.record("holder.password_wrong", actor=audit.client_actor(cert_request),
                 obj=cert_request, cert_request=cert_request, details=details)
    if row.locked_until and row.locked_until > now:
        raise WrongPassword(_l("Muitas tentativas com senha errada. Tente novamente depois de "
                               "%(minutes)s minutos.", minutes=config["ISSUANCE_LOCK_MINUTES"]))
    left = config["ISSUANCE_MAX_TRIES"] - row.failed
    raise WrongPassword(_l("Senha incorreta. Restam %(n)s tentativas antes de uma pausa.", n=left))


def password_checked(cert_request, since) -> bool:
    row = db.session.execute(select(IssuanceAttempt).where(
        IssuanceAttempt.request_id == cert_request.id)).scalar_one_or_none()
    return row is not None and row.unlocked_at is not None and row.unlocked_at >= since


# --- the certificate -----------------------------------------------------------------------

def expected_numbers(cert_request):
    if cert_request.product.is_company and cert_request.company is not None:
        return cert_request.holder.cpf, cert_request.company.cnpj
    return cert_request.holder.cpf, None


def issue(cert_request, csr_data: bytes, *, key_storage: str, actor) -> IssuedCertificate:
    """Check the holder's certificate request and have the CA sign it. The request moves to
    "issued"; the caller commits (a CA that answers "pending" leaves it "approved")."""
    if cert_request.state == "issued":
        raise IssuanceError(_l("Este certificado já foi emitido."))
    if cert_request.state != "approved":
        raise IssuanceError(_l("Esta solicitação não está liberada para emissão."))
    try:
        csr = parse_csr(csr_data)
        cpf, cnpj = expected_numbers(cert_request)
        check_csr(csr, expected_cpf=cpf, expected_cnpj=cnpj)
    except CsrRejected as exc:
        audit.record("certificate.csr_rejected", actor=actor, obj=cert_request,
                     cert_request=cert_request, details={"code": exc.code})
        raise IssuanceError(CSR_MESSAGES.get(exc.code, CSR_MESSAGES["malformed"])) from None
    ca = ca_service.ca_client()
    from cryptography.hazmat.primitives import serialization

    csr_der = csr.public_bytes(serialization.Encoding.DER)
    try:
        submission = ca.submit(csr_der, ca_service.profile_for(cert_request, ca),
                               ca_service.holder_data(cert_request))
    except CertificateAuthorityError as exc:
        current_app.logger.warning("CA refused or failed: %s", exc)
        raise IssuanceError(_l("A autoridade certificadora não respondeu. Tente novamente em "
                               "alguns minutos.")) from None
    if submission.status == "rejected":
        audit.record("certificate.ca_rejected", actor=actor, obj=cert_request,
                     cert_request=cert_request, reason=submission.message)
        raise IssuanceError(_l("A autoridade certificadora recusou a requisição: %(why)s",
                               why=submission.message or "—"))
    if submission.status != "issued":
        audit.record("certificate.pending", actor=actor, obj=cert_request,
                     cert_request=cert_request, details={"reference": submission.reference})
        raise IssuanceError(_l("A autoridade certificadora ainda está processando a "
                               "requisição. Tente novamente em alguns minutos."))
    issued = ca_service.record_certificate(cert_request, submission, ca=ca,
                                           key_storage=key_storage)
    workflow.transition(cert_request, "issued", actor=actor,
                        details={"serial": issued.serial, "ca": issued.ca_label,
                                 "key_storage": key_storage})
    audit.record("certificate.issue", actor=actor, obj=issued, cert_request=cert_request,
                 details={"serial": issued.serial, "not_after": issued.not_after.isoformat(),
                          "fingerprint_sha256": issued.fingerprint_sha256})
    return issued


def current_certificate(cert_request) -> IssuedCertificate | None:
    return cert_request.certificates[-1] if cert_request.certificates else None


# --- revocation -------------------------------------------------------------------------------

def revoke(issued: IssuedCertificate, reason: str, *, actor, by: str, note: str | None = None):
    """Revoke the certificate at the CA, publish a new CRL at once (built-in CA) and mark the
    request "revogado"."""
    if reason not in REVOCATION_REASONS:
        raise IssuanceError(_l("Escolha o motivo da revogação."))
    if issued.revoked_at is not None:
        raise IssuanceError(_l("Este certificado já foi revogado."))
    ca = ca_service.ca_client()
    try:
        ca.revoke(issued.der, ca_service.CA_REASON[reason])
    except CertificateAuthorityError as exc:
        current_app.logger.warning("CA revocation failed: %s", exc)
        raise IssuanceError(_l("A autoridade certificadora não confirmou a revogação. Tente "
                               "novamente em alguns minutos.")) from None
    issued.revoked_at = utcnow()
    issued.revocation_reason = reason
    issued.revoked_by = by[:200]
    cert_request = issued.request
    if cert_request.state == "issued":
        workflow.transition(cert_request, "revoked", actor=actor, reason=note or reason,
                            details={"serial": issued.serial, "reason": reason})
    audit.record("certificate.revoke", actor=actor, obj=issued, cert_request=cert_request,
                 reason=note, details={"serial": issued.serial, "reason": reason})
    if issued.homologation:
        ca_service.publish_crl()
    return issued
