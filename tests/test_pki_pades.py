"""The termo de titularidade (app/pki/termo.py) and its three PAdES signatures (app/pki/pades.py):
the agent's counter-signature with a server-held key, the holder's made "in the browser" (prepare
→ raw RSASSA-PKCS1-v1_5 / SHA-256 over the signed attributes → finish), and the office seal with
timestamps and embedded validation data (B-LTA). Validation with pyHanko (offline) and with
Debian's pdfsig (poppler + NSS). No app, no database: a small CA chain is built here with
cryptography (`build_pki`, also used by tests/test_pki_tsa.py and bench/issuance_termo.py).
"""
import hashlib
import io
import json
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# --- a small CA chain, built with cryptography ---------------------------------------------------

ROOT_CRL_URL = "http://ca.videoar.test/raiz.crl"
ISSUING_CRL_URL = "http://ca.videoar.test/ac-videoar.crl"
LEAF_DAYS = 365


@dataclass
class Party:
    key: object
    cert: x509.Certificate

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


@dataclass
class Pki:
    now: datetime
    root: Party
    issuing: Party
    agent: Party
    holder: Party
    office: Party
    tsa: Party
    root_crl: x509.CertificateRevocationList
    issuing_crl: x509.CertificateRevocationList

    @property
    def chain(self) -> list[x509.Certificate]:
        return [self.issuing.cert, self.root.cert]

    @property
    def crls_der(self) -> list[bytes]:
        return [c.public_bytes(serialization.Encoding.DER)
                for c in (self.root_crl, self.issuing_crl)]

    @property
    def leaf_expiry(self) -> datetime:
        return self.agent.cert.not_valid_after_utc

    def crls_at(self, moment: datetime, revoked=()) -> list[bytes]:
        """Fresh CRLs as the CAs would publish them at `moment`."""
        return [c.public_bytes(serialization.Encoding.DER) for c in (
            _crl(self.root, moment, ()), _crl(self.issuing, moment, revoked))]


def _name(cn: str, ou: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "BR"),
             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ICP-Brasil Teste")]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _rsa():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _cert(subject, key, issuer: Party | None, *, not_before, not_after, ca=False,
          crl_url=None, ku=None, eku=None, eku_critical=False, serial=None):
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(issuer.cert.subject if issuer else subject)
               .public_key(key.public_key())
               .serial_number(serial or x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(
                   ca=ca, path_length=0 if ca and issuer else None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False))
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False)
    if ca:
        ku = ku or dict(key_cert_sign=True, crl_sign=True)
    ku_all = dict(digital_signature=False, content_commitment=False, key_encipherment=False,
                  data_encipherment=False, key_agreement=False, key_cert_sign=False,
                  crl_sign=False, encipher_only=False, decipher_only=False)
    ku_all.update(ku or {})
    builder = builder.add_extension(x509.KeyUsage(**ku_all), critical=True)
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=eku_critical)
    if crl_url:
        builder = builder.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(crl_url)], relative_name=None,
            reasons=None, crl_issuer=None)]), critical=False)
    signer = issuer.key if issuer else key
    return builder.sign(signer, hashes.SHA256())


def _crl(issuer: Party, this_update: datetime, revoked=(), days=7):
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(issuer.cert.subject)
               .last_update(this_update)
               .next_update(this_update + timedelta(days=days))
               .add_extension(x509.CRLNumber(int(this_update.timestamp())), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   issuer.key.public_key()), critical=False))
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial)
            .revocation_date(this_update).build())
    return builder.sign(issuer.key, hashes.SHA256())


def build_pki(now: datetime | None = None) -> Pki:
    now = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    start = now - timedelta(hours=1)
    root_key = _rsa()
    root = Party(root_key, _cert(_name("AC Raiz VideoAR Teste"), root_key, None, ca=True,
                                 not_before=start - timedelta(days=1),
                                 not_after=now + timedelta(days=365 * 25)))
    issuing_key = _rsa()
    issuing = Party(issuing_key, _cert(_name("AC VideoAR Teste", "AC Raiz VideoAR Teste"),
                                       issuing_key, root, ca=True, crl_url=ROOT_CRL_URL,
                                       not_before=start - timedelta(days=1),
                                       not_after=now + timedelta(days=365 * 20)))

    def leaf(cn, ou, *, days=LEAF_DAYS, ku=None, eku=None, eku_critical=False):
        key = _rsa()
        return Party(key, _cert(_name(cn, ou), key, issuing, crl_url=ISSUING_CRL_URL,
                                not_before=start, not_after=now + timedelta(days=days),
                                ku=ku or dict(digital_signature=True, content_commitment=True),
                                eku=eku, eku_critical=eku_critical))

    personal = [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION]
    agent = leaf("JOAO PEDRO ALBUQUERQUE:11122233396", "Agente de Registro", eku=personal)
    holder = leaf("MARIA CONCEICAO DE ARAUJO GONCALVES:12345678909", "videoconferencia",
                  ku=dict(digital_signature=True), eku=personal)
    office = leaf("AR CARTORIO VIDEOAR TESTE:11222333000181", "Selo", eku=personal)
    tsa = leaf("Carimbo do Tempo VideoAR Teste", "TSA", days=365 * 10,
               eku=[ExtendedKeyUsageOID.TIME_STAMPING], eku_critical=True)
    return Pki(now=now, root=root, issuing=issuing, agent=agent, holder=holder, office=office,
               tsa=tsa, root_crl=_crl(root, start), issuing_crl=_crl(issuing, start))


# --- the termo ----------------------------------------------------------------------------------

def face_jpeg() -> bytes:
    """A small synthetic 'face' photo (JPEG)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (300, 380), (196, 168, 150))
    draw = ImageDraw.Draw(img)
    draw.ellipse((70, 55, 230, 255), fill=(228, 192, 168))
    draw.rectangle((35, 285, 265, 380), fill=(38, 58, 92))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85)
    return out.getvalue()


def sample_termo(pki: "Pki | None" = None, **overrides):
    from app.pki.termo import TermoData

    call = datetime(2025, 3, 14, 17, 5, 12, tzinfo=timezone.utc)
    cert = pki.holder.cert if pki else None
    values = dict(
        holder_name="Maria Conceição de Araújo Gonçalves",
        holder_cpf="12345678909",
        holder_email="maria.goncalves@example.com.br",
        product_name="e-CPF A1",
        certificate_serial=(format(cert.serial_number, "x") if cert
                            else "5a3f09c1e2d4b6a8017f3c2e9d0b4a61"),
        certificate_sha256=(cert.fingerprint(hashes.SHA256()).hex() if cert
                            else hashlib.sha256(b"certificado").hexdigest()),
        valid_from=cert.not_valid_before_utc if cert else call + timedelta(days=2),
        valid_until=cert.not_valid_after_utc if cert else call + timedelta(days=367),
        ra_name="AR Cartório do 2º Ofício de Notas",
        ra_cnpj="11222333000181",
        agent_name="João Pedro Albuquerque",
        call_at=call,
        consent_text="Estou ciente do processo de identificação, bem como autorizo a gravação "
                     "em dossiê.",
        consent_accepted_at=call - timedelta(minutes=1),
        protocol="2025-000123",
        face_photo_jpeg=face_jpeg(),
        recording_hashes=[(f"cliente-{i:04d}.webm", hashlib.sha256(bytes([i])).hexdigest())
                          for i in range(3)] + [("agente-0000.webm",
                                                 hashlib.sha256(b"agente").hexdigest())],
        homologation=False,
    )
    values.update(overrides)
    return TermoData(**values)


def page_texts(pdf: bytes) -> list[str]:
    import pypdfium2

    doc = pypdfium2.PdfDocument(pdf)
    try:
        return [doc[i].get_textpage().get_text_bounded() for i in range(len(doc))]
    finally:
        doc.close()


def squash(text: str) -> str:
    return " ".join(text.split())


def test_termo_pdf_shows_the_holder_certificate_consent_and_recording():
    from app.pki.termo import render_termo_pdf

    data = sample_termo()
    pdf = render_termo_pdf(data)
    assert pdf.startswith(b"%PDF-")
    import pypdfium2

    doc = pypdfium2.PdfDocument(pdf)
    width, height = doc[0].get_size()
    assert (round(width), round(height)) == (595, 842)  # A4 in points
    images = [o for o in doc[0].get_objects() if o.type == pypdfium2.raw.FPDF_PAGEOBJ_IMAGE]
    assert images, "the face photo is embedded"
    doc.close()

    text = squash(" ".join(page_texts(pdf)))
    assert "TERMO DE TITULARIDADE" in text
    assert "Maria Conceição de Araújo Gonçalves" in text
    assert "123.456.789-09" in text
    assert "5A:3F:09:C1:E2:D4:B6:A8:01:7F:3C:2E:9D:0B:4A:61" in text  # the serial
    assert data.consent_text in text
    assert "Aceito em 14/03/2025 às 14:04:12 (horário de Brasília, UTC-03:00)" in text
    assert "14/03/2025 às 14:05:12" in text  # the call, in São Paulo time
    assert hashlib.sha256(b"agente").hexdigest() in text
    assert "cliente-0002.webm" in text
    assert "11.222.333/0001-81" in text and "João Pedro Albuquerque" in text
    assert "2025-000123" in text
    # duties and who signs
    for phrase in ("verdadeiros, completos e atuais", "guarda exclusiva e em sigilo",
                   "imediatamente a revogação", "aceito", "Contra-assinatura do agente de registro",
                   "Assinatura do titular", "Selo da Autoridade de Registro"):
        assert phrase.lower() in text.lower(), phrase
    assert "HOMOLOGAÇÃO" not in text


def test_termo_homologation_banner_on_every_page():
    from app.pki.termo import render_termo_pdf

    many = [(f"cliente-{i:04d}.webm", hashlib.sha256(bytes([i])).hexdigest()) for i in range(70)]
    pages = page_texts(render_termo_pdf(sample_termo(homologation=True, recording_hashes=many)))
    assert len(pages) >= 3
    for text in pages:
        assert "HOMOLOGAÇÃO — sem valor legal" in squash(text)


def test_termo_for_a_company_names_the_company_and_the_responsible_person():
    from app.pki.termo import render_termo_pdf

    data = sample_termo(product_name="e-CNPJ A1", company_name="Padaria Pão Quente Ltda",
                        company_cnpj="11444777000161", responsible_name="Carlos Eduardo Lima",
                        responsible_cpf="52998224725", face_photo_jpeg=None, recording_hashes=[],
                        zone="America/Manaus")
    text = squash(" ".join(page_texts(render_termo_pdf(data))))
    assert "Padaria Pão Quente Ltda" in text and "11.444.777/0001-61" in text
    assert "Carlos Eduardo Lima" in text and "529.982.247-25" in text
    assert "responsável pelo certificado digital da empresa" in text
    assert "13:05:12 (America/Manaus, UTC-04:00)" in text
    assert "Nenhum segmento de gravação registrado." in text
    assert "sem foto" in text


def test_termo_escapes_what_it_is_given():
    from app.pki.termo import render_termo_html

    html = render_termo_html(sample_termo(holder_name='<script>alert("x")</script>'))
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_termo_refuses_naive_datetimes():
    from app.pki.termo import render_termo_html

    with pytest.raises(ValueError):
        render_termo_html(sample_termo(call_at=datetime(2025, 3, 14, 14, 5)))


# --- the three signatures -----------------------------------------------------------------------

def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def webcrypto_sign(key, data: bytes) -> bytes:
    """What `crypto.subtle.sign({name: "RSASSA-PKCS1-v1_5"}, key, data)` returns for a key
    imported with hash SHA-256: PKCS#1 v1.5 over SHA-256(data), hashing done by the signer."""
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


@pytest.fixture(scope="module")
def pki():
    return build_pki()


@pytest.fixture(scope="module")
def local_tsa(pki):
    from app.pki.tsa import LocalTSA

    return LocalTSA(pki.tsa.cert, pki.tsa.key, pki.chain)


@pytest.fixture(scope="module")
def termo_pdf(pki):
    from app.pki.termo import render_termo_pdf

    return render_termo_pdf(sample_termo(pki))


@dataclass
class Signed:
    termo: bytes
    agent: bytes     # after the agent's counter-signature
    state: object    # the holder's ExternalSigning, as it came back from JSON
    state_json: dict
    holder: bytes    # after the holder's signature
    sealed: bytes    # after the office seal


def sign_three_times(pki, tsa, termo: bytes) -> Signed:
    from app.pki import pades

    agent_pdf = pades.sign_pdf(termo, key=pki.agent.key, cert=pki.agent.cert, chain=pki.chain,
                               field_name="AgenteDeRegistro", reason="Contra-assinatura do agente",
                               name="João Pedro Albuquerque", timestamper=tsa.timestamper())
    state = pades.prepare_external(agent_pdf, cert_der=pki.holder.der,
                                   chain_der=[der(c) for c in pki.chain], field_name="Titular",
                                   reason="Aceite do termo de titularidade",
                                   timestamper=tsa.timestamper())
    # the state goes to the database as JSON, the DER to the browser, the signature comes back
    state_json = json.loads(json.dumps(state.to_json()))
    stored = pades.ExternalSigning.from_json(state_json)
    signature = webcrypto_sign(pki.holder.key, stored.to_be_signed)
    holder_pdf = pades.finish_external(stored, signature, timestamper=tsa.timestamper())
    sealed = pades.seal_pdf(holder_pdf, key=pki.office.key, cert=pki.office.cert, chain=pki.chain,
                            timestamper=tsa.timestamper(),
                            validation_context=pades.make_validation_context(
                                [pki.root.cert], pki.crls_der))
    return Signed(termo, agent_pdf, stored, state_json, holder_pdf, sealed)


@pytest.fixture(scope="module")
def signed(pki, local_tsa, termo_pdf) -> Signed:
    return sign_three_times(pki, local_tsa, termo_pdf)


def validate(pki, pdf, **kwargs):
    from app.pki.pades import validate_pdf

    return validate_pdf(pdf, trust_roots_der=[pki.root.der], **kwargs)


def signatures(reports):
    return [r for r in reports if r.kind == "signature"]


def test_three_signatures_are_intact_valid_and_trusted(pki, signed):
    reports = validate(pki, signed.sealed, crls_der=pki.crls_der)
    sigs = signatures(reports)
    assert [r.field_name for r in sigs] == ["AgenteDeRegistro", "Titular", "SeloAR"]
    assert [r.signer_cn for r in sigs] == [
        "JOAO PEDRO ALBUQUERQUE:11122233396",
        "MARIA CONCEICAO DE ARAUJO GONCALVES:12345678909",
        "AR CARTORIO VIDEOAR TESTE:11222333000181"]
    for r in sigs:
        assert (r.intact, r.valid, r.trusted, r.bottom_line) == (True, True, True, True), r
        assert r.indication == "PASSED", r
        assert r.timestamp_present and r.timestamp_valid, r
        assert r.validation_data_embedded and r.dss_present, r  # DSS with this signature's VRI
        assert abs(r.signing_time - r.claimed_signing_time) < timedelta(seconds=5)
    # the seal is last: later revisions only added validation data and the document timestamp
    seal = sigs[-1]
    assert seal.modification_level == "LTA_UPDATES"
    # … and the document timestamp that makes it B-LTA
    [doc_ts] = [r for r in reports if r.kind == "doc_timestamp"]
    assert doc_ts.field_name == "CarimboDoTempo"
    assert doc_ts.signer_cn == "Carimbo do Tempo VideoAR Teste"
    assert (doc_ts.intact, doc_ts.valid, doc_ts.trusted) == (True, True, True)
    assert doc_ts.validation_data_embedded
    assert doc_ts.timestamp_time >= seal.timestamp_time


def test_the_validation_data_is_in_the_dss(pki, signed):
    from asn1crypto import crl as asn1_crl
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import DocumentSecurityStore

    dss = DocumentSecurityStore.read_dss(PdfFileReader(io.BytesIO(signed.sealed)))
    crl_issuers = set()
    for ref in dss.crls:
        crl = asn1_crl.CertificateList.load(ref.get_object().data)
        crl_issuers.add(crl.issuer.native["common_name"])
    assert crl_issuers == {"AC Raiz VideoAR Teste", "AC VideoAR Teste"}
    cns = {c.subject.native["common_name"] for c in dss.load_certs()}
    assert {"AC VideoAR Teste", "Carimbo do Tempo VideoAR Teste", pki.holder.cert.subject
            .get_attributes_for_oid(NameOID.COMMON_NAME)[0].value} <= cns
    assert len(dss.vri_entries) == 4  # three signatures and the document timestamp


def test_earlier_revisions_stay_valid_at_each_step(pki, signed):
    after_agent = validate(pki, signed.agent, crls_der=pki.crls_der)
    assert [(r.field_name, r.bottom_line, r.coverage) for r in after_agent] == [
        ("AgenteDeRegistro", True, "ENTIRE_FILE")]
    after_holder = validate(pki, signed.holder, crls_der=pki.crls_der)
    assert [(r.field_name, r.bottom_line) for r in after_holder] == [
        ("AgenteDeRegistro", True), ("Titular", True)]
    assert after_holder[0].coverage == "ENTIRE_REVISION"
    assert not any(r.dss_present for r in after_holder)  # the seal brings the DSS


def test_external_signing_state_is_plain_json_and_fixed_at_prepare_time(pki, signed):
    from asn1crypto import cms

    state_json = signed.state_json
    for key, value in state_json.items():
        assert isinstance(value, (str, list)), key
        assert all(isinstance(v, str) for v in value) if isinstance(value, list) else True
    state = signed.state
    # the browser signs the DER of the SignedAttributes SET (tag 0x31), not a hash
    assert state.to_be_signed[0] == 0x31
    attrs = {a["type"].native: a["values"][0] for a in cms.CMSAttributes.load(state.to_be_signed)}
    assert set(attrs) == {"content_type", "message_digest", "signing_certificate_v2"}
    assert attrs["message_digest"].native == state.document_digest
    assert b"<" + b"0" * 64 in state.prepared_pdf  # the empty /Contents placeholder
    # the /M written at prepare time is the holder's claimed signing time in the final PDF
    [holder] = [r for r in validate(pki, signed.sealed, crls_der=pki.crls_der)
                if r.field_name == "Titular"]
    assert holder.claimed_signing_time == datetime.fromisoformat(state.signing_time)


def test_finish_external_refuses_a_wrong_signature(pki, signed):
    from app.pki.pades import finish_external

    state = signed.state
    before = state.prepared_pdf
    wrong = [
        webcrypto_sign(pki.agent.key, state.to_be_signed),          # another key
        webcrypto_sign(pki.holder.key, state.to_be_signed + b"x"),  # other data
        # the classic mistake: signing the SHA-256 of the DER (WebCrypto hashes it again)
        webcrypto_sign(pki.holder.key, state.to_be_signed_sha256),
        b"\0" * 256,
        b"",
    ]
    for signature in wrong:
        with pytest.raises(ValueError):
            finish_external(state, signature)
    assert state.prepared_pdf == before


def test_finish_external_refuses_a_tampered_state(pki, signed):
    import dataclasses

    from app.pki.pades import finish_external

    state = signed.state
    signature = webcrypto_sign(pki.holder.key, state.to_be_signed)
    pdf = bytearray(state.prepared_pdf)
    pdf[pdf.index(b"WeasyPrint")] = ord("w")  # the /Producer, inside the byte range
    with pytest.raises(ValueError):
        finish_external(dataclasses.replace(state, prepared_pdf=bytes(pdf)), signature)
    with pytest.raises(ValueError):
        finish_external(dataclasses.replace(state, reserved_region_start=10), signature)


def test_prepare_external_needs_an_rsa_certificate(pki, termo_pdf):
    from cryptography.hazmat.primitives.asymmetric import ec

    from app.pki.pades import prepare_external

    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert(_name("EC HOLDER"), key, pki.issuing, not_before=pki.now,
                 not_after=pki.now + timedelta(days=30), ku=dict(digital_signature=True))
    with pytest.raises(ValueError):
        prepare_external(termo_pdf, cert_der=der(cert), field_name="Titular", reason="x")


def test_a_tampered_byte_breaks_the_signatures(pki, signed):
    pdf = bytearray(signed.sealed)
    # a byte of the first revision's document information (WeasyPrint's /Producer), signed by all
    i = pdf.index(b"WeasyPrint")
    pdf[i] = ord("w")
    reports = validate(pki, bytes(pdf), crls_der=pki.crls_der)
    sigs = signatures(reports)
    assert len(sigs) == 3
    assert not any(r.intact for r in sigs)
    assert not any(r.bottom_line for r in reports)


def test_long_term_validation_after_the_leaf_certificates_expired(pki, signed, termo_pdf,
                                                                  local_tsa):
    """A year later, after the agent's, holder's and seal's certificates expired: the signature
    timestamps prove the signatures existed while the certificates were valid, the CRLs in the
    DSS prove they were not revoked then, and the document timestamp proves that evidence
    existed then (PAdES B-LTA, ETSI EN 319 102-1 §5.6.3, pyHanko's ades_lta_validation).

    What pyHanko needs at that moment: the newest document timestamp must validate *now*, so
    the TSA's path needs revocation data current at the moment (as a verifier fetches it then;
    here passed in, offline). With only the embedded CRLs (stale by then) pyHanko says
    indeterminate: NO_POE for the signatures, TRY_LATER for the document timestamp — which is
    why an archive keeps extending the chain with new document timestamps before the TSA's
    certificate expires or the CRLs go stale."""
    moment = pki.leaf_expiry + timedelta(days=30)
    assert moment > pki.holder.cert.not_valid_after_utc
    assert moment < pki.tsa.cert.not_valid_after_utc

    fresh = validate(pki, signed.sealed, crls_der=pki.crls_at(moment - timedelta(days=1)),
                     moment=moment)
    sigs = signatures(fresh)
    assert len(sigs) == 3
    for r in sigs:
        assert (r.intact, r.valid, r.trusted, r.timestamp_valid) == (True, True, True, True), r
        assert r.indication == "PASSED", r
        assert r.signing_time < pki.leaf_expiry
    [doc_ts] = [r for r in fresh if r.kind == "doc_timestamp"]
    assert doc_ts.trusted

    embedded_only = validate(pki, signed.sealed, moment=moment)
    assert not any(r.trusted for r in embedded_only)
    assert {r.indication for r in signatures(embedded_only)} == {"NO_POE"}

    # without a timestamp a signature cannot outlive its certificate
    from app.pki.pades import sign_pdf

    plain = sign_pdf(termo_pdf, key=pki.agent.key, cert=pki.agent.cert, chain=pki.chain,
                     field_name="AgenteDeRegistro", reason="sem carimbo do tempo")
    [now] = validate(pki, plain, crls_der=pki.crls_der)
    assert now.bottom_line and not now.timestamp_present
    [later] = validate(pki, plain, crls_der=pki.crls_at(moment - timedelta(days=1)),
                       moment=moment)
    assert (later.intact, later.valid, later.trusted) == (True, True, False)


def test_a_revoked_holder_certificate_is_not_trusted(pki, signed):
    revoked = pki.crls_at(pki.now, revoked=[pki.holder.cert.serial_number])
    # the holder's signature only, before the seal embedded the clean CRLs
    reports = validate(pki, signed.holder, crls_der=revoked)
    by_field = {r.field_name: r for r in reports}
    assert by_field["AgenteDeRegistro"].trusted
    assert by_field["Titular"].intact and by_field["Titular"].valid
    assert not by_field["Titular"].trusted


def test_the_seal_goes_on_when_an_earlier_signature_does_not_validate(pki, local_tsa, signed):
    from app.pki.pades import make_validation_context, seal_pdf

    revoked = pki.crls_at(pki.now, revoked=[pki.holder.cert.serial_number])
    sealed = seal_pdf(signed.holder, key=pki.office.key, cert=pki.office.cert, chain=pki.chain,
                      timestamper=local_tsa.timestamper(),
                      validation_context=make_validation_context([pki.root.cert], revoked))
    by_field = {r.field_name: r for r in validate(pki, sealed, crls_der=revoked)}
    assert by_field["SeloAR"].bottom_line and by_field["AgenteDeRegistro"].bottom_line
    assert by_field["AgenteDeRegistro"].validation_data_embedded
    holder = by_field["Titular"]
    assert holder.intact and holder.valid
    assert not holder.trusted and not holder.validation_data_embedded


def test_the_fast_hex_string_reader_reads_as_pyhanko_does():
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.misc import PdfStreamError

    import app.pki.pades  # noqa: F401 - installs the reader

    fast = generic.read_hex_string_from_stream
    original = fast.original
    samples = [b"<48656C6c6f> 1 0 R", b"<48 65\n6c\r\n6c\t6f>]", b"<486>/Next", b"<>>>",
               b"<48 % a comment\n65>end", b"<" + b"ab" * 70000 + b">tail"]
    for raw in samples:
        a, b = io.BytesIO(raw), io.BytesIO(raw)
        assert fast(a).original_bytes == original(b).original_bytes, raw[:30]
        assert a.tell() == b.tell() and a.read() == b.read()
    for raw in (b"<48zz>", b"<4865"):
        with pytest.raises(PdfStreamError):
            original(io.BytesIO(raw))
        with pytest.raises(PdfStreamError):
            fast(io.BytesIO(raw))


# --- pdfsig (poppler + NSS) ---------------------------------------------------------------------

@pytest.mark.skipif(not (shutil.which("pdfsig") and shutil.which("certutil")),
                    reason="needs poppler-utils (pdfsig) and libnss3-tools (certutil)")
def test_pdfsig_says_valid_and_trusted(pki, signed, tmp_path):
    nss = tmp_path / "nss"
    nss.mkdir()
    (tmp_path / "root.der").write_bytes(pki.root.der)
    subprocess.run(["certutil", "-N", "-d", f"sql:{nss}", "--empty-password"], check=True)
    subprocess.run(["certutil", "-A", "-d", f"sql:{nss}", "-n", "raiz-teste", "-t", "CT,C,C",
                    "-i", str(tmp_path / "root.der")], check=True)
    pdf = tmp_path / "termo.pdf"
    pdf.write_bytes(signed.sealed)
    out = subprocess.run(["pdfsig", "-nssdir", f"sql:{nss}", "-no-ocsp", str(pdf)],
                         capture_output=True, text=True, timeout=60)
    blocks = out.stdout.split("Signature #")[1:]
    assert len(blocks) == 4, out.stdout + out.stderr
    for block, field in zip(blocks[:3], ["AgenteDeRegistro", "Titular", "SeloAR"]):
        assert f"Signature Field Name: {field}" in block
        assert "Signature Type: ETSI.CAdES.detached" in block
        assert "Signature Validation: Signature is Valid." in block, block
        assert "Certificate Validation: Certificate is Trusted." in block, block
    # poppler 22.12 (Debian 12) does not check document timestamps (ETSI.RFC3161): it lists
    # the field, "Signature Type: unknown", and says so on stderr
    assert "Signature Field Name: CarimboDoTempo" in blocks[3]
    if "Signature has not yet been verified." in blocks[3]:
        assert "Unable to validate this type of signature" in out.stderr
    else:
        assert "Signature is Valid." in blocks[3], blocks[3]

    tampered = bytearray(signed.sealed)
    tampered[tampered.index(b"WeasyPrint")] = ord("w")
    pdf.write_bytes(bytes(tampered))
    out = subprocess.run(["pdfsig", "-nssdir", f"sql:{nss}", "-no-ocsp", str(pdf)],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.count("Signature Validation: Digest Mismatch.") == 3, out.stdout
    assert "Signature is Valid." not in out.stdout
