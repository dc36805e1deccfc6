"""Opening certificate requests and telling the client."""
import secrets

from flask_babel import force_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import case, select
from stdnum import luhn

from ..extensions import db
from ..models import CertificateRequest, Product, utcnow
from . import ServiceError, audit, email, links, people, workflow


class RequestError(ServiceError):
    pass


def new_protocol() -> str:
    """A 10-digit protocol: 9 random digits (first non-zero) and a Luhn check digit, so a
    typo is caught and one protocol says nothing about another."""
    while True:
        body = str(secrets.randbelow(9 * 10**8) + 10**8)
        protocol = body + luhn.calc_check_digit(body)
        exists = db.session.execute(
            select(CertificateRequest.id).where(CertificateRequest.protocol == protocol)
        ).first()
        if not exists:
            return protocol


def is_valid_protocol(value: str) -> bool:
    return bool(value) and len(value) == 10 and value.isdigit() and luhn.is_valid(value)


def open_request(*, product, holder, company=None, origin: str, created_by=None,
                 actor=None) -> CertificateRequest:
    """Create a request for `holder` and, for products with documents, send the client the
    "Importe seus documentos" email. Returns the request in `documents_pending` (or
    `requested` for products without documents, such as e-Notariado)."""
    if not product.active:
        raise RequestError(_l("Este produto não está disponível."))
    if product.is_company and company is None:
        raise RequestError(_l("Um certificado e-CNPJ precisa dos dados da empresa."))
    open_same = _open_request_for(holder, product, company)
    if open_same is not None:
        raise RequestError(_l("Já existe uma solicitação em andamento deste produto para esta "
                              "pessoa (protocolo %(protocol)s).", protocol=open_same.protocol))
    now = utcnow()
    cert_request = CertificateRequest(
        protocol=new_protocol(), product=product, holder=holder, company=company,
        state="requested", origin=origin, created_by=created_by,
        assigned_agent=created_by if created_by is not None and created_by.is_agent else None,
        created_at=now, state_changed_at=now,
    )
    db.session.add(cert_request)
    db.session.flush()
    audit.record("request.create", actor=actor, obj=cert_request, cert_request=cert_request,
                 to_state="requested", details={"product": product.code, "origin": origin})
    if product.needs_documents:
        link = links.create_link(cert_request, "documents", actor=actor)
        workflow.transition(cert_request, "documents_pending", actor=actor)
        send_documents_invitation(cert_request, link)
    return cert_request


def public_products():
    """Products a client may ask for on the public site, e-CPF first: active ones with
    document upload (e-Notariado starts from the office's registry, by an agent)."""
    return db.session.execute(
        select(Product).where(Product.active.is_(True), Product.needs_documents.is_(True))
        .order_by(case((Product.kind == "e_cpf", 0), else_=1), Product.name)
    ).scalars().all()


def open_public_request(*, product, cpf: str, name: str, email: str, phone: str,
                        company_data: dict | None = None) -> tuple[CertificateRequest, bool]:
    """A request the client made on the public site; returns it and whether the CPF was
    already in the registry.

    A CPF already registered keeps its data: nothing typed on the public form overwrites it,
    and the invitation goes to the email on record. A new CPF becomes a person with only
    name, email and phone. For e-CNPJ, `company_data` (cnpj, legal_name, city, uf) finds or
    registers the company with this person responsible. Raises RequestError for a product
    not offered to clients, an e-CNPJ without company data, or a request of the same
    product already open for this CPF (without telling its protocol to whoever typed the
    CPF). Writes in the caller's transaction: roll back on error.
    """
    if product not in public_products():
        raise RequestError(_l("Este produto não está disponível."))
    if product.is_company and not company_data:
        raise RequestError(_l("Um certificado e-CNPJ precisa dos dados da empresa."))
    person = people.find_person_by_cpf(cpf)
    on_record = person is not None
    if person is None:
        person = people.register_person(cpf, name=name, email=email, phone=phone)
    company = None
    if product.is_company:
        company = people.find_or_register_company(
            company_data["cnpj"], company_data["legal_name"], company_data["city"],
            company_data["uf"], person)
    if on_record and _open_request_for(person, product, company) is not None:
        raise RequestError(_l("Já existe uma solicitação em andamento deste certificado para "
                              "este CPF. Confira o e-mail que enviamos ou fale com a "
                              "Autoridade de Registro."))
    actor = audit.Actor("client", person.id, "cliente (site público)")
    cert_request = open_request(product=product, holder=person, company=company,
                                origin="public", actor=actor)
    return cert_request, on_record


def _open_request_for(holder, product, company):
    return db.session.execute(
        select(CertificateRequest).where(
            CertificateRequest.holder_id == holder.id,
            CertificateRequest.product_id == product.id,
            CertificateRequest.company_id == (company.id if company else None),
            CertificateRequest.state.in_(workflow.OPEN_STATES),
        )
    ).scalars().first()


def mask_email(address: str) -> str:
    """m***@cliente.example: enough for the owner to recognise, little for anyone else."""
    local, at, domain = address.partition("@")
    return f"{local[:1]}***{at}{domain}"


def send_documents_invitation(cert_request, link):
    with force_locale("pt_BR"):
        email.queue_email(
            "documents_invitation", cert_request.holder.email,
            _("Importe seus documentos — protocolo %(protocol)s", protocol=cert_request.protocol),
            "documents_invitation", cert_request=cert_request, link_url=links.url_for_link(link),
            link=link,
        )


def renew_documents_link(cert_request, actor=None):
    """Revoke the current document link, make a new one and email it again."""
    if cert_request.state not in workflow.AWAITING_CLIENT:
        raise RequestError(_l("Esta solicitação não está aguardando documentos do cliente."))
    link = links.create_link(cert_request, "documents", actor=actor)
    send_documents_invitation(cert_request, link)
    return link


def cancel_request(cert_request, reason: str, actor=None):
    if not reason or not reason.strip():
        raise RequestError(_l("Informe o motivo do cancelamento."))
    workflow.transition(cert_request, "cancelled", actor=actor, reason=reason.strip())
    from . import scheduling

    scheduling.retire_live_rooms(cert_request, actor, reason.strip())
    for link in cert_request.links:
        if link.revoked_at is None:
            link.revoked_at = utcnow()
