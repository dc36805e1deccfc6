"""The built-in CA: files, chain, issuance, CRLs, service certificates, and OpenSSL's view."""
import re
import stat
import subprocess
from datetime import date, datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from app.pki.authority import CertificateAuthority, CertificateAuthorityError
from app.pki.builtin_ca import BuiltinCA
from app.pki.csr import CsrRejected
from app.pki.profiles import CompanyData, PersonData, ProfileSpec

PASSPHRASE = b"correct horse battery staple"
BASE_URL = "https://ar.example.com/"
PERSON = PersonData(
    name="José Conceição", cpf="52998224725", email="jose@example.com",
    birth_date=date(1980, 1, 31), nis="12345678901", rg_number="123456789", rg_issuer="SSP",
    rg_uf="SP", voter_id="123456789012", voter_zone="45", voter_section="678",
    voter_city="São Paulo", voter_uf="SP", cei="123456789012",
)
COMPANY = CompanyData(legal_name="Padaria Pão de Açúcar Ltda", cnpj="11222333000181",
                      city="São Paulo", uf="SP", email="contato@padaria.example", cei=None,
                      responsible=PERSON)
CA_FILES = ("root.key", "issuing.key", "root.crt", "issuing.crt")


def spec(kind="e_cpf", **changes):
    values = dict(kind=kind, cert_type="A1", policy_oid="2.16.76.1.2.1.99", validity_months=12,
                  issuing_ca_name="(the CA replaces this)", ar_cnpj="11444777000161",
                  identification="videoconferencia", crl_url="https://wrong.example/x.crl",
                  ca_issuers_url="https://wrong.example/x.crt", cps_url="https://ar.example.com/dpc")
    values.update(changes)
    return ProfileSpec(**values)


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki") / "ca"
    BuiltinCA.create(directory, PASSPHRASE, base_url=BASE_URL)
    return directory


@pytest.fixture(scope="module")
def ca(ca_dir):
    return BuiltinCA.load(ca_dir, PASSPHRASE, BASE_URL)


@pytest.fixture(scope="module")
def holder_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def csr_der(key, cn="token"):
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))


def pem_file(path, der):
    path.write_bytes(x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM))
    return str(path)


def openssl(*args):
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True,
                          timeout=30)


# --- creation and loading -----------------------------------------------------------------------

def test_files_are_private(ca_dir):
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
    for name in CA_FILES:
        assert stat.S_IMODE((ca_dir / name).stat().st_mode) == 0o600, name
    assert not [p for p in ca_dir.iterdir() if p.name.endswith(".tmp")]


def test_keys_are_encrypted_pkcs8(ca_dir):
    for name in ("root.key", "issuing.key"):
        pem = (ca_dir / name).read_bytes()
        assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        with pytest.raises(TypeError):  # needs a password
            serialization.load_pem_private_key(pem, None)
        key = serialization.load_pem_private_key(pem, PASSPHRASE)
        assert key.key_size == 3072


def test_wrong_passphrase(ca_dir):
    with pytest.raises(CertificateAuthorityError, match="passphrase"):
        BuiltinCA.load(ca_dir, b"not the passphrase", BASE_URL)


def test_missing_ca(tmp_path):
    with pytest.raises(CertificateAuthorityError, match="no certificate authority"):
        BuiltinCA.load(tmp_path, PASSPHRASE, BASE_URL)


def test_refuses_to_overwrite(ca_dir):
    before = {name: (ca_dir / name).read_bytes() for name in CA_FILES}
    with pytest.raises(CertificateAuthorityError, match="already exists"):
        BuiltinCA.create(ca_dir, b"another passphrase", base_url=BASE_URL)
    assert before == {name: (ca_dir / name).read_bytes() for name in CA_FILES}
    BuiltinCA.load(ca_dir, PASSPHRASE, BASE_URL)


def test_refuses_when_one_file_is_left(tmp_path):
    (tmp_path / "issuing.key").write_bytes(b"left over")
    with pytest.raises(CertificateAuthorityError):
        BuiltinCA.create(tmp_path, PASSPHRASE, base_url=BASE_URL)
    assert (tmp_path / "issuing.key").read_bytes() == b"left over"


def test_is_a_certificate_authority(ca):
    assert isinstance(ca, CertificateAuthority)
    assert ca.homologation is True
    assert "homologação" in ca.label


# --- the chain ----------------------------------------------------------------------------------

def test_chain(ca):
    root, issuing = ca.root_cert, ca.issuing_cert
    assert root.subject.rfc4514_string() == "CN=VideoAR AC Raiz Homologacao,O=VideoAR,C=BR"
    assert issuing.subject.rfc4514_string() == "CN=VideoAR AC Homologacao,O=VideoAR,C=BR"
    root.verify_directly_issued_by(root)
    issuing.verify_directly_issued_by(root)
    assert ca.chain_der == [issuing.public_bytes(serialization.Encoding.DER),
                            root.public_bytes(serialization.Encoding.DER)]

    for cert, pathlen, years in ((root, 1, 10), (issuing, 0, 5)):
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and bc.value.ca and bc.value.path_length == pathlen
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
        assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
        span = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert 365 * years <= span.days <= 366 * years

    crl_dp = issuing.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert crl_dp[0].full_name[0].value == "https://ar.example.com/ac/raiz.crl"
    aia = issuing.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert aia[0].access_location.value == "https://ar.example.com/ac/raiz.crt"
    aki = issuing.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == root.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier).value.digest


# --- issuance -----------------------------------------------------------------------------------

def test_submit_issues_and_keeps_the_certificate(ca, ca_dir, holder_key):
    submission = ca.submit(csr_der(holder_key), spec(), PERSON)
    assert submission.status == "issued"
    cert = x509.load_der_x509_certificate(submission.certificate_der)
    assert submission.reference == format(cert.serial_number, "x")
    assert 0 < cert.serial_number < 2 ** 159
    assert submission.chain_der == ca.chain_der
    cert.verify_directly_issued_by(ca.issuing_cert)
    assert cert.public_key() == holder_key.public_key()

    # The CA's own names and URLs, whatever the profile said.
    assert cert.subject.rfc4514_string() == (
        "CN=JOSE CONCEICAO:52998224725,OU=videoconferencia,OU=11444777000161,"
        "OU=VideoAR AC Homologacao,O=ICP-Brasil,C=BR")
    crl_dp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert crl_dp[0].full_name[0].value == "https://ar.example.com/ac/emissora.crl"
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert aia[0].access_location.value == "https://ar.example.com/ac/emissora.crt"

    stored = ca_dir / "issued" / f"{submission.reference}.der"
    assert stored.read_bytes() == submission.certificate_der
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert ca.retrieve(submission.reference) == submission.certificate_der
    later = BuiltinCA.load(ca_dir, PASSPHRASE, BASE_URL).status(submission.reference)
    assert (later.status, later.certificate_der) == ("issued", submission.certificate_der)


def test_unknown_references(ca):
    for reference in ("abc123", "../issuing.key", "", "ABC"):
        with pytest.raises(CertificateAuthorityError, match="unknown reference"):
            ca.retrieve(reference)
    with pytest.raises(CertificateAuthorityError):
        ca.status("ffff")


def test_submit_company(ca, holder_key):
    submission = ca.submit(csr_der(holder_key), spec("e_cnpj", cert_type="A3",
                                                     validity_months=60), COMPANY)
    cert = x509.load_der_x509_certificate(submission.certificate_der)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
        "PADARIA PAO DE ACUCAR LTDA:11222333000181"
    # 60 months would outlive the issuing CA: cut at its end.
    assert cert.not_valid_after_utc == ca.issuing_cert.not_valid_after_utc


def test_submit_refuses_bad_requests(ca, holder_key):
    with pytest.raises(CsrRejected) as info:
        ca.submit(csr_der(holder_key, "MARIA DA SILVA:11144477735"), spec(), PERSON)
    assert info.value.code == "other_holder"
    with pytest.raises(CsrRejected) as info:
        ca.submit(csr_der(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
                  spec(), PERSON)
    assert info.value.code == "weak_key"


def test_revoke_checks_the_issuer(ca, holder_key):
    der = ca.submit(csr_der(holder_key), spec(), PERSON).certificate_der
    ca.revoke(der, "key_compromise")
    with pytest.raises(ValueError):
        ca.revoke(der, "bored")
    with pytest.raises(CertificateAuthorityError):
        ca.revoke(ca.chain_der[0], "superseded")  # the issuing CA: signed by the root
    with pytest.raises(CertificateAuthorityError):
        ca.revoke(b"garbage", "superseded")


def test_revoke_refuses_a_certificate_of_another_ca(ca, tmp_path, holder_key):
    other = BuiltinCA.create(tmp_path / "other", PASSPHRASE, base_url=BASE_URL)
    foreign = other.submit(csr_der(holder_key), spec(), PERSON).certificate_der
    with pytest.raises(CertificateAuthorityError, match="not issued"):
        ca.revoke(foreign, "superseded")


# --- CRLs ---------------------------------------------------------------------------------------

def test_crl(ca):
    when = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
    revoked = [(0xABC, when, "key_compromise"), (0xDEF, when + timedelta(hours=1), "superseded"),
               (0x123, when, "unspecified"), (0x456, when, "cessation_of_operation")]
    der = ca.build_crl(revoked, crl_number=42, this_update=when + timedelta(days=1),
                       next_update=when + timedelta(days=2))
    crl = x509.load_der_x509_crl(der)
    assert crl.is_signature_valid(ca.issuing_cert.public_key())
    assert not crl.is_signature_valid(ca.root_cert.public_key())
    assert crl.issuer == ca.issuing_cert.subject
    assert crl.last_update_utc == when + timedelta(days=1)
    assert crl.next_update_utc == when + timedelta(days=2)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 42
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca.issuing_cert.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier).value.digest

    def reason(entry):
        try:
            return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        except x509.ExtensionNotFound:
            return None

    assert {(e.serial_number, e.revocation_date_utc, reason(e)) for e in crl} == {
        (0xABC, when, x509.ReasonFlags.key_compromise),
        (0xDEF, when + timedelta(hours=1), x509.ReasonFlags.superseded),
        (0x123, when, None),  # "unspecified" is left out (RFC 5280)
        (0x456, when, x509.ReasonFlags.cessation_of_operation),
    }


def test_root_crl(ca):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    crl = x509.load_der_x509_crl(ca.root_crl(crl_number=1, this_update=now,
                                             next_update=now + timedelta(days=30)))
    assert crl.is_signature_valid(ca.root_cert.public_key())
    assert crl.issuer == ca.root_cert.subject
    assert len(crl) == 0


# --- OpenSSL's view -----------------------------------------------------------------------------

def test_openssl_verifies_the_chain_and_sees_the_revocation(ca, holder_key, tmp_path):
    submission = ca.submit(csr_der(holder_key), spec(), PERSON)
    root = pem_file(tmp_path / "root.pem", ca.chain_der[1])
    issuing = pem_file(tmp_path / "issuing.pem", ca.chain_der[0])
    leaf = pem_file(tmp_path / "leaf.pem", submission.certificate_der)
    result = openssl("verify", "-x509_strict", "-CAfile", root, "-untrusted", issuing, leaf)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{leaf}: OK" in result.stdout

    now = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
    crls = tmp_path / "crls.pem"
    serial = int(submission.reference, 16)
    crls.write_bytes(b"".join(
        x509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM) for der in (
            ca.build_crl([(serial, now, "key_compromise")], crl_number=2, this_update=now,
                         next_update=now + timedelta(days=1)),
            ca.root_crl(crl_number=1, this_update=now, next_update=now + timedelta(days=1)))))
    result = openssl("verify", "-crl_check_all", "-CRLfile", crls, "-CAfile", root,
                     "-untrusted", issuing, leaf)
    assert result.returncode != 0
    assert "certificate revoked" in result.stdout + result.stderr


def test_openssl_shows_the_other_names(ca, holder_key, tmp_path):
    submission = ca.submit(csr_der(holder_key), spec("e_cnpj"), COMPANY)
    leaf = tmp_path / "leaf.der"
    leaf.write_bytes(submission.certificate_der)
    text = openssl("x509", "-inform", "DER", "-in", leaf, "-noout", "-text").stdout
    san = text.split("X509v3 Subject Alternative Name:")[1].splitlines()[1]
    assert re.findall(r"othername: ?([\d.]+)", san) == [
        "2.16.76.1.3.4", "2.16.76.1.3.2", "2.16.76.1.3.3", "2.16.76.1.3.7"]
    assert "email:contato@padaria.example" in san
    assert "Policy: 2.16.76.1.2.1.99" in text
    assert "CPS: https://ar.example.com/dpc" in text
    assert re.search(r"Key Usage: critical\s+Digital Signature, Non Repudiation, Key Encipherment",
                     text)
    assert "TLS Web Client Authentication, E-mail Protection" in text

    # The values, as OpenSSL's ASN.1 parser reads them inside the SAN extension.
    dump = openssl("asn1parse", "-inform", "DER", "-in", leaf).stdout.splitlines()
    at = next(i for i, line in enumerate(dump) if "X509v3 Subject Alternative Name" in line)
    offset = dump[at + 1].split(":")[0].strip()
    parsed = openssl("asn1parse", "-inform", "DER", "-in", leaf, "-strparse", offset).stdout
    values = re.findall(r"prim: (OBJECT|OCTET STRING|PRINTABLESTRING)\s+:(.*)", parsed)
    assert values == [
        ("OBJECT", "2.16.76.1.3.4"),
        ("OCTET STRING", "31011980529982247251234567890100000012345678" "9SSPSP"),
        ("OBJECT", "2.16.76.1.3.2"), ("PRINTABLESTRING", "JOSE CONCEICAO"),
        ("OBJECT", "2.16.76.1.3.3"), ("OCTET STRING", "11222333000181"),
        ("OBJECT", "2.16.76.1.3.7"), ("OCTET STRING", "000000000000"),
    ]


# --- service certificates -----------------------------------------------------------------------

def test_signing_certificate(ca, holder_key):
    cert = ca.issue_service_certificate(holder_key.public_key(), common_name="Ana Agente",
                                        purpose="signing", organization="Cartório São José",
                                        cpf="11144477735", email="ana@cartorio.example")
    cert.verify_directly_issued_by(ca.issuing_cert)
    assert cert.subject.rfc4514_string() == "CN=Ana Agente,O=Cartorio Sao Jose,C=BR"
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.content_commitment
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.CLIENT_AUTH}
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    [other] = san.get_values_for_type(x509.OtherName)
    assert other.type_id.dotted_string == "2.16.76.1.3.1"
    assert other.value == b"\x04\x2d" + b"00000000" b"11144477735" + b"0" * 26
    assert san.get_values_for_type(x509.RFC822Name) == ["ana@cartorio.example"]
    span = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 730 <= span.days <= 731
    assert cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    assert cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess)


def test_seal_certificate(ca):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca.issue_service_certificate(key.public_key(), common_name="Cartorio Sao Jose",
                                        purpose="seal", years=1)
    cert.verify_directly_issued_by(ca.issuing_cert)
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.content_commitment and not ku.key_encipherment
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_timestamping_certificate_passes_openssl_purpose_check(ca, holder_key, tmp_path):
    cert = ca.issue_service_certificate(holder_key.public_key(), common_name="VideoAR TSA",
                                        purpose="timestamping", organization="VideoAR")
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    root = pem_file(tmp_path / "root.pem", ca.chain_der[1])
    issuing = pem_file(tmp_path / "issuing.pem", ca.chain_der[0])
    tsa = pem_file(tmp_path / "tsa.pem", cert.public_bytes(serialization.Encoding.DER))
    result = openssl("verify", "-purpose", "timestampsign", "-CAfile", root,
                     "-untrusted", issuing, tsa)
    assert result.returncode == 0, result.stdout + result.stderr


def test_service_certificate_arguments(ca, holder_key):
    with pytest.raises(ValueError):
        ca.issue_service_certificate(holder_key.public_key(), common_name="x", purpose="tls")
    with pytest.raises(ValueError):
        ca.issue_service_certificate(holder_key.public_key(), common_name="x",
                                     purpose="seal", years=9)
