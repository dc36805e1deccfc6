"""The built-in certificate authority, for trials ("homologação"): a root and an issuing CA
whose keys live on the app's disk. Nothing it issues is trusted outside the office.

    ca = BuiltinCA.create(directory, passphrase, base_url="https://ar.example.com")  # once
    ca = BuiltinCA.load(directory, passphrase, base_url="https://ar.example.com")
    submission = ca.submit(csr_der, profile, holder)
    crl_der = ca.build_crl([(serial, revoked_at, "key_compromise")], crl_number=7,
                           this_update=now, next_update=now + timedelta(days=1))

On disk (directory 0700, files 0600, each written to a temporary file, fsynced and then linked
under its name, so a file is whole or absent and nothing is ever overwritten):

    root.crt, issuing.crt      PEM certificates
    root.key, issuing.key      PKCS#8 PEM, encrypted with the passphrase (PBES2, AES-256)
    issued/<serial hex>.der    every certificate `submit` signed

Keys are RSA 3072 for both CAs. Signing with a 3072-bit key takes a few milliseconds, far
below the 50 ms per certificate budget, and 2048 bits ends its NIST SP 800-57 life (2030)
before a 5-year issuing CA created today would. The root is valid 10 years (pathlen 1), the
issuing CA 5 years (pathlen 0), with its CRL at `{base_url}/ac/raiz.crl` and the root at
`{base_url}/ac/raiz.crt`; holders' certificates point at `{base_url}/ac/emissora.crl` and
`{base_url}/ac/emissora.crt`. The app serves those four files.

The CA owns its names and URLs: `submit` replaces the profile's issuing CA name, CRL and
caIssuers URLs with its own and marks it homologation. Revocation state belongs to the app's
database: `revoke` only checks that this CA issued the certificate, and `build_crl` signs the
list the app gives it.
"""
import dataclasses
import os
import re
import secrets
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .authority import REVOCATION_REASONS, CertificateAuthorityError, Submission
from .csr import check_csr, parse_csr
from .profiles import (
    OID_PERSON, TAG_OCTET_STRING, PersonData, ProfileSpec, add_months, ascii_fold,
    authority_key_identifier, build_certificate, der_string, distribution_extensions,
    layout_person_data, not_after_for, signature_hash,
)

CA_KEY_BITS = 3072
ROOT_MONTHS = 120
ISSUING_MONTHS = 60
SERVICE_PURPOSES = ("signing", "seal", "timestamping")
_FILES = ("root.key", "issuing.key", "root.crt", "issuing.crt")
_REFERENCE = re.compile(r"[0-9a-f]{1,40}")


class BuiltinCA:
    label = "AC interna (homologação)"
    homologation = True

    def __init__(self, directory: Path, base_url: str, root_cert: x509.Certificate, root_key,
                 issuing_cert: x509.Certificate, issuing_key):
        self.directory = Path(directory)
        self.base_url = _base_url(base_url)
        self.root_cert, self._root_key = root_cert, root_key
        self.issuing_cert, self._issuing_key = issuing_cert, issuing_key
        self.chain_der = [c.public_bytes(serialization.Encoding.DER)
                          for c in (issuing_cert, root_cert)]

    # --- life cycle -----------------------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path, passphrase: bytes, *, name_prefix: str = "VideoAR",
               base_url: str) -> "BuiltinCA":
        """Make a new root and issuing CA in `directory`. Refuses when one is there already."""
        if not passphrase:
            raise ValueError("the CA's keys need a passphrase")
        directory = Path(directory)
        base_url = _base_url(base_url)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if any((directory / name).exists() for name in _FILES):
            raise CertificateAuthorityError(f"a certificate authority already exists in {directory}")
        (directory / "issued").mkdir(mode=0o700, exist_ok=True)

        prefix = ascii_fold(name_prefix)
        now = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
        root_key = rsa.generate_private_key(public_exponent=65537, key_size=CA_KEY_BITS)
        root_name = _ca_name(prefix, f"{prefix} AC Raiz Homologacao")
        root_cert = (_ca_builder(root_name, root_name, root_key.public_key(), now,
                                 add_months(now, ROOT_MONTHS), path_length=1)
                     .add_extension(x509.SubjectKeyIdentifier.from_public_key(
                         root_key.public_key()), critical=False)
                     .sign(root_key, signature_hash(root_key)))

        issuing_key = rsa.generate_private_key(public_exponent=65537, key_size=CA_KEY_BITS)
        issuing_cert = distribution_extensions(
            _ca_builder(_ca_name(prefix, f"{prefix} AC Homologacao"), root_name,
                        issuing_key.public_key(), now,
                        not_after_for(now, ISSUING_MONTHS, root_cert), path_length=0),
            issuer_cert=root_cert, public_key=issuing_key.public_key(),
            crl_url=f"{base_url}/ac/raiz.crl", ca_issuers_url=f"{base_url}/ac/raiz.crt",
        ).sign(root_key, signature_hash(root_key))

        encryption = serialization.BestAvailableEncryption(passphrase)
        files = [(name, key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8, encryption))
                 for name, key in (("root.key", root_key), ("issuing.key", issuing_key))]
        files += [(name, cert.public_bytes(serialization.Encoding.PEM))
                  for name, cert in (("root.crt", root_cert), ("issuing.crt", issuing_cert))]
        try:
            for name, data in files:
                _write_new(directory / name, data)
        except FileExistsError as exc:  # another process created one meanwhile
            raise CertificateAuthorityError(
                f"a certificate authority already exists in {directory}") from exc
        return cls(directory, base_url, root_cert, root_key, issuing_cert, issuing_key)

    @classmethod
    def load(cls, directory: Path, passphrase: bytes, base_url: str) -> "BuiltinCA":
        directory = Path(directory)
        try:
            data = {name: (directory / name).read_bytes() for name in _FILES}
        except FileNotFoundError as exc:
            raise CertificateAuthorityError(f"no certificate authority in {directory}: "
                                            f"{Path(exc.filename).name} is missing") from exc
        certs, keys = {}, {}
        for role in ("root", "issuing"):
            try:
                certs[role] = x509.load_pem_x509_certificate(data[f"{role}.crt"])
            except ValueError as exc:
                raise CertificateAuthorityError(f"{role}.crt cannot be read") from exc
            try:
                keys[role] = serialization.load_pem_private_key(data[f"{role}.key"], passphrase)
            except (ValueError, TypeError) as exc:
                raise CertificateAuthorityError(
                    "the certificate authority's passphrase is wrong (or its key file is "
                    "damaged)") from exc
            if keys[role].public_key() != certs[role].public_key():
                raise CertificateAuthorityError(f"{role}.key does not match {role}.crt")
        (directory / "issued").mkdir(mode=0o700, exist_ok=True)
        return cls(directory, base_url, certs["root"], keys["root"], certs["issuing"],
                   keys["issuing"])

    # --- what holders' certificates point at ----------------------------------------------------

    @property
    def issuing_ca_name(self) -> str:
        return self.issuing_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value

    @property
    def crl_url(self) -> str:
        return f"{self.base_url}/ac/emissora.crl"

    @property
    def ca_issuers_url(self) -> str:
        return f"{self.base_url}/ac/emissora.crt"

    # --- CertificateAuthority -------------------------------------------------------------------

    def submit(self, csr_der: bytes, profile: ProfileSpec, holder) -> Submission:
        """Check the request (csr.CsrRejected when it fails) and issue at once."""
        csr = parse_csr(csr_der)
        if profile.kind == "e_cnpj":
            check_csr(csr, expected_cpf=holder.responsible.cpf, expected_cnpj=holder.cnpj)
        else:
            check_csr(csr, expected_cpf=holder.cpf, expected_cnpj=None)
        profile = dataclasses.replace(profile, issuing_ca_name=self.issuing_ca_name,
                                      crl_url=self.crl_url, ca_issuers_url=self.ca_issuers_url,
                                      homologation=True)
        serial = x509.random_serial_number()
        cert = build_certificate(public_key=csr.public_key(), profile=profile, holder=holder,
                                 issuer_cert=self.issuing_cert, issuer_key=self._issuing_key,
                                 serial=serial, not_before=datetime.now(timezone.utc))
        der = cert.public_bytes(serialization.Encoding.DER)
        reference = format(serial, "x")
        try:
            _write_new(self._issued_path(reference), der)
        except FileExistsError as exc:  # a repeated 159-bit random serial
            raise CertificateAuthorityError("serial number collision, try again") from exc
        return Submission(reference=reference, status="issued", certificate_der=der,
                          chain_der=list(self.chain_der))

    def status(self, reference: str) -> Submission:
        return Submission(reference=reference, status="issued",
                          certificate_der=self.retrieve(reference),
                          chain_der=list(self.chain_der))

    def retrieve(self, reference: str) -> bytes:
        if not _REFERENCE.fullmatch(reference or ""):
            raise CertificateAuthorityError(f"unknown reference {reference!r}")
        try:
            return self._issued_path(reference).read_bytes()
        except FileNotFoundError as exc:
            raise CertificateAuthorityError(f"unknown reference {reference!r}") from exc

    def revoke(self, certificate_der: bytes, reason: str) -> None:
        """Check that this CA issued the certificate; the app records the revocation and puts it
        on the next CRL."""
        if reason not in REVOCATION_REASONS:
            raise ValueError(f"unknown revocation reason {reason!r}")
        try:
            cert = x509.load_der_x509_certificate(certificate_der)
            cert.verify_directly_issued_by(self.issuing_cert)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise CertificateAuthorityError("the certificate was not issued by this "
                                            "certificate authority") from exc

    # --- CRLs -----------------------------------------------------------------------------------

    def build_crl(self, revoked: Iterable[tuple[int, datetime, str]], *, crl_number: int,
                  this_update: datetime, next_update: datetime) -> bytes:
        """The issuing CA's CRL (DER) listing `revoked` (serial, when, reason name)."""
        return _crl(self.issuing_cert, self._issuing_key, revoked, crl_number=crl_number,
                    this_update=this_update, next_update=next_update)

    def root_crl(self, revoked: Iterable[tuple[int, datetime, str]] = (), *, crl_number: int,
                 this_update: datetime, next_update: datetime) -> bytes:
        """The root's CRL (DER): normally empty, since the root only signs the issuing CA."""
        return _crl(self.root_cert, self._root_key, revoked, crl_number=crl_number,
                    this_update=this_update, next_update=next_update)

    # --- the office's own certificates ----------------------------------------------------------

    def issue_service_certificate(self, public_key, *, common_name: str, purpose: str,
                                  organization: str | None = None, cpf: str | None = None,
                                  email: str | None = None, years: int = 2) -> x509.Certificate:
        """A certificate for the office's own use, not a holder's:
        - "signing": a staff member's signature (termo counter-signature), EKU emailProtection +
          clientAuth, with the 2.16.76.1.3.1 otherName when `cpf` is given;
        - "seal": the office's seal on documents;
        - "timestamping": the local time-stamping authority, EKU timeStamping (critical, as
          RFC 3161 requires).
        All: keyUsage digitalSignature + nonRepudiation (critical), CA:FALSE, CRL DP, AIA."""
        if purpose not in SERVICE_PURPOSES:
            raise ValueError(f"unknown purpose {purpose!r}")
        if not 1 <= years <= 5:
            raise ValueError("a service certificate is valid for 1 to 5 years")
        attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "BR")]
        if organization:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, ascii_fold(organization)))
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, ascii_fold(common_name)))
        now = datetime.now(timezone.utc).replace(microsecond=0)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name(attrs))
                   .issuer_name(self.issuing_cert.subject)
                   .public_key(public_key)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now)
                   .not_valid_after(not_after_for(now, 12 * years, self.issuing_cert))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(
                       digital_signature=True, content_commitment=True, key_encipherment=False,
                       data_encipherment=False, key_agreement=False, key_cert_sign=False,
                       crl_sign=False, encipher_only=False, decipher_only=False), critical=True))
        if purpose == "signing":
            builder = builder.add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False)
        elif purpose == "timestamping":
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        names = []
        if cpf and purpose == "signing":
            person = PersonData(name=common_name, cpf=cpf, email=email or "")
            names.append(x509.OtherName(OID_PERSON, der_string(TAG_OCTET_STRING,
                                                               layout_person_data(person))))
        if email:
            names.append(x509.RFC822Name(email))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        builder = distribution_extensions(builder, issuer_cert=self.issuing_cert,
                                          public_key=public_key, crl_url=self.crl_url,
                                          ca_issuers_url=self.ca_issuers_url)
        return builder.sign(self._issuing_key, signature_hash(self._issuing_key))

    def _issued_path(self, reference: str) -> Path:
        return self.directory / "issued" / f"{reference}.der"


def _base_url(url: str) -> str:
    url = (url or "").rstrip("/")
    if not re.match(r"https?://[^/]+", url):
        raise ValueError(f"base_url must be an http(s) URL, not {url!r}")
    return url


def _ca_name(organization: str, common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "BR"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca_builder(subject, issuer, public_key, not_before, not_after, *, path_length):
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True))


def _crl(issuer_cert, issuer_key, revoked, *, crl_number, this_update, next_update) -> bytes:
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(issuer_cert.subject)
               .last_update(this_update)
               .next_update(next_update)
               .add_extension(x509.CRLNumber(crl_number), critical=False)
               .add_extension(authority_key_identifier(issuer_cert), critical=False))
    for serial, revoked_at, reason in revoked:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(revoked_at)
        # RFC 5280 §5.3.1: the reason code "unspecified" is left out rather than written.
        if reason != "unspecified":
            entry = entry.add_extension(x509.CRLReason(REVOCATION_REASONS[reason]),
                                        critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return (builder.sign(issuer_key, signature_hash(issuer_key))
            .public_bytes(serialization.Encoding.DER))


def _write_new(path: Path, data: bytes) -> None:
    """Write `path` (0600) whole or not at all; FileExistsError when it exists."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
