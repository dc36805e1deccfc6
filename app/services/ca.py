"""The registration authority's side of the certificate authority: which CA, the profile of a
request, the keys the office signs with, the revocation lists and the timestamp authority.

The CA is reached through `app.pki.authority.CertificateAuthority`: the built-in CA (trials and
private use, always labelled "homologação") or an external CA over CMP. Private keys the office
holds are PKCS#8 encrypted with KEYS_PASSPHRASE; the holder's key never comes here.
"""
import base64
import hashlib
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select

from ..extensions import db
from ..models import IssuedCertificate, RevocationList, SigningCredential, utcnow
from ..pki.authority import CertificateAuthorityError
from ..pki.profiles import CompanyData, PersonData, ProfileSpec
from . import ServiceError, audit
from .office import get_settings


class CaUnavailable(ServiceError):
    pass


NOT_CONFIGURED = _l("A autoridade certificadora não está configurada. Peça ao administrador "
                    "para criá-la (flask ca init) ou configurar a AC externa.")


def ca_dir(app=None) -> Path:
    config = (app or current_app).config
    return Path(config["CA_DIR"] or Path(config["INSTANCE_DIR"]) / "ca")


def _passphrase(app=None) -> bytes:
    return (app or current_app).config["KEYS_PASSPHRASE"].encode()


def builtin_ca(app=None):
    """The built-in CA, loaded from CA_DIR (None when `flask ca init` never ran)."""
    from ..pki.builtin_ca import BuiltinCA

    app = app or current_app
    directory = ca_dir(app)
    if not directory.exists():
        return None
    return BuiltinCA.load(directory, _passphrase(app), base_url=app.config["PUBLIC_URL"])


def init_builtin_ca(app=None):
    from ..pki.builtin_ca import BuiltinCA

    app = app or current_app
    return BuiltinCA.create(ca_dir(app), _passphrase(app), base_url=app.config["PUBLIC_URL"])


def ca_client(app=None):
    """The CertificateAuthority this office issues through; CaUnavailable when none is set up."""
    app = app or current_app
    config = app.config
    if config["CA_BACKEND"] == "cmp":
        from ..pki.cmp import CmpCA

        if not config["CMP_URL"]:
            raise CaUnavailable(NOT_CONFIGURED)
        trusted = []
        if config["CMP_TRUSTED"]:
            pem = Path(config["CMP_TRUSTED"]).read_bytes()
            trusted = [c.public_bytes(serialization.Encoding.DER)
                       for c in x509.load_pem_x509_certificates(pem)]
        return CmpCA(config["CMP_URL"], recipient=config["CMP_RECIPIENT"],
                     reference=config["CMP_REFERENCE"] or None,
                     secret=config["CMP_SECRET"].encode() or None, trusted_der=trusted)
    try:
        ca = builtin_ca(app)
    except CertificateAuthorityError as exc:
        raise CaUnavailable(_l("A AC interna não pôde ser aberta: %(error)s", error=str(exc)))
    if ca is None:
        raise CaUnavailable(NOT_CONFIGURED)
    return ca


def is_homologation(app=None) -> bool:
    return (app or current_app).config["CA_BACKEND"] != "cmp"


# --- the profile of a request -------------------------------------------------------------

def person_data(person) -> PersonData:
    return PersonData(
        name=person.name, cpf=person.cpf, email=person.email, birth_date=person.birth_date,
        nis=person.nis, rg_number=person.rg_number, rg_issuer=person.rg_issuer,
        rg_uf=person.rg_uf, voter_id=person.voter_id, voter_zone=person.voter_zone,
        voter_section=person.voter_section, voter_city=person.voter_city,
        voter_uf=person.voter_uf, cei=person.cei,
    )


def holder_data(cert_request):
    """What the certificate says about its holder: the person, or the company and its
    responsible person."""
    if cert_request.product.is_company and cert_request.company is not None:
        company = cert_request.company
        return CompanyData(legal_name=company.legal_name, cnpj=company.cnpj, city=company.city,
                           uf=company.uf, email=cert_request.holder.email, cei=company.cei,
                           responsible=person_data(cert_request.holder))
    return person_data(cert_request.holder)


# The policy arcs of DOC-ICP-04 (A1 2.16.76.1.2.1.n, A3 2.16.76.1.2.3.n) with n = 1, for a
# product whose admin has not entered the OID given at the CA's accreditation (homologação).
DEFAULT_POLICY_OIDS = {"A1": "2.16.76.1.2.1.1", "A3": "2.16.76.1.2.3.1"}


def profile_for(cert_request, ca=None) -> ProfileSpec:
    config = current_app.config
    product = cert_request.product
    base = config["PUBLIC_URL"]
    if ca is not None and getattr(ca, "issuing_cert", None) is not None:
        issuing_name = ca.issuing_cert.subject.get_attributes_for_oid(
            x509.NameOID.COMMON_NAME)[0].value
    else:
        issuing_name = config["CA_ISSUING_NAME"] or "AC"
    return ProfileSpec(
        kind=product.kind, cert_type=product.cert_type,
        policy_oid=product.policy_oid or DEFAULT_POLICY_OIDS.get(product.cert_type,
                                                                  "2.16.76.1.2.1.1"),
        validity_months=product.validity_months, issuing_ca_name=issuing_name,
        ar_cnpj=get_settings().cnpj or "0" * 14, identification="videoconferencia",
        crl_url=f"{base}/ac/emissora.crl", ca_issuers_url=f"{base}/ac/emissora.crt",
        cps_url=config["CA_CPS_URL"] or f"{base}/ac/dpc", homologation=is_homologation(),
    )


def record_certificate(cert_request, submission, *, ca, key_storage: str) -> IssuedCertificate:
    cert = x509.load_der_x509_certificate(submission.certificate_der)
    issued = IssuedCertificate(
        request=cert_request, serial=format(cert.serial_number, "x"),
        subject=cert.subject.rfc4514_string()[:500],
        not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
        der=submission.certificate_der,
        chain_der=[base64.b64encode(c).decode() for c in submission.chain_der],
        ca_label=str(ca.label), homologation=bool(ca.homologation), key_storage=key_storage,
    )
    db.session.add(issued)
    db.session.flush()
    return issued


def chain_of(issued: IssuedCertificate) -> list[bytes]:
    return [base64.b64decode(c) for c in issued.chain_der]


# --- revocation lists ---------------------------------------------------------------------

# Our revocation reasons as the CA's (RFC 5280 CRLReason): loss and theft of the medium mean the
# key may be in someone else's hands.
CA_REASON = {"loss": "key_compromise", "theft": "key_compromise",
             "key_compromise": "key_compromise", "superseded": "superseded",
             "cessation_of_operation": "cessation_of_operation", "unspecified": "unspecified"}


def publish_crl(ca=None) -> RevocationList:
    """Sign a new CRL of the built-in CA's issuing CA with every revoked certificate."""
    ca = ca or builtin_ca()
    if ca is None:
        raise CaUnavailable(NOT_CONFIGURED)
    now = utcnow().replace(microsecond=0)
    rows = db.session.execute(
        select(IssuedCertificate.serial, IssuedCertificate.revoked_at,
               IssuedCertificate.revocation_reason)
        .where(IssuedCertificate.revoked_at.is_not(None),
               IssuedCertificate.homologation.is_(True))
    ).all()
    number = (db.session.execute(
        select(func.max(RevocationList.number)).where(RevocationList.issuer == "emissora")
    ).scalar() or 0) + 1
    next_update = now + timedelta(hours=current_app.config["CRL_VALID_HOURS"])
    der = ca.build_crl([(int(s, 16), at, CA_REASON.get(reason, "unspecified"))
                        for s, at, reason in rows], crl_number=number,
                       this_update=now, next_update=next_update)
    crl = RevocationList(issuer="emissora", number=number, this_update=now,
                         next_update=next_update, der=der)
    db.session.add(crl)
    db.session.flush()
    audit.record("crl.publish", obj=crl, details={"number": number, "revoked": len(rows)})
    return crl


def current_crl() -> RevocationList | None:
    return db.session.execute(
        select(RevocationList).where(RevocationList.issuer == "emissora")
        .order_by(RevocationList.number.desc()).limit(1)
    ).scalar_one_or_none()


# --- the office's own signing keys ----------------------------------------------------------

def _encrypt_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(_passphrase()))


def load_key(credential: SigningCredential):
    return serialization.load_pem_private_key(credential.encrypted_key, _passphrase())


def store_credential(purpose: str, key, cert: x509.Certificate, chain_der: list[bytes], *,
                     staff_user=None, actor=None) -> SigningCredential:
    """Keep a certificate and its private key (encrypted) as the active one of its purpose."""
    owner = (SigningCredential.staff_user_id == staff_user.id if staff_user is not None
             else SigningCredential.staff_user_id.is_(None))
    for old in db.session.execute(select(SigningCredential).where(
            SigningCredential.purpose == purpose, SigningCredential.active.is_(True),
            owner)).scalars():
        old.active = False
    credential = SigningCredential(
        purpose=purpose, staff_user=staff_user, subject=cert.subject.rfc4514_string()[:500],
        not_after=cert.not_valid_after_utc,
        certificate_der=cert.public_bytes(serialization.Encoding.DER),
        chain_der=[base64.b64encode(c).decode() for c in chain_der],
        encrypted_key=_encrypt_key(key),
    )
    db.session.add(credential)
    db.session.flush()
    audit.record("credential.store", actor=actor, obj=credential,
                 details={"purpose": purpose, "subject": credential.subject,
                          "sha256": hashlib.sha256(credential.certificate_der).hexdigest()})
    return credential


def active_credential(purpose: str, staff_user=None) -> SigningCredential | None:
    query = select(SigningCredential).where(SigningCredential.purpose == purpose,
                                            SigningCredential.active.is_(True),
                                            SigningCredential.not_after > utcnow())
    if staff_user is not None:
        query = query.where(SigningCredential.staff_user_id == staff_user.id)
    return db.session.execute(query.order_by(SigningCredential.id.desc()).limit(1)).scalar()


def credential_for(purpose: str, staff_user=None, *, actor=None) -> SigningCredential:
    """The active credential of `purpose`; in homologação the built-in CA issues a missing one
    (audited). With an external CA the admin imports them."""
    credential = active_credential(purpose, staff_user)
    if credential is not None:
        return credential
    ca = builtin_ca() if is_homologation() else None
    if ca is None:
        raise CaUnavailable(_l("Falta o certificado de assinatura (%(what)s). O administrador "
                               "deve importá-lo em Administração → Certificados de assinatura.",
                               what=CREDENTIAL_LABELS[purpose]))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    office = get_settings()
    if purpose == "agent":
        cert = ca.issue_service_certificate(
            key.public_key(), common_name=staff_user.name, purpose="signing",
            organization=office.authority_name, email=staff_user.email)
    elif purpose == "seal":
        cert = ca.issue_service_certificate(
            key.public_key(), common_name=f"{office.authority_name} (selo)", purpose="seal",
            organization=office.authority_name)
    else:
        cert = ca.issue_service_certificate(
            key.public_key(), common_name=f"{office.authority_name} (carimbo do tempo)",
            purpose="timestamping", organization=office.authority_name)
    return store_credential(purpose, key, cert, ca.chain_der, staff_user=staff_user, actor=actor)


class CredentialRejected(ServiceError):
    pass


def import_pkcs12(purpose: str, data: bytes, password: str, *, staff_user=None,
                  actor=None) -> SigningCredential:
    """A signing certificate and its key from a PKCS#12 file (the key is re-encrypted with
    KEYS_PASSPHRASE). An agent's credential belongs to that agent."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs12

    if purpose not in SigningCredential.PURPOSES:
        raise CredentialRejected(_l("Escolha para que serve o certificado."))
    if purpose == "agent" and staff_user is None:
        raise CredentialRejected(_l("Escolha o agente dono do certificado."))
    try:
        key, cert, chain = pkcs12.load_key_and_certificates(data, (password or "").encode())
    except (ValueError, TypeError):
        raise CredentialRejected(_l("Senha errada ou arquivo que não é PKCS#12 (.p12, .pfx)."))
    if key is None or cert is None:
        raise CredentialRejected(_l("O arquivo deve conter o certificado e a sua chave privada."))
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise CredentialRejected(_l("A chave deve ser RSA ou de curva elíptica."))
    if cert.not_valid_after_utc <= utcnow():
        raise CredentialRejected(_l("Este certificado já expirou."))
    return store_credential(purpose, key, cert,
                            [c.public_bytes(serialization.Encoding.DER) for c in chain or []],
                            staff_user=staff_user if purpose == "agent" else None, actor=actor)


def issue_homologation_credential(purpose: str, *, staff_user=None, actor=None):
    """A new credential from the built-in CA (homologação only), replacing the active one."""
    if not is_homologation() or builtin_ca() is None:
        raise CredentialRejected(_l("Só a AC interna (homologação) emite certificados de "
                                    "assinatura aqui; com uma AC externa, importe-os."))
    owner = staff_user if purpose == "agent" else None
    if purpose == "agent" and owner is None:
        raise CredentialRejected(_l("Escolha o agente dono do certificado."))
    current = active_credential(purpose, owner)
    if current is not None:
        current.active = False
        db.session.flush()
    return credential_for(purpose, owner, actor=actor)


CREDENTIAL_LABELS = {
    "agent": _l("agente"),
    "seal": _l("selo do escritório"),
    "tsa": _l("carimbo do tempo"),
}


def credential_parts(credential: SigningCredential):
    """(key, certificate, chain certificates) ready for signing."""
    cert = x509.load_der_x509_certificate(credential.certificate_der)
    chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in credential.chain_der]
    return load_key(credential), cert, chain


def trust_roots_der() -> list[bytes]:
    """The roots termos are validated against: the built-in root (homologação) and the CMP
    CA's certificates."""
    roots = []
    ca = builtin_ca() if is_homologation() else None
    if ca is not None:
        roots.append(ca.root_cert.public_bytes(serialization.Encoding.DER))
    config = current_app.config
    if config["CMP_TRUSTED"] and Path(config["CMP_TRUSTED"]).exists():
        roots += [c.public_bytes(serialization.Encoding.DER) for c in
                  x509.load_pem_x509_certificates(Path(config["CMP_TRUSTED"]).read_bytes())]
    return roots
