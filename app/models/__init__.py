"""All models, imported here so Alembic and the app see every table."""
from .audit import AuditChainHead, AuditEvent
from .conference import (Conference, ConferenceCapture, ConferenceConnection, ConferenceConsent,
                         RecordingSegment)
from .documents import DocumentPage, PageRendition, Pendency, RequestDocument, StoredFile
from .issuance import (IssuanceAttempt, IssuedCertificate, RevocationList, SecondCheck,
                       SigningCredential, Termo)
from .jobs import BackgroundJob, EmailMessage
from .office import OfficeClosure, OfficeSettings, Product
from .people import Company, Person
from .sms import SmsMessage
from .requests import AccessLink, CertificateRequest
from .staff import ROLES, StaffUser
from .types import utcnow

__all__ = [
    "AccessLink", "AuditChainHead", "AuditEvent", "BackgroundJob", "CertificateRequest",
    "Company", "Conference", "IssuanceAttempt", "IssuedCertificate", "RevocationList",
    "SecondCheck", "SigningCredential", "SmsMessage", "Termo", "ConferenceCapture", "ConferenceConnection",
    "ConferenceConsent", "DocumentPage", "EmailMessage", "PageRendition", "Pendency", "RecordingSegment", "RequestDocument",
    "StoredFile", "OfficeClosure", "OfficeSettings", "Person", "Product", "ROLES",
    "StaffUser", "utcnow",
]
