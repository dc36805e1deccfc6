"""What a registration authority needs from a certificate authority.

    submission = ca.submit(csr_der, profile, holder)   # "issued", or "pending" for a CA
    ...                                                # that answers later
    submission = ca.status(submission.reference)
    certificate_der = ca.retrieve(submission.reference)
    ca.revoke(certificate_der, "key_compromise")

The CA decides; the app keeps the request's state (references, issued certificates,
revocations) in its own database. A CA that cannot be reached or refuses to work raises
CertificateAuthorityError; a request it turns down comes back with status "rejected" and a
message, or, from the built-in CA, as csr.CsrRejected before anything is signed.
"""
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from cryptography import x509

from .profiles import ProfileSpec

SUBMISSION_STATUSES = ("issued", "pending", "rejected")

# Our reason names → RFC 5280 CRLReason.
REVOCATION_REASONS = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key_compromise": x509.ReasonFlags.key_compromise,
    "ca_compromise": x509.ReasonFlags.ca_compromise,
    "affiliation_changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
    "certificate_hold": x509.ReasonFlags.certificate_hold,
    "privilege_withdrawn": x509.ReasonFlags.privilege_withdrawn,
}


@dataclass
class Submission:
    reference: str            # the CA's reference for the request (serial, transaction id)
    status: str               # "issued" | "pending" | "rejected"
    certificate_der: bytes | None = None
    chain_der: list[bytes] = field(default_factory=list)  # issuing CA first, root last
    message: str | None = None


class CertificateAuthorityError(Exception):
    """The CA could not do what was asked: unreachable, misconfigured, wrong passphrase,
    unknown reference, a certificate it did not issue."""


@runtime_checkable
class CertificateAuthority(Protocol):
    label: str            # shown to staff, e.g. "AC interna (homologação)"
    homologation: bool

    def submit(self, csr_der: bytes, profile: ProfileSpec, holder) -> Submission: ...

    def status(self, reference: str) -> Submission: ...

    def retrieve(self, reference: str) -> bytes: ...

    def revoke(self, certificate_der: bytes, reason: str) -> None: ...
