"""The office's own data: settings, closures and products, every change audited."""
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from ..extensions import db
from ..models import OfficeClosure, Product
from . import ServiceError, audit
from .office import get_settings

SETTINGS_FIELDS = ("authority_name", "cnpj", "phone", "email", "address", "city", "uf",
                   "time_zone", "reminder_after_days", "expire_after_days",
                   "privacy_contact_name", "privacy_contact_email")
PRODUCT_FIELDS = ("code", "name", "kind", "cert_type", "policy_oid", "validity_months",
                  "key_storage", "needs_documents", "needs_second_check", "active")

DEFAULT_PRODUCTS = [
    dict(code="ecpf-a1", name="Certificado Digital e-CPF A1", kind="e_cpf", cert_type="A1",
         validity_months=12, key_storage="software"),
    dict(code="ecpf-a3", name="Certificado Digital e-CPF A3", kind="e_cpf", cert_type="A3",
         validity_months=36, key_storage="token"),
    dict(code="ecnpj-a1", name="Certificado Digital e-CNPJ A1", kind="e_cnpj", cert_type="A1",
         validity_months=12, key_storage="software"),
    dict(code="ecnpj-a3", name="Certificado Digital e-CNPJ A3", kind="e_cnpj", cert_type="A3",
         validity_months=36, key_storage="token"),
    dict(code="enotariado", name="Certificado Digital e-Notariado", kind="e_notariado",
         cert_type="A1", validity_months=12, key_storage="software", needs_documents=False,
         needs_second_check=False),
]


class AdminError(ServiceError):
    pass


def update_settings(**data):
    settings = get_settings()
    changed = sorted(k for k in SETTINGS_FIELDS if k in data and getattr(settings, k) != data[k])
    for key in changed:
        setattr(settings, key, data[key])
    if changed:
        audit.record("office.update", obj=settings, details={"fields": changed})
    return changed


def add_closure(day, description):
    if db.session.execute(select(OfficeClosure).where(OfficeClosure.day == day)).scalar():
        raise AdminError(_l("Esta data já está cadastrada."))
    closure = OfficeClosure(day=day, description=description.strip())
    db.session.add(closure)
    db.session.flush()
    audit.record("office.closure_add", obj=closure, details={"day": day.isoformat()})
    return closure


def remove_closure(closure):
    audit.record("office.closure_remove", obj=closure, details={"day": closure.day.isoformat()})
    db.session.delete(closure)


def save_product(product: Product | None, **data) -> Product:
    clash = db.session.execute(select(Product).where(Product.code == data["code"])).scalar()
    if clash is not None and clash is not product:
        raise AdminError(_l("Já existe um produto com este código."))
    creating = product is None
    if creating:
        product = Product()
        db.session.add(product)
    changed = sorted(k for k in PRODUCT_FIELDS if getattr(product, k) != data[k])
    for key in PRODUCT_FIELDS:
        setattr(product, key, data[key])
    db.session.flush()
    if creating or changed:
        audit.record("product.create" if creating else "product.update", obj=product,
                     details={"fields": changed})
    return product


def ensure_default_products():
    """Create the standard products on an empty database (the admin edits them later)."""
    if db.session.execute(select(Product.id).limit(1)).first():
        return 0
    for data in DEFAULT_PRODUCTS:
        product = Product(**{"needs_documents": True, "needs_second_check": True, "active": True,
                             **data})
        db.session.add(product)
        db.session.flush()
        audit.record("product.create", obj=product, details={"default": True})
    return len(DEFAULT_PRODUCTS)
