"""All models, imported here so Alembic and the app see every table."""
from .audit import AuditChainHead, AuditEvent
from .documents import DocumentPage, PageRendition, Pendency, RequestDocument, StoredFile
from .jobs import BackgroundJob, EmailMessage
from .office import OfficeClosure, OfficeSettings, Product
from .people import Company, Person
from .requests import AccessLink, CertificateRequest
from .staff import ROLES, StaffUser
from .types import utcnow

__all__ = [
    "AccessLink", "AuditChainHead", "AuditEvent", "BackgroundJob", "CertificateRequest",
    "Company", "DocumentPage", "EmailMessage", "PageRendition", "Pendency", "RequestDocument",
    "StoredFile", "OfficeClosure", "OfficeSettings", "Person", "Product", "ROLES",
    "StaffUser", "utcnow",
]
