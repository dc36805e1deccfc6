from ..extensions import db
from .types import UTCDateTime, utcnow


class Person(db.Model):
    """A natural person in the office's registry: the data the certificate profile carries."""

    __tablename__ = "person"

    id = db.Column(db.Integer, primary_key=True)
    cpf = db.Column(db.String(11), nullable=False, unique=True)
    name = db.Column(db.String(200), nullable=False)
    birth_date = db.Column(db.Date)
    email = db.Column(db.String(254), nullable=False)
    phone = db.Column(db.String(20), nullable=False)  # E.164
    nis = db.Column(db.String(11))
    rg_number = db.Column(db.String(15))
    rg_issuer = db.Column(db.String(10))
    rg_uf = db.Column(db.String(2))
    voter_id = db.Column(db.String(12))
    voter_zone = db.Column(db.String(3))
    voter_section = db.Column(db.String(4))
    voter_city = db.Column(db.String(120))
    voter_uf = db.Column(db.String(2))
    cei = db.Column(db.String(12))
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = db.Column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)

    requests = db.relationship(
        "CertificateRequest", back_populates="holder", foreign_keys="CertificateRequest.holder_id",
        order_by="CertificateRequest.created_at.desc()",
    )


class Company(db.Model):
    """A company (e-CNPJ holder) and the person responsible for using its certificate."""

    __tablename__ = "company"

    id = db.Column(db.Integer, primary_key=True)
    cnpj = db.Column(db.String(14), nullable=False, unique=True)
    legal_name = db.Column(db.String(200), nullable=False)
    city = db.Column(db.String(120), nullable=False)
    uf = db.Column(db.String(2), nullable=False)
    cei = db.Column(db.String(12))
    responsible_id = db.Column(db.Integer, db.ForeignKey("person.id"), nullable=False)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    responsible = db.relationship("Person")
