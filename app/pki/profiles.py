"""Certificate profiles: e-CPF and e-CNPJ (ICP-Brasil DOC-ICP-04 v8.1, §7.1) and e-Notariado.

    spec = ProfileSpec(kind="e_cpf", cert_type="A1", policy_oid="2.16.76.1.2.1.99", ...)
    cert = build_certificate(public_key=key, profile=spec, holder=person_data,
                             issuer_cert=ca_cert, issuer_key=ca_key, serial=n, not_before=now)

Subject (no accents or cedilla: NFKD, combining marks dropped; the holder's data upper case,
the issuing CA's name and the identification type as given):
- e-CPF:       C=BR, O=ICP-Brasil, OU=<issuing CA>, OU=<AR CNPJ>, OU=videoconferencia,
               CN=NOME:CPF
- e-CNPJ:      C=BR, O=ICP-Brasil, ST=<UF>, L=<MUNICIPIO>, OU=…, OU=…, OU=…, CN=RAZAO SOCIAL:CNPJ
- e-Notariado: as e-CPF with O=e-Notariado (not an ICP-Brasil certificate; Provimento CNJ
               100/2020).
The name part of the CN is cut so that the CN fits X.520's 64 characters.

subjectAltName otherNames, in this order, then the holder's email as rfc822Name:
- e-CPF: 2.16.76.1.3.1 person, 2.16.76.1.3.6 CEI, 2.16.76.1.3.5 voter id;
- e-CNPJ: 2.16.76.1.3.4 responsible person, 2.16.76.1.3.2 responsible's name,
  2.16.76.1.3.3 CNPJ, 2.16.76.1.3.7 CEI of the company;
- e-Notariado: 2.16.76.1.3.1.
Layouts: digits and A–Z only; absent numbers are zeros, numbers are zero-padded on the left to
their width. The RG issuer + UF (up to 10) and the voter's município + UF (up to 22) are variable
and, as DOC-ICP-04 says, left out when there is no RG or no voter id.

ASN.1 of the otherName values (`OtherName.value` is the DER of what goes inside the
`[0] EXPLICIT`; cryptography adds the `[0]`): OCTET STRING holding the ASCII layout for the
numeric and structured fields (.1, .3, .4, .5, .6, .7), PrintableString for the responsible's
name (.2), which keeps single spaces between words. These are the two types DOC-ICP-04 allows
and what most ICP-Brasil CAs emit.

Extensions: basicConstraints CA:FALSE (critical); keyUsage (critical) digitalSignature,
nonRepudiation and, for RSA keys, keyEncipherment (an EC key cannot encipher keys); extended key
usage clientAuth + emailProtection; certificatePolicies with the policy OID and the CPS URL;
CRL distribution point; AIA caIssuers; authority and subject key identifiers.

Homologation: `ProfileSpec.homologation` changes nothing in the certificate. The only mark of a
trial certificate is its issuer: the issuing CA's name (the first OU) says "Homologacao", and
the chain ends in a root no one trusts. No field of the holder is altered or faked.
"""
import calendar
import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KINDS = ("e_cpf", "e_cnpj", "e_notariado")
# Longest validity ICP-Brasil allows per certificate type, in months.
MAX_VALIDITY_MONTHS = {"A1": 12, "A3": 60}
CN_MAX = 64

OID_PERSON = x509.ObjectIdentifier("2.16.76.1.3.1")
OID_RESPONSIBLE_NAME = x509.ObjectIdentifier("2.16.76.1.3.2")
OID_CNPJ = x509.ObjectIdentifier("2.16.76.1.3.3")
OID_RESPONSIBLE = x509.ObjectIdentifier("2.16.76.1.3.4")
OID_VOTER = x509.ObjectIdentifier("2.16.76.1.3.5")
OID_PERSON_CEI = x509.ObjectIdentifier("2.16.76.1.3.6")
OID_COMPANY_CEI = x509.ObjectIdentifier("2.16.76.1.3.7")

TAG_OCTET_STRING = 0x04
TAG_PRINTABLE_STRING = 0x13
_STRING_TAGS = {0x04, 0x0C, 0x13, 0x16}  # OCTET, UTF8, Printable, IA5 String


@dataclass(frozen=True)
class PersonData:
    name: str
    cpf: str
    email: str
    birth_date: date | None = None
    nis: str | None = None
    rg_number: str | None = None
    rg_issuer: str | None = None
    rg_uf: str | None = None
    voter_id: str | None = None
    voter_zone: str | None = None
    voter_section: str | None = None
    voter_city: str | None = None
    voter_uf: str | None = None
    cei: str | None = None

    def __post_init__(self):
        if not re.fullmatch(r"\d{11}", self.cpf or ""):
            raise ValueError("cpf must be 11 digits")


@dataclass(frozen=True)
class CompanyData:
    legal_name: str
    cnpj: str
    city: str
    uf: str
    email: str
    cei: str | None
    responsible: PersonData

    def __post_init__(self):
        if not re.fullmatch(r"\d{14}", self.cnpj or ""):
            raise ValueError("cnpj must be 14 digits")


@dataclass(frozen=True)
class ProfileSpec:
    kind: str
    cert_type: str
    policy_oid: str
    validity_months: int
    issuing_ca_name: str
    ar_cnpj: str
    identification: str
    crl_url: str
    ca_issuers_url: str
    cps_url: str
    homologation: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown certificate kind {self.kind!r}")
        if self.cert_type not in MAX_VALIDITY_MONTHS:
            raise ValueError(f"no maximum validity known for certificate type {self.cert_type!r}")
        limit = MAX_VALIDITY_MONTHS[self.cert_type]
        if not 1 <= self.validity_months <= limit:
            raise ValueError(f"a {self.cert_type} certificate is valid for 1 to {limit} months, "
                             f"not {self.validity_months}")
        if not re.fullmatch(r"\d{14}", self.ar_cnpj or ""):
            raise ValueError("ar_cnpj must be 14 digits")
        x509.ObjectIdentifier(self.policy_oid)  # raises ValueError when malformed

    @property
    def policy(self) -> x509.ObjectIdentifier:
        return x509.ObjectIdentifier(self.policy_oid)


# --- text ---------------------------------------------------------------------------------------

def ascii_fold(text: str) -> str:
    """`text` without accents or cedilla ("Conceição" → "Conceicao"), non-ASCII dropped,
    whitespace collapsed."""
    folded = unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode("ascii")
    return " ".join(folded.split())


def _alnum(text: str | None) -> str:
    """Upper-case digits and A–Z of `text`, everything else dropped."""
    return re.sub(r"[^A-Z0-9]", "", ascii_fold(text or "").upper())


def _number(value: str | None, width: int, label: str) -> str:
    """A number field: zero-padded on the left to `width`, all zeros when absent."""
    cleaned = _alnum(value)
    if len(cleaned) > width:
        raise ValueError(f"{label} has more than {width} characters: {cleaned!r}")
    return cleaned.rjust(width, "0")


# --- otherName layouts --------------------------------------------------------------------------

def layout_person_data(person: PersonData) -> str:
    """The 2.16.76.1.3.1 / 2.16.76.1.3.4 layout: birth date ddmmaaaa (8) + CPF (11) + NIS (11)
    + RG (15) + RG issuer and UF (up to 10, only with an RG)."""
    birth = person.birth_date.strftime("%d%m%Y") if person.birth_date else "0" * 8
    text = (birth + _number(person.cpf, 11, "CPF") + _number(person.nis, 11, "NIS")
            + _number(person.rg_number, 15, "RG"))
    if _alnum(person.rg_number):
        uf = _alnum(person.rg_uf)[:2]
        text += _alnum(person.rg_issuer)[:10 - len(uf)] + uf
    return text


def layout_cei(cei: str | None) -> str:
    """The 2.16.76.1.3.6 / 2.16.76.1.3.7 layout: CEI (12)."""
    return _number(cei, 12, "CEI")


def layout_voter(person: PersonData) -> str:
    """The 2.16.76.1.3.5 layout: título de eleitor (12) + zona (3) + seção (4) + município and
    UF (up to 22, only with a título)."""
    text = (_number(person.voter_id, 12, "voter id") + _number(person.voter_zone, 3, "voter zone")
            + _number(person.voter_section, 4, "voter section"))
    if _alnum(person.voter_id):
        uf = _alnum(person.voter_uf)[:2]
        text += _alnum(person.voter_city)[:22 - len(uf)] + uf
    return text


def layout_name(name: str) -> str:
    """The 2.16.76.1.3.2 layout: the name in upper case, A–Z, digits and single spaces."""
    return " ".join(re.sub(r"[^A-Z0-9 ]", "", ascii_fold(name).upper()).split())


def layout_cnpj(cnpj: str) -> str:
    """The 2.16.76.1.3.3 layout: CNPJ (14)."""
    return _number(cnpj, 14, "CNPJ")


# --- DER of the otherName values ----------------------------------------------------------------

def der_string(tag: int, text: str) -> bytes:
    """The DER TLV of a short string type (OCTET STRING, PrintableString) holding ASCII `text`."""
    content = text.encode("ascii")
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(octets)]) + octets
    return bytes([tag]) + length + content


def read_der_string(der: bytes) -> str:
    """The text of an otherName value encoded as OCTET/UTF8/Printable/IA5 String. Raises
    ValueError for anything else."""
    if len(der) < 2 or der[0] not in _STRING_TAGS:
        raise ValueError("not a string")
    n, offset = der[1], 2
    if n & 0x80:
        size = n & 0x7F
        if size == 0 or size > 4 or len(der) < 2 + size:
            raise ValueError("bad length")
        n, offset = int.from_bytes(der[2:2 + size], "big"), 2 + size
    if len(der) != offset + n:
        raise ValueError("bad length")
    return der[offset:].decode("utf-8" if der[0] == 0x0C else "ascii")


def _octets(oid: x509.ObjectIdentifier, text: str) -> x509.OtherName:
    return x509.OtherName(oid, der_string(TAG_OCTET_STRING, text))


def other_names_for(profile: ProfileSpec, holder) -> list[x509.OtherName]:
    _check_holder(profile, holder)
    if profile.kind == "e_cpf":
        return [_octets(OID_PERSON, layout_person_data(holder)),
                _octets(OID_PERSON_CEI, layout_cei(holder.cei)),
                _octets(OID_VOTER, layout_voter(holder))]
    if profile.kind == "e_cnpj":
        responsible = holder.responsible
        return [_octets(OID_RESPONSIBLE, layout_person_data(responsible)),
                x509.OtherName(OID_RESPONSIBLE_NAME,
                               der_string(TAG_PRINTABLE_STRING, layout_name(responsible.name))),
                _octets(OID_CNPJ, layout_cnpj(holder.cnpj)),
                _octets(OID_COMPANY_CEI, layout_cei(holder.cei))]
    return [_octets(OID_PERSON, layout_person_data(holder))]


# --- subject ------------------------------------------------------------------------------------

def _common_name(name: str, number: str) -> str:
    suffix = ":" + number
    return ascii_fold(name).upper()[:CN_MAX - len(suffix)].rstrip() + suffix


def subject_for(profile: ProfileSpec, holder) -> x509.Name:
    _check_holder(profile, holder)
    attr = x509.NameAttribute
    rdns = [attr(NameOID.COUNTRY_NAME, "BR"),
            attr(NameOID.ORGANIZATION_NAME,
                 "e-Notariado" if profile.kind == "e_notariado" else "ICP-Brasil")]
    if profile.kind == "e_cnpj":
        rdns += [attr(NameOID.STATE_OR_PROVINCE_NAME, ascii_fold(holder.uf).upper()),
                 attr(NameOID.LOCALITY_NAME, ascii_fold(holder.city).upper())]
    rdns += [attr(NameOID.ORGANIZATIONAL_UNIT_NAME, ascii_fold(profile.issuing_ca_name)),
             attr(NameOID.ORGANIZATIONAL_UNIT_NAME, profile.ar_cnpj),
             attr(NameOID.ORGANIZATIONAL_UNIT_NAME, ascii_fold(profile.identification))]
    if profile.kind == "e_cnpj":
        rdns.append(attr(NameOID.COMMON_NAME, _common_name(holder.legal_name, holder.cnpj)))
    else:
        rdns.append(attr(NameOID.COMMON_NAME, _common_name(holder.name, holder.cpf)))
    return x509.Name(rdns)


def _check_holder(profile: ProfileSpec, holder):
    expected = CompanyData if profile.kind == "e_cnpj" else PersonData
    if not isinstance(holder, expected):
        raise TypeError(f"a {profile.kind} certificate needs a {expected.__name__} holder")


# --- the certificate ----------------------------------------------------------------------------

def add_months(moment: datetime, months: int) -> datetime:
    """`moment` plus calendar months, the day clamped to the month's end (31 Jan + 1 → 28/29
    Feb)."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def signature_hash(issuer_key):
    """SHA-256 for RSA and P-256 issuers, SHA-384/512 for larger curves; None for EdDSA."""
    if isinstance(issuer_key, ec.EllipticCurvePrivateKey):
        return {256: hashes.SHA256(), 384: hashes.SHA384()}.get(issuer_key.curve.key_size,
                                                               hashes.SHA512())
    if isinstance(issuer_key, rsa.RSAPrivateKey):
        return hashes.SHA256()
    return None


def leaf_key_usage(public_key) -> x509.KeyUsage:
    """digitalSignature + nonRepudiation, and keyEncipherment for an RSA key."""
    return x509.KeyUsage(
        digital_signature=True, content_commitment=True,
        key_encipherment=isinstance(public_key, rsa.RSAPublicKey), data_encipherment=False,
        key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False)


def distribution_extensions(builder: x509.CertificateBuilder, *, issuer_cert: x509.Certificate,
                            public_key, crl_url: str, ca_issuers_url: str):
    """Add what every certificate below a CA carries: key identifiers, CRL DP and AIA."""
    return (builder
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(authority_key_identifier(issuer_cert), critical=False)
            .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(crl_url)], relative_name=None,
                reasons=None, crl_issuer=None)]), critical=False)
            .add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
                x509.AuthorityInformationAccessOID.CA_ISSUERS,
                x509.UniformResourceIdentifier(ca_issuers_url))]), critical=False))


def authority_key_identifier(issuer_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def not_after_for(not_before: datetime, months: int, issuer_cert: x509.Certificate) -> datetime:
    """The end of a validity of `months`, never past the issuer's own end."""
    return min(add_months(not_before, months), issuer_cert.not_valid_after_utc)


def build_certificate(*, public_key, profile: ProfileSpec, holder, issuer_cert: x509.Certificate,
                      issuer_key, serial: int, not_before: datetime) -> x509.Certificate:
    """Sign the holder's certificate. `not_before` naive means UTC. The validity is
    `profile.validity_months` (checked against the type's maximum by ProfileSpec), cut at the
    issuing CA's own end of validity."""
    if not_before.tzinfo is None:
        not_before = not_before.replace(tzinfo=timezone.utc)
    not_before = not_before.astimezone(timezone.utc).replace(microsecond=0)
    san = x509.SubjectAlternativeName([*other_names_for(profile, holder),
                                       x509.RFC822Name(holder.email)])
    builder = (x509.CertificateBuilder()
               .subject_name(subject_for(profile, holder))
               .issuer_name(issuer_cert.subject)
               .public_key(public_key)
               .serial_number(serial)
               .not_valid_before(not_before)
               .not_valid_after(not_after_for(not_before, profile.validity_months, issuer_cert))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(leaf_key_usage(public_key), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                                     ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                              critical=False)
               .add_extension(x509.CertificatePolicies([x509.PolicyInformation(
                   profile.policy, [profile.cps_url])]), critical=False)
               .add_extension(san, critical=False))
    builder = distribution_extensions(builder, issuer_cert=issuer_cert, public_key=public_key,
                                      crl_url=profile.crl_url,
                                      ca_issuers_url=profile.ca_issuers_url)
    return builder.sign(issuer_key, signature_hash(issuer_key))
