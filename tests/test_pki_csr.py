"""Checks on holders' certificate requests."""
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from app.pki.csr import CsrRejected, check_csr, parse_csr
from app.pki.profiles import OID_CNPJ, OID_PERSON, der_string

CPF = "52998224725"
OTHER_CPF = "11144477735"
CNPJ = "11222333000181"
OTHER_CNPJ = "11444777000161"


@pytest.fixture(scope="module")
def key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_csr(key, cn="token", *, serial_number=None, other_names=(), pem=False,
             algorithm=hashes.SHA256()):
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if serial_number:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    if other_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.OtherName(x509.ObjectIdentifier(oid) if isinstance(oid, str) else oid,
                            der_string(0x04, text)) for oid, text in other_names]),
            critical=False)
    csr = builder.sign(key, algorithm)
    return csr.public_bytes(serialization.Encoding.PEM if pem else serialization.Encoding.DER)


def rejected(data, code, **expected):
    with pytest.raises(CsrRejected) as info:
        csr = parse_csr(data)
        if expected:
            check_csr(csr, **expected)
    assert info.value.code == code
    assert info.value.message
    return info.value


def test_der_and_pem_are_accepted(key):
    der = make_csr(key, "JOSE CONCEICAO")
    pem = make_csr(key, "JOSE CONCEICAO", pem=True)
    assert pem.startswith(b"-----BEGIN CERTIFICATE REQUEST-----")
    for data in (der, pem, b"\n  " + pem):
        csr = parse_csr(data)
        assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "JOSE CONCEICAO"
        assert csr.public_key() == key.public_key()
        check_csr(csr, expected_cpf=CPF, expected_cnpj=None)


def test_ec_keys_on_nist_curves_are_accepted():
    for curve in (ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()):
        parse_csr(make_csr(ec.generate_private_key(curve)))


def test_malformed():
    rejected(b"", "malformed")
    rejected(b"not a request at all", "malformed")
    rejected(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
             "malformed")


def test_truncated_request_is_malformed(key):
    rejected(make_csr(key)[:-20], "malformed")


def test_tampered_signature(key):
    der = bytearray(make_csr(key))
    der[-1] ^= 0x01  # the signature's last byte
    assert parse_csr(make_csr(key))  # untouched it passes
    rejected(bytes(der), "bad_signature")


def test_tampered_subject(key):
    der = make_csr(key, "AAAAAAAA")
    rejected(der.replace(b"AAAAAAAA", b"BBBBBBBB"), "bad_signature")


def test_weak_keys():
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    assert "2048" in rejected(make_csr(weak), "weak_key").message
    odd_exponent = rsa.generate_private_key(public_exponent=3, key_size=2048)
    assert "65537" in rejected(make_csr(odd_exponent), "weak_key").message
    rejected(make_csr(ec.generate_private_key(ec.SECP256K1())), "weak_key")
    rejected(make_csr(ed25519.Ed25519PrivateKey.generate(), algorithm=None), "weak_key")


def test_arbitrary_common_name_is_fine(key):
    csr = parse_csr(make_csr(key, "Certificado A3 - token SafeNet 11987654321"))
    check_csr(csr, expected_cpf=CPF, expected_cnpj=None)  # a phone number, not a valid CPF


def test_own_cpf_in_any_format_is_fine(key):
    for cn in (f"JOSE CONCEICAO:{CPF}", "JOSE 529.982.247-25", CPF):
        check_csr(parse_csr(make_csr(key, cn)), expected_cpf=CPF, expected_cnpj=None)


def test_another_cpf_in_the_common_name(key):
    rejected(make_csr(key, f"MARIA DA SILVA:{OTHER_CPF}"), "other_holder",
             expected_cpf=CPF, expected_cnpj=None)
    rejected(make_csr(key, "Maria 111.444.777-35"), "other_holder",
             expected_cpf=CPF, expected_cnpj=None)


def test_another_cpf_in_the_serial_number(key):
    rejected(make_csr(key, serial_number=OTHER_CPF), "other_holder",
             expected_cpf=CPF, expected_cnpj=None)
    check_csr(parse_csr(make_csr(key, serial_number=CPF)), expected_cpf=CPF, expected_cnpj=None)


def test_another_cpf_in_the_person_othername(key):
    other = "00000000" + OTHER_CPF + "0" * 26
    own = "31011980" + CPF + "0" * 26
    rejected(make_csr(key, other_names=[(OID_PERSON, other)]), "other_holder",
             expected_cpf=CPF, expected_cnpj=None)
    check_csr(parse_csr(make_csr(key, other_names=[(OID_PERSON, own)])),
              expected_cpf=CPF, expected_cnpj=None)


def test_another_company(key):
    rejected(make_csr(key, f"PADARIA:{OTHER_CNPJ}"), "other_holder",
             expected_cpf=CPF, expected_cnpj=CNPJ)
    rejected(make_csr(key, other_names=[(OID_CNPJ, OTHER_CNPJ)]), "other_holder",
             expected_cpf=None, expected_cnpj=CNPJ)
    rejected(make_csr(key, other_names=[("2.16.76.1.3.4", "00000000" + OTHER_CPF + "0" * 26)]),
             "other_holder", expected_cpf=CPF, expected_cnpj=CNPJ)
    ok = make_csr(key, f"PADARIA LTDA:{CNPJ}", other_names=[(OID_CNPJ, CNPJ)])
    check_csr(parse_csr(ok), expected_cpf=CPF, expected_cnpj=CNPJ)


def test_nothing_expected_nothing_refused(key):
    csr = parse_csr(make_csr(key, f"MARIA:{OTHER_CPF}"))
    check_csr(csr, expected_cpf=None, expected_cnpj=CNPJ)
    check_csr(csr, expected_cpf=None, expected_cnpj=None)


def test_unreadable_othername_is_malformed(key):
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
    builder = builder.add_extension(x509.SubjectAlternativeName(
        [x509.OtherName(OID_PERSON, b"\x02\x01\x05")]), critical=False)  # an INTEGER
    data = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    rejected(data, "malformed", expected_cpf=CPF, expected_cnpj=None)
