"""The holder's side of an A1 issuance in Debian's Chromium: app/static/js/issuance-crypto.js.

A phone (Pixel 7) opens a blank page that loads only vendored forge and issuance-crypto.js,
served from 127.0.0.1 (a secure context, so WebCrypto works) with the app's own
Content-Security-Policy. The page generates the key pair and the CSR; Python checks the CSR,
issues a certificate for it with a test CA (root → intermediate → leaf), sends the certificate
and chain back; the page builds the PKCS#12, which Python's `cryptography` and OpenSSL open.
The private key stays in the page: nothing but the page and its two scripts is requested.
"""
import base64
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from app import CSP
from tests.support.processes import ROOT
from tests.support.static_server import StaticServer

pytestmark = pytest.mark.browser

STATIC = ROOT / "app" / "static"
FORGE = sorted((STATIC / "vendor").glob("forge-*.min.js"))
COMMON_NAME = "FULANO DE TAL:12345678909"
PASSWORD = "Senha1234"


def _csp_header() -> str:
    return "; ".join(f"{name} {value if isinstance(value, str) else ' '.join(value)}"
                     for name, value in CSP.items())


BLANK = f"""<!doctype html>
<html lang="pt-BR"><head><meta charset="utf-8"><title>Emissão</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<script src="/vendor/{FORGE[0].name if FORGE else 'forge-missing.min.js'}"></script>
<script src="/js/issuance-crypto.js"></script>
</head><body></body></html>"""

# Records CSP refusals (an eval in forge would be one). Playwright injects init scripts
# itself, so the page's CSP does not apply to this one.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  const {violatedDirective, blockedURI, sourceFile, lineNumber} = e;
  window.__cspViolations.push(`${violatedDirective} ${blockedURI} ${sourceFile}:${lineNumber}`);
});
"""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def holder(browser, playwright):
    """The holder's phone on the blank page, with a key pair in `window.__keys`. Yields the
    page; `page.requests` lists every request, `page.problems` every error the browser
    reported (console errors include CSP refusals)."""
    assert len(FORGE) == 1, f"expected one vendored forge, found {FORGE}"
    headers = {"Content-Security-Policy": _csp_header(), "X-Content-Type-Options": "nosniff"}
    with StaticServer(STATIC, pages={"/blank.html": BLANK}, headers=headers) as server:
        context = browser.new_context(**playwright.devices["Pixel 7"], locale="pt-BR")
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.requests, page.problems = [], []
        page.on("request", lambda r: page.requests.append((r.method, r.url, r.resource_type)))
        page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
        page.on("pageerror", lambda exc: page.problems.append(f"page error: {exc}"))
        page.add_init_script(RECORD_CSP_VIOLATIONS)
        page.server = server
        page.goto(server.url + "/blank.html")
        assert page.evaluate("window.isSecureContext")
        assert page.evaluate("typeof window.VideoARKeys.generateKeyPair") == "function"
        page.evaluate("async () => { window.__keys = await VideoARKeys.generateKeyPair(); }")
        yield page
        problems = list(page.problems)
        context.close()
    assert not problems, "the browser reported errors:\n" + "\n".join(problems)


def _csr(page, common_name=COMMON_NAME) -> x509.CertificateSigningRequest:
    csr_b64 = page.evaluate("(cn) => VideoARKeys.buildCsr(window.__keys, {commonName: cn})",
                            common_name)
    return x509.load_der_x509_csr(base64.b64decode(csr_b64))


def _exported_private_key(page) -> rsa.RSAPrivateKey:
    """Test only: the page's private key, to check what the CSR and the PKCS#12 hold."""
    pkcs8_b64 = page.evaluate("""async () => VideoARKeys.bytesToB64(
        await crypto.subtle.exportKey("pkcs8", window.__keys.privateKey))""")
    return serialization.load_der_private_key(base64.b64decode(pkcs8_b64), None)


def test_the_key_pair_is_webcrypto_rsa_2048_and_the_csr_is_signed_by_it(holder):
    key = holder.evaluate("""() => {
        const {privateKey, publicKey} = window.__keys;
        return {type: privateKey.type, name: privateKey.algorithm.name,
                bits: privateKey.algorithm.modulusLength,
                exponent: Array.from(privateKey.algorithm.publicExponent),
                hash: privateKey.algorithm.hash.name, extractable: privateKey.extractable,
                usages: [...privateKey.usages, ...publicKey.usages].sort()};
    }""")
    assert key == {"type": "private", "name": "RSASSA-PKCS1-v1_5", "bits": 2048,
                   "exponent": [1, 0, 1], "hash": "SHA-256", "extractable": True,
                   "usages": ["sign", "verify"]}

    csr = _csr(holder)
    assert csr.is_signature_valid
    assert csr.signature_algorithm_oid == x509.SignatureAlgorithmOID.RSA_WITH_SHA256
    public_key = csr.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert public_key.key_size == 2048
    assert public_key.public_numbers().e == 65537
    assert csr.subject.rfc4514_string() == f"CN={COMMON_NAME}"
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == COMMON_NAME
    assert len(csr.attributes) == 0

    # The CSR carries WebCrypto's own SubjectPublicKeyInfo, byte for byte.
    spki_b64 = holder.evaluate("""async () => VideoARKeys.bytesToB64(
        await crypto.subtle.exportKey("spki", window.__keys.publicKey))""")
    assert public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo
                                   ) == base64.b64decode(spki_b64)

    # ... and, obviously, none of the private key: neither its PKCS#8 nor d, p or q.
    csr_der = csr.public_bytes(serialization.Encoding.DER)
    private = _exported_private_key(holder)
    assert private.public_key().public_numbers() == public_key.public_numbers()
    numbers = private.private_numbers()
    for secret in (numbers.d, numbers.p, numbers.q, numbers.dmp1, numbers.dmq1):
        assert secret.to_bytes((secret.bit_length() + 7) // 8, "big") not in csr_der
    assert private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()) not in csr_der


def test_a_name_with_accents_goes_into_the_csr_as_utf8(holder):
    name = "JOSÉ DA CONCEIÇÃO:52998224725"
    csr = _csr(holder, name)
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
    assert name.encode("utf-8") in csr.public_bytes(serialization.Encoding.DER)


# ---- a test CA: root → intermediate → the holder's certificate ---------------------------

def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "BR"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ICP-Brasil (teste)"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca_cert(subject, key, issuer, issuer_key, path_length):
    now = datetime.now(timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(issuer_key, hashes.SHA256()))


@pytest.fixture(scope="module")
def test_ca():
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = _ca_cert(_name("AC Raiz de Teste"), root_key, _name("AC Raiz de Teste"), root_key, 1)
    issuing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issuing = _ca_cert(_name("AC Final de Teste"), issuing_key, root.subject, root_key, 0)
    return issuing, issuing_key, root


def _issue(test_ca, csr_or_public_key, subject):
    issuing, issuing_key, _ = test_ca
    public_key = getattr(csr_or_public_key, "public_key", lambda: csr_or_public_key)()
    now = datetime.now(timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuing.subject)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True,
                                         key_encipherment=True, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                                  ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                           critical=False)
            .sign(issuing_key, hashes.SHA256()))


def _der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def issued(holder, test_ca):
    """The holder's certificate, issued for the page's CSR."""
    csr = _csr(holder)
    assert csr.is_signature_valid
    # The CA sets the subject: country and organization of its own, the CSR's CN.
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "BR"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ICP-Brasil (teste)"),
                         *csr.subject])
    return _issue(test_ca, csr, subject)


def _pkcs12(page, cert, chain, password=PASSWORD, friendly_name="FULANO DE TAL"):
    p12_b64 = page.evaluate("""async ([cert, chain, password, name]) => VideoARKeys.bytesToB64(
        await VideoARKeys.buildPkcs12(window.__keys, cert, chain, password, name))""",
                            [b64(_der(cert)), [b64(_der(c)) for c in chain], password,
                             friendly_name])
    return base64.b64decode(p12_b64)


def test_the_pkcs12_opens_with_the_password_in_cryptography_and_openssl(holder, test_ca,
                                                                        issued, tmp_path):
    issuing, _, root = test_ca
    data = _pkcs12(holder, issued, [issuing, root])

    p12 = pkcs12.load_pkcs12(data, PASSWORD.encode())
    assert p12.cert.certificate == issued
    assert p12.cert.friendly_name == "FULANO DE TAL".encode()
    assert [c.certificate for c in p12.additional_certs] == [issuing, root]
    assert p12.key.public_key().public_numbers() == issued.public_key().public_numbers()
    assert p12.key.private_numbers() == _exported_private_key(holder).private_numbers()
    # The key works: it signs what the certificate's key verifies.
    issued.public_key().verify(p12.key.sign(b"teste", padding.PKCS1v15(), hashes.SHA256()),
                               b"teste", padding.PKCS1v15(), hashes.SHA256())

    for wrong in (b"senha1234", b"Senha12345", b""):
        with pytest.raises(ValueError):
            pkcs12.load_pkcs12(data, wrong)

    path = tmp_path / "certificado.p12"
    path.write_bytes(data)
    version = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout
    assert version.startswith("OpenSSL 3.")
    info = subprocess.run(["openssl", "pkcs12", "-info", "-nokeys", "-in", str(path),
                           "-passin", f"pass:{PASSWORD}"], capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    report = info.stdout + info.stderr
    assert "MAC: sha1, Iteration 2048" in report
    assert "Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, Iteration 2048, PRF hmacWithSHA256" \
        in report
    assert report.count("-----BEGIN CERTIFICATE-----") == 3
    # OpenSSL 3 without the legacy provider: a default open, keys included, works too.
    keys = subprocess.run(["openssl", "pkcs12", "-in", str(path), "-nocerts", "-noenc",
                           "-passin", f"pass:{PASSWORD}"], capture_output=True, text=True)
    assert keys.returncode == 0, keys.stderr
    assert "-----BEGIN PRIVATE KEY-----" in keys.stdout
    wrong = subprocess.run(["openssl", "pkcs12", "-info", "-nokeys", "-in", str(path),
                            "-passin", "pass:errada"], capture_output=True, text=True)
    assert wrong.returncode != 0
    assert "mac verify" in wrong.stderr.lower()


def test_the_pkcs12_refuses_a_certificate_for_another_key(holder, test_ca, issued):
    issuing, _, root = test_ca
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = _issue(test_ca, other_key.public_key(), issued.subject)
    message = holder.evaluate("""async ([cert, chain]) => {
        try { await VideoARKeys.buildPkcs12(window.__keys, cert, chain, "Senha1234", "x"); }
        catch (e) { return e.message; }
    }""", [b64(_der(other)), [b64(_der(issuing)), b64(_der(root))]])
    assert message == "VideoARKeys.buildPkcs12: the certificate is not for this key pair"


def test_sign_data_makes_a_pkcs1_sha256_signature_the_certificate_verifies(holder, issued):
    data = "Atributos assinados do CMS — çãé".encode() + bytes(range(256))
    signature_b64 = holder.evaluate("""async (b64) => VideoARKeys.bytesToB64(
        await VideoARKeys.signData(window.__keys, VideoARKeys.b64ToBytes(b64)))""", b64(data))
    signature = base64.b64decode(signature_b64)
    assert len(signature) == 256
    issued.public_key().verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(InvalidSignature):
        issued.public_key().verify(signature, data + b"!", padding.PKCS1v15(), hashes.SHA256())


def test_download_saves_the_bytes_as_a_file(holder, test_ca, issued):
    issuing, _, root = test_ca
    data = _pkcs12(holder, issued, [issuing, root])
    with holder.expect_download() as download_info:
        holder.evaluate("""(b64) => VideoARKeys.download(VideoARKeys.b64ToBytes(b64),
                                                         "certificado.p12",
                                                         "application/x-pkcs12")""", b64(data))
    download = download_info.value
    assert download.suggested_filename == "certificado.p12"
    with open(download.path(), "rb") as f:
        assert f.read() == data


def test_the_page_requested_only_its_scripts_and_broke_no_rule(holder):
    """After everything above on the holder's page, the only requests were the page and its two
    scripts (the download is a blob: URL, made in the page), and the browser reported no
    error and no CSP refusal — forge needs no eval under script-src 'self'."""
    base = holder.server.url
    http = sorted((method, url, kind) for method, url, kind in holder.requests
                  if not url.startswith("blob:"))
    assert http == sorted([("GET", f"{base}/blank.html", "document"),
                           ("GET", f"{base}/vendor/{FORGE[0].name}", "script"),
                           ("GET", f"{base}/js/issuance-crypto.js", "script")])
    assert all(url.startswith(f"blob:{base}/") for _, url, _ in holder.requests
               if url.startswith("blob:"))
    # What the server saw, which includes what the browser fetches on its own (a favicon).
    assert sorted(holder.server.requests) == sorted([
        ("GET", "/blank.html"), ("GET", f"/vendor/{FORGE[0].name}"),
        ("GET", "/js/issuance-crypto.js")])
    assert holder.evaluate("window.__cspViolations") == []
    assert holder.problems == []


def test_the_csp_is_in_force_so_an_eval_would_have_been_caught(browser):
    """The check above means something: on the same kind of page, a script that evals is
    refused and recorded."""
    evals = ("text/javascript", 'window.result = (() => {\n'
             '  try { return eval("1 + 1"); } catch (e) { return e.name; }\n})();')
    page_html = BLANK.replace("</head>", '<script src="/evals.js"></script></head>')
    with StaticServer(STATIC, pages={"/blank.html": page_html, "/evals.js": evals},
                      headers={"Content-Security-Policy": _csp_header()}) as server:
        context = browser.new_context()
        page = context.new_page()
        page.add_init_script(RECORD_CSP_VIOLATIONS)
        page.goto(server.url + "/blank.html")
        assert page.evaluate("window.result") == "EvalError"
        assert page.evaluate("window.__cspViolations") == [
            f"script-src eval {server.url}/evals.js:2"]
        context.close()
