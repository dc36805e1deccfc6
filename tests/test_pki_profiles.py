"""Certificate profiles: otherName layouts byte for byte, subject, extensions, validity."""
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from app.pki.profiles import (
    CompanyData, PersonData, ProfileSpec, add_months, build_certificate, layout_cei,
    layout_name, layout_person_data, layout_voter, other_names_for, read_der_string, subject_for,
)

FULL = PersonData(
    name="José Conceição", cpf="52998224725", email="jose@example.com",
    birth_date=date(1980, 1, 31), nis="12345678901", rg_number="12.345.678-x", rg_issuer="SSP",
    rg_uf="SP", voter_id="123456789012", voter_zone="45", voter_section="678",
    voter_city="São Paulo", voter_uf="SP", cei="12345678901",
)
BARE = PersonData(name="Maria da Silva", cpf="11144477735", email="maria@example.com")
COMPANY = CompanyData(
    legal_name="Padaria Pão de Açúcar Ltda", cnpj="11222333000181", city="São João del-Rei",
    uf="MG", email="contato@padaria.example", cei="987654321098", responsible=FULL,
)

FULL_PERSON_LAYOUT = b"31011980" b"52998224725" b"12345678901" b"00000012345678X" b"SSPSP"
BARE_PERSON_LAYOUT = b"00000000" b"11144477735" + b"0" * 11 + b"0" * 15


def spec(kind="e_cpf", **changes):
    values = dict(kind=kind, cert_type="A1", policy_oid="2.16.76.1.2.1.99", validity_months=12,
                  issuing_ca_name="VideoAR AC Homologação", ar_cnpj="11444777000161",
                  identification="videoconferencia", crl_url="https://ar.example/ac/emissora.crl",
                  ca_issuers_url="https://ar.example/ac/emissora.crt",
                  cps_url="https://ar.example/dpc", homologation=True)
    values.update(changes)
    return ProfileSpec(**values)


@pytest.fixture(scope="module")
def issuer():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


@pytest.fixture(scope="module")
def leaf_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def issue(issuer, leaf_key, profile, holder, not_before=datetime(2026, 3, 31, 12, 0, tzinfo=timezone.utc)):
    cert, key = issuer
    return build_certificate(public_key=leaf_key.public_key(), profile=profile, holder=holder,
                             issuer_cert=cert, issuer_key=key, serial=0x1234, not_before=not_before)


def raw(names):
    return [(n.type_id.dotted_string, n.value) for n in names]


# --- layouts ------------------------------------------------------------------------------------

def test_person_layouts_with_every_field():
    assert layout_person_data(FULL).encode() == FULL_PERSON_LAYOUT
    assert layout_voter(FULL) == "123456789012" "045" "0678" "SAOPAULOSP"
    assert layout_cei(FULL.cei) == "012345678901"
    assert raw(other_names_for(spec(), FULL)) == [
        ("2.16.76.1.3.1", b"\x04\x32" + FULL_PERSON_LAYOUT),
        ("2.16.76.1.3.6", b"\x04\x0c012345678901"),
        ("2.16.76.1.3.5", b"\x04\x1d123456789012" b"045" b"0678" b"SAOPAULOSP"),
    ]


def test_person_layouts_with_missing_fields_are_zeros():
    assert raw(other_names_for(spec(), BARE)) == [
        ("2.16.76.1.3.1", b"\x04\x2d" + BARE_PERSON_LAYOUT),
        ("2.16.76.1.3.6", b"\x04\x0c" + b"0" * 12),
        ("2.16.76.1.3.5", b"\x04\x13" + b"0" * 19),
    ]


def test_issuer_and_city_are_cut_to_their_width():
    person = replace(FULL, rg_issuer="SECRETARIA SEG PUB", voter_city="Vila Bela da Santíssima Trindade",
                     voter_uf="MT")
    assert layout_person_data(person)[45:] == "SECRETARSP"
    assert layout_voter(person)[19:] == "VILABELADASANTISSIMAMT"


def test_rg_issuer_and_voter_city_left_out_without_their_numbers():
    person = replace(FULL, rg_number=None, voter_id=None, voter_zone=None, voter_section=None)
    assert layout_person_data(person) == "31011980" "52998224725" "12345678901" + "0" * 15
    assert layout_voter(person) == "0" * 19


def test_too_long_numbers_are_refused():
    with pytest.raises(ValueError, match="NIS"):
        layout_person_data(replace(FULL, nis="123456789012"))
    with pytest.raises(ValueError, match="voter zone"):
        layout_voter(replace(FULL, voter_zone="1234"))


def test_company_layouts_with_the_responsible_person():
    assert layout_name(FULL.name) == "JOSE CONCEICAO"
    assert raw(other_names_for(spec("e_cnpj"), COMPANY)) == [
        ("2.16.76.1.3.4", b"\x04\x32" + FULL_PERSON_LAYOUT),
        ("2.16.76.1.3.2", b"\x13\x0eJOSE CONCEICAO"),
        ("2.16.76.1.3.3", b"\x04\x0e11222333000181"),
        ("2.16.76.1.3.7", b"\x04\x0c987654321098"),
    ]
    no_cei = replace(COMPANY, cei=None)
    assert raw(other_names_for(spec("e_cnpj"), no_cei))[3] == ("2.16.76.1.3.7", b"\x04\x0c" + b"0" * 12)


def test_enotariado_carries_only_the_person_data():
    assert raw(other_names_for(spec("e_notariado"), FULL)) == [
        ("2.16.76.1.3.1", b"\x04\x32" + FULL_PERSON_LAYOUT)]


def test_read_der_string_round_trip():
    assert read_der_string(b"\x04\x03abc") == "abc"
    assert read_der_string(b"\x13\x81\x80" + b"A" * 128) == "A" * 128
    with pytest.raises(ValueError):
        read_der_string(b"\x30\x03abc")
    with pytest.raises(ValueError):
        read_der_string(b"\x04\x05abc")


# --- subject ------------------------------------------------------------------------------------

def pairs(name):
    return [(a.oid, a.value) for a in name]


def test_ecpf_subject_order_without_accents():
    assert pairs(subject_for(spec(identification="videoconferência"), FULL)) == [
        (NameOID.COUNTRY_NAME, "BR"),
        (NameOID.ORGANIZATION_NAME, "ICP-Brasil"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "VideoAR AC Homologacao"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "11444777000161"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "videoconferencia"),
        (NameOID.COMMON_NAME, "JOSE CONCEICAO:52998224725"),
    ]


def test_ecnpj_subject_has_state_and_locality():
    assert pairs(subject_for(spec("e_cnpj"), COMPANY)) == [
        (NameOID.COUNTRY_NAME, "BR"),
        (NameOID.ORGANIZATION_NAME, "ICP-Brasil"),
        (NameOID.STATE_OR_PROVINCE_NAME, "MG"),
        (NameOID.LOCALITY_NAME, "SAO JOAO DEL-REI"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "VideoAR AC Homologacao"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "11444777000161"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "videoconferencia"),
        (NameOID.COMMON_NAME, "PADARIA PAO DE ACUCAR LTDA:11222333000181"),
    ]


def test_enotariado_subject_is_not_icp_brasil():
    values = pairs(subject_for(spec("e_notariado"), FULL))
    assert values[1] == (NameOID.ORGANIZATION_NAME, "e-Notariado")
    assert values[-1] == (NameOID.COMMON_NAME, "JOSE CONCEICAO:52998224725")
    assert "ICP-Brasil" not in subject_for(spec("e_notariado"), FULL).rfc4514_string()


def test_long_names_are_cut_to_fit_the_common_name():
    person = replace(BARE, name="Maria " + "Aparecida " * 10 + "Souza")
    cn = subject_for(spec(), person).get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert len(cn) <= 64
    assert cn.startswith("MARIA APARECIDA") and cn.endswith(":11144477735")
    assert " :" not in cn


def test_holder_must_match_the_kind():
    with pytest.raises(TypeError):
        subject_for(spec("e_cnpj"), FULL)
    with pytest.raises(TypeError):
        other_names_for(spec("e_cpf"), COMPANY)


# --- validity -----------------------------------------------------------------------------------

def test_validity_limits_by_type():
    assert spec(cert_type="A1", validity_months=12).validity_months == 12
    assert spec(cert_type="A3", validity_months=60).validity_months == 60
    with pytest.raises(ValueError, match="A1"):
        spec(cert_type="A1", validity_months=13)
    with pytest.raises(ValueError, match="A3"):
        spec(cert_type="A3", validity_months=61)
    with pytest.raises(ValueError):
        spec(validity_months=0)
    with pytest.raises(ValueError, match="type"):
        spec(cert_type="Z9")
    with pytest.raises(ValueError):
        spec(kind="e_rg")
    with pytest.raises(ValueError):
        spec(ar_cnpj="123")
    with pytest.raises(ValueError):
        spec(policy_oid="not an oid")


def test_add_months_clamps_the_day():
    moment = datetime(2027, 1, 31, 10, 0, tzinfo=timezone.utc)
    assert add_months(moment, 1) == datetime(2027, 2, 28, 10, 0, tzinfo=timezone.utc)
    assert add_months(moment, 13) == datetime(2028, 2, 29, 10, 0, tzinfo=timezone.utc)
    assert add_months(moment, 60) == datetime(2032, 1, 31, 10, 0, tzinfo=timezone.utc)


def test_certificate_validity(issuer, leaf_key):
    cert = issue(issuer, leaf_key, spec(), FULL)
    assert cert.not_valid_before_utc == datetime(2026, 3, 31, 12, 0, tzinfo=timezone.utc)
    assert cert.not_valid_after_utc == datetime(2027, 3, 31, 12, 0, tzinfo=timezone.utc)
    # Never past the issuer's own end.
    late = issue(issuer, leaf_key, spec(cert_type="A3", validity_months=60), FULL,
                 not_before=issuer[0].not_valid_after_utc - timedelta(days=30))
    assert late.not_valid_after_utc == issuer[0].not_valid_after_utc.replace(microsecond=0)


# --- extensions ---------------------------------------------------------------------------------

def test_certificate_extensions(issuer, leaf_key):
    cert = issue(issuer, leaf_key, spec(), FULL)
    ext = cert.extensions
    assert cert.serial_number == 0x1234
    assert cert.issuer == issuer[0].subject
    cert.verify_directly_issued_by(issuer[0])

    bc = ext.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False

    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert (ku.value.digital_signature, ku.value.content_commitment,
            ku.value.key_encipherment) == (True, True, True)
    assert not (ku.value.key_cert_sign or ku.value.crl_sign or ku.value.data_encipherment)

    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage)
    assert not eku.critical
    assert list(eku.value) == [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION]

    policies = ext.get_extension_for_class(x509.CertificatePolicies).value
    assert [p.policy_identifier.dotted_string for p in policies] == ["2.16.76.1.2.1.99"]
    assert policies[0].policy_qualifiers == ["https://ar.example/dpc"]

    crl_dp = ext.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [n.value for n in crl_dp[0].full_name] == ["https://ar.example/ac/emissora.crl"]
    aia = ext.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [(d.access_method, d.access_location.value) for d in aia] == [
        (x509.AuthorityInformationAccessOID.CA_ISSUERS, "https://ar.example/ac/emissora.crt")]

    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == issuer[0].extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier).value.digest
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski.digest == x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()).digest

    san = ext.get_extension_for_class(x509.SubjectAlternativeName)
    assert not san.critical
    assert [n.type_id.dotted_string for n in san.value.get_values_for_type(x509.OtherName)] == [
        "2.16.76.1.3.1", "2.16.76.1.3.6", "2.16.76.1.3.5"]
    assert san.value.get_values_for_type(x509.RFC822Name) == ["jose@example.com"]


def test_ecnpj_certificate(issuer, leaf_key):
    cert = issue(issuer, leaf_key, spec("e_cnpj", cert_type="A3", validity_months=36,
                                        policy_oid="2.16.76.1.2.3.99"), COMPANY)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
        "PADARIA PAO DE ACUCAR LTDA:11222333000181"
    assert cert.not_valid_after_utc == datetime(2029, 3, 31, 12, 0, tzinfo=timezone.utc)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert raw(san.get_values_for_type(x509.OtherName)) == raw(other_names_for(spec("e_cnpj"), COMPANY))
    assert san.get_values_for_type(x509.RFC822Name) == ["contato@padaria.example"]
    policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert policies[0].policy_identifier.dotted_string == "2.16.76.1.2.3.99"


def test_ec_key_gets_no_key_encipherment(issuer):
    cert = issue(issuer, ec.generate_private_key(ec.SECP256R1()), spec(), FULL)
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.content_commitment and not ku.key_encipherment


def test_homologation_changes_no_field(issuer, leaf_key):
    trial = issue(issuer, leaf_key, spec(homologation=True), FULL)
    production = issue(issuer, leaf_key, spec(homologation=False), FULL)
    assert trial.subject == production.subject
    assert trial.tbs_certificate_bytes == production.tbs_certificate_bytes
