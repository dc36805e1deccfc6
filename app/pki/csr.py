"""Checks on a holder's PKCS#10 certificate request.

    csr = parse_csr(data)        # DER or PEM; signature and key checked
    check_csr(csr, expected_cpf=person.cpf, expected_cnpj=None)

Both raise CsrRejected with a `code` the app translates: "malformed", "bad_signature",
"weak_key" (RSA under 2048 bits or with an exponent other than 65537; EC on a curve other than
P-256, P-384 or P-521; any other algorithm), "other_holder". The certificate's subject is built
from the registry, never from the request, so the request's names only matter when they point
at someone else: token software often writes an arbitrary CN, and that is fine, but a valid CPF
or CNPJ in the CN, the serialNumber or the otherNames 2.16.76.1.3.1/.3/.4 that is not the
holder's is refused.
"""
import re

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from stdnum.br import cnpj as stdnum_cnpj
from stdnum.br import cpf as stdnum_cpf

from .profiles import OID_CNPJ, OID_PERSON, OID_RESPONSIBLE, read_der_string

MIN_RSA_BITS = 2048
EC_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_UNREADABLE = (ValueError, TypeError, UnsupportedAlgorithm, x509.DuplicateExtension,
               x509.UnsupportedGeneralNameType)


class CsrRejected(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def parse_csr(data: bytes) -> x509.CertificateSigningRequest:
    """The request in `data` (DER, or PEM "CERTIFICATE REQUEST"), with a valid signature and
    an acceptable key."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(data.strip())
        else:
            csr = x509.load_der_x509_csr(data)
        csr.subject, csr.extensions  # parse them now: later access must not fail
        public_key = csr.public_key()
    except _UNREADABLE as exc:
        raise CsrRejected("malformed", "the certificate request cannot be read") from exc
    try:
        valid = csr.is_signature_valid
    except (UnsupportedAlgorithm, ValueError):  # an algorithm cryptography cannot check
        valid = False
    if not valid:
        raise CsrRejected("bad_signature", "the certificate request's signature is not valid")
    _check_key(public_key)
    return csr


def _check_key(public_key):
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise CsrRejected("weak_key", f"RSA keys must have at least {MIN_RSA_BITS} bits")
        if public_key.public_numbers().e != 65537:
            raise CsrRejected("weak_key", "RSA keys must use the public exponent 65537")
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, EC_CURVES):
            raise CsrRejected("weak_key", "EC keys must be on P-256, P-384 or P-521")
    else:
        raise CsrRejected("weak_key", "the key must be RSA or EC")


def check_csr(csr: x509.CertificateSigningRequest, *, expected_cpf: str | None,
              expected_cnpj: str | None) -> None:
    """Refuse a request whose names carry a CPF or CNPJ other than the expected ones."""
    cpfs, cnpjs = set(), set()
    for value in _name_values(csr.subject):
        for run in re.findall(r"\d+", re.sub(r"(?<=\d)[.\-/ ](?=\d)", "", value)):
            if len(run) == 11 and stdnum_cpf.is_valid(run):
                cpfs.add(run)
            elif len(run) == 14 and stdnum_cnpj.is_valid(run):
                cnpjs.add(run)
    for oid, text in _other_names(csr):
        if oid in (OID_PERSON, OID_RESPONSIBLE) and len(text) >= 19:
            cpf = text[8:19]
            if cpf.strip("0"):
                cpfs.add(cpf)
        elif oid == OID_CNPJ and text.strip("0"):
            cnpjs.add(text)
    if expected_cpf is not None and cpfs - {expected_cpf}:
        raise CsrRejected("other_holder", "the certificate request names another person")
    if expected_cnpj is not None and cnpjs - {expected_cnpj}:
        raise CsrRejected("other_holder", "the certificate request names another company")


def _name_values(name: x509.Name):
    for attribute in name:
        if attribute.oid in (NameOID.COMMON_NAME, NameOID.SERIAL_NUMBER) and \
                isinstance(attribute.value, str):
            yield attribute.value


def _other_names(csr):
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    found = []
    for name in san.get_values_for_type(x509.OtherName):
        if name.type_id in (OID_PERSON, OID_RESPONSIBLE, OID_CNPJ):
            try:
                found.append((name.type_id, read_der_string(name.value)))
            except (ValueError, UnicodeDecodeError) as exc:
                raise CsrRejected("malformed", "the certificate request's names cannot be "
                                               "read") from exc
    return found
