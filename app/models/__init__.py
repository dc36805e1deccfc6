"""All models, imported here so Alembic and the app see every table."""
from .audit import AuditChainHead, AuditEvent
from .jobs import BackgroundJob, EmailMessage
from .office import OfficeClosure, OfficeSettings, Product
from .people import Company, Person
from .requests import AccessLink, CertificateRequest
from .staff import ROLES, StaffUser
from .types import utcnow

__all__ = [
    "AccessLink", "AuditChainHead", "AuditEvent", "BackgroundJob", "CertificateRequest",
    "Company", "EmailMessage", "OfficeClosure", "OfficeSettings", "Person", "Product", "ROLES",
    "StaffUser", "utcnow",
]
