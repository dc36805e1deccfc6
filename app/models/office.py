from ..extensions import db
from .types import UTCDateTime, utcnow


class OfficeSettings(db.Model):
    """The office's own data, shown to clients in emails and in the call. One row."""

    __tablename__ = "office_settings"

    id = db.Column(db.Integer, primary_key=True)
    authority_name = db.Column(db.String(200), nullable=False, default="Autoridade de Registro")
    cnpj = db.Column(db.String(14))
    phone = db.Column(db.String(20))
    email = db.Column(db.String(254))
    address = db.Column(db.String(400))
    city = db.Column(db.String(120))
    uf = db.Column(db.String(2), nullable=False, default="SP")
    time_zone = db.Column(db.String(64), nullable=False, default="America/Sao_Paulo")
    # Days without client action before a reminder, and before the request expires.
    reminder_after_days = db.Column(db.Integer, nullable=False, default=5)
    expire_after_days = db.Column(db.Integer, nullable=False, default=30)
    review_promise_business_days = db.Column(db.Integer, nullable=False, default=2)
    # LGPD: the data protection officer (encarregado) named in the privacy notice.
    privacy_contact_name = db.Column(db.String(200))
    privacy_contact_email = db.Column(db.String(254))
    updated_at = db.Column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)


class OfficeClosure(db.Model):
    """A day the office is closed beyond national and state holidays."""

    __tablename__ = "office_closure"

    id = db.Column(db.Integer, primary_key=True)
    day = db.Column(db.Date, nullable=False, unique=True)
    description = db.Column(db.String(200), nullable=False)


class Product(db.Model):
    """A certificate product. Types, policy OIDs and validity are data the admin edits."""

    __tablename__ = "product"

    KINDS = ("e_cpf", "e_cnpj", "e_notariado")
    KEY_STORAGES = ("software", "token")

    id = db.Column(db.Integer, primary_key=True)
    code = db.Column(db.String(40), nullable=False, unique=True)
    name = db.Column(db.String(200), nullable=False)
    kind = db.Column(db.String(20), nullable=False)
    cert_type = db.Column(db.String(10), nullable=False)
    policy_oid = db.Column(db.String(100))
    validity_months = db.Column(db.Integer, nullable=False)
    key_storage = db.Column(db.String(20), nullable=False)
    needs_documents = db.Column(db.Boolean, nullable=False, default=True)
    needs_second_check = db.Column(db.Boolean, nullable=False, default=True)
    active = db.Column(db.Boolean, nullable=False, default=True)

    @property
    def is_company(self):
        return self.kind == "e_cnpj"
