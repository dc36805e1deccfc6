"""The CMP connector against OpenSSL's own CMP mock server (`openssl cmp -port ...`).

The mock server answers every enrolment with one prepared certificate (the holder's, issued
by the test PKI's issuing CA), so these tests check the protocol: protection both ways,
transaction and nonce checks, polling, confirmation, rejection and revocation. A relay
between client and server records the message types and can replay old answers.
"""
import json
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from pyasn1.codec.der import decoder
from pyasn1_modules import rfc4210

from app.pki.authority import CertificateAuthority, CertificateAuthorityError
from app.pki.cmp import CmpCA, parse_dn
from tests.support.cmp_server import CmpRelay, MockCmpServer, StubHttpServer, issue, make_pki
from tests.support.processes import free_port

SECRET = b"pbm-shared-secret"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("cmp-pki"))


@pytest.fixture
def serve(pki):
    """serve(secret=..., signed=..., extra=[...]) → (mock server, relay in front of it)."""
    running = []

    def start(**options):
        server = MockCmpServer(pki, **options).start()
        running.append(server)
        relay = CmpRelay(server.url).start()
        running.append(relay)
        return server, relay

    yield start
    for item in reversed(running):
        item.stop()
        if isinstance(item, MockCmpServer):
            print(f"--- {item.log_path}\n{item.log()}")  # shown when a test fails


def pbm_client(pki, url, secret=SECRET, **options):
    options.setdefault("timeout", 5)
    options.setdefault("trusted_der", [pki.der(pki.root)])
    return CmpCA(url, recipient=pki.server_dn, reference="videoar-ra", secret=secret, **options)


def signing_client(pki, url, trusted=None, **options):
    options.setdefault("timeout", 5)
    return CmpCA(url, recipient=pki.server_dn, client_cert_der=pki.der(pki.client_cert),
                 client_key=pki.client_key, trusted_der=trusted or [pki.der(pki.root)], **options)


def decode(message: bytes):
    return decoder.decode(message, asn1Spec=rfc4210.PKIMessage())[0]


def other_csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Somebody Else")]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("signed", [False, True], ids=["pbm", "signature"])
def test_the_fixture_serves_openssls_own_client(pki, serve, signed):
    server, _ = serve(signed=True) if signed else serve(secret=SECRET)
    out = pki.dir / f"openssl-client-{signed}.pem"
    protection = (["-cert", pki.path("client.pem"), "-key", pki.path("client.key"),
                   "-trusted", pki.path("root.pem")] if signed
                  else ["-ref", "ra", "-secret", "pass:" + SECRET.decode()])
    result = subprocess.run(
        ["openssl", "cmp", "-server", f"127.0.0.1:{server.port}", "-path", "pkix/", "-cmd", "p10cr",
         "-csr", pki.path("csr.der"), "-recipient", pki.server_dn, "-certout", str(out),
         *protection], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert x509.load_pem_x509_certificate(out.read_bytes()) == pki.ee_cert


def test_p10cr_with_pbm_issues_the_certificate_and_confirms_it(pki, serve):
    _, relay = serve(secret=SECRET)
    ca = pbm_client(pki, relay.url)
    assert isinstance(ca, CertificateAuthority) and not ca.homologation

    submission = ca.submit(pki.csr_der, None, None)

    assert submission.status == "issued", submission.message
    assert submission.certificate_der == pki.der(pki.ee_cert)
    assert submission.chain_der == [pki.der(pki.issuing), pki.der(pki.root)]
    # certConf went out and the server accepted it (pkiConf; a wrong hash gets an error)
    assert relay.kinds() == ["p10cr", "cp", "certConf", "pkiconf"]
    request = decode(relay.exchanges[0][0])
    assert pki.csr_der in relay.exchanges[0][0]                      # the holder's request as it is
    assert str(request["header"]["protectionAlg"]["algorithm"]) == "1.2.840.113533.7.66.13"
    assert bytes(request["header"]["senderKID"]) == b"videoar-ra"
    assert bytes(request["header"]["transactionID"]).hex() == submission.reference
    confirmation = decode(relay.exchanges[1][0])
    status = confirmation["body"]["certConf"][0]
    assert bytes(status["certHash"]) == pki.ee_cert.fingerprint(hashes.SHA256())
    assert int(status["statusInfo"]["status"]) == 0
    # the transaction's outcome can be asked for again
    assert ca.status(submission.reference).status == "issued"
    assert ca.retrieve(submission.reference) == pki.der(pki.ee_cert)


def test_p10cr_with_signature_protection(pki, serve):
    _, relay = serve(signed=True)
    submission = signing_client(pki, relay.url).submit(pki.csr_der, None, None)
    assert submission.status == "issued", submission.message
    assert submission.certificate_der == pki.der(pki.ee_cert)
    assert relay.kinds() == ["p10cr", "cp", "certConf", "pkiconf"]
    header = decode(relay.exchanges[1][1])["header"]  # the server's pkiConf: signed, not MAC'd
    assert str(header["protectionAlg"]["algorithm"]) == "1.2.840.10045.4.3.2"


def test_signature_protection_with_an_rsa_key(pki, serve):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = issue(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "VideoAR RA (RSA)")]),
                 key.public_key(), pki.root.subject, pki.root_key, ca=False)
    _, relay = serve(signed=True)
    ca = CmpCA(relay.url, recipient=pki.server_dn, client_cert_der=pki.der(cert),
               client_key=key.private_bytes(serialization.Encoding.PEM,  # PEM works too
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()),
               trusted_der=[pki.der(pki.root)])
    assert ca.submit(pki.csr_der, None, None).certificate_der == pki.der(pki.ee_cert)
    header = decode(relay.exchanges[0][0])["header"]
    assert str(header["protectionAlg"]["algorithm"]) == "1.2.840.113549.1.1.11"


def test_signed_answers_from_a_ca_we_do_not_trust_are_refused(pki, serve):
    _, relay = serve(signed=True)
    ca = signing_client(pki, relay.url, trusted=[pki.der(pki.other_root)])
    with pytest.raises(CertificateAuthorityError, match="signature does not verify"):
        ca.submit(pki.csr_der, None, None)
    assert relay.kinds() == ["p10cr", "cp"]  # the server did its part; we refused its answer


def test_wrong_shared_secret_is_an_error(pki, serve):
    _, relay = serve(secret=SECRET)
    with pytest.raises(CertificateAuthorityError, match="bad protection"):
        pbm_client(pki, relay.url, secret=b"not the secret").submit(pki.csr_der, None, None)
    assert relay.kinds() == ["p10cr", "error"]  # the server refused our MAC


def test_an_answer_whose_protection_does_not_verify_is_refused(pki, serve):
    # the server takes our request whatever its protection, and MACs its answer with its own
    # secret: the answer is a certificate, but nothing proves it comes from our CA
    _, relay = serve(secret=b"the server's other secret", extra=["-accept_unprotected"])
    with pytest.raises(CertificateAuthorityError, match="MAC does not match"):
        pbm_client(pki, relay.url).submit(pki.csr_der, None, None)
    assert relay.kinds() == ["p10cr", "cp"]


def test_an_unprotected_answer_is_refused(pki, serve):
    _, relay = serve(secret=SECRET, extra=["-send_unprotected"])
    with pytest.raises(CertificateAuthorityError, match="unprotected"):
        pbm_client(pki, relay.url).submit(pki.csr_der, None, None)


def test_rejection_comes_back_with_the_cas_text(pki, serve):
    _, relay = serve(secret=SECRET, extra=["-pkistatus", "2", "-failure", "2",
                                           "-statusstring", "CPF em situação irregular"])
    submission = pbm_client(pki, relay.url).submit(pki.csr_der, None, None)
    assert submission.status == "rejected"
    assert submission.certificate_der is None
    assert "CPF em situação irregular" in submission.message and "badRequest" in submission.message
    assert relay.kinds() == ["p10cr", "cp"]  # nothing to confirm
    again = pbm_client(pki, relay.url).status(submission.reference)
    assert (again.status, again.message, again.certificate_der) == \
        ("rejected", submission.message, None)


def test_an_error_message_is_a_rejection(pki, serve):
    _, relay = serve(secret=SECRET, extra=["-send_error"])
    submission = pbm_client(pki, relay.url).submit(pki.csr_der, None, None)
    assert submission.status == "rejected"
    assert submission.message
    assert relay.kinds() == ["p10cr", "error"]


def test_polling_until_the_certificate_comes(pki, serve):
    _, relay = serve(secret=SECRET, extra=["-poll_count", "2", "-check_after", "0"])
    submission = pbm_client(pki, relay.url).submit(pki.csr_der, None, None)
    assert submission.status == "issued", submission.message
    assert submission.certificate_der == pki.der(pki.ee_cert)
    assert relay.kinds() == ["p10cr", "cp", "pollReq", "pollRep", "pollReq", "cp",
                             "certConf", "pkiconf"]


def test_polling_honours_check_after(pki, serve):
    _, relay = serve(secret=SECRET, extra=["-poll_count", "2", "-check_after", "1"])  # one pollRep
    started = time.monotonic()
    submission = pbm_client(pki, relay.url).submit(pki.csr_der, None, None)
    assert submission.status == "issued", submission.message
    assert time.monotonic() - started >= 1.0
    assert relay.kinds().count("pollRep") == 1


def test_a_long_wait_is_pending_and_status_polls_later(pki, serve):
    _, relay = serve(secret=SECRET, extra=["-poll_count", "3", "-check_after", "30"])
    store = {}
    ca = pbm_client(pki, relay.url, max_wait=1, state=store)

    submission = ca.submit(pki.csr_der, None, None)
    assert submission.status == "pending"
    assert "30 s" in submission.message
    assert len(bytes.fromhex(submission.reference)) == 16
    with pytest.raises(CertificateAuthorityError, match="pending"):
        ca.retrieve(submission.reference)  # one more poll: still waiting

    # another connector takes the transaction up where it was, from plain data (as JSON)
    later = pbm_client(pki, relay.url, state=json.loads(json.dumps(store)))
    final = later.status(submission.reference)
    assert final.status == "issued", final.message
    assert final.certificate_der == pki.der(pki.ee_cert)
    assert later.retrieve(submission.reference) == pki.der(pki.ee_cert)
    assert relay.kinds() == ["p10cr", "cp", "pollReq", "pollRep", "pollReq", "pollRep",
                             "pollReq", "cp", "certConf", "pkiconf"]


def test_unknown_reference(pki):
    ca = pbm_client(pki, "http://127.0.0.1:9/")
    with pytest.raises(CertificateAuthorityError, match="unknown"):
        ca.status("00" * 16)
    with pytest.raises(CertificateAuthorityError, match="unknown"):
        ca.retrieve("00" * 16)


def test_a_certificate_for_another_key_is_refused_with_a_negative_certconf(pki, serve):
    _, relay = serve(secret=SECRET)
    with pytest.raises(CertificateAuthorityError, match="public key"):
        pbm_client(pki, relay.url).submit(other_csr(), None, None)
    assert relay.kinds() == ["p10cr", "cp", "certConf", "pkiconf"]
    status = decode(relay.exchanges[1][0])["body"]["certConf"][0]
    assert int(status["statusInfo"]["status"]) == 2


def test_a_certificate_that_does_not_chain_to_our_trusted_ca_is_refused(pki, serve):
    _, relay = serve(secret=SECRET)
    ca = pbm_client(pki, relay.url, trusted_der=[pki.der(pki.other_root)])
    with pytest.raises(CertificateAuthorityError, match="chain"):
        ca.submit(pki.csr_der, None, None)
    status = decode(relay.exchanges[1][0])["body"]["certConf"][0]
    assert int(status["statusInfo"]["status"]) == 2


def test_a_replayed_answer_of_another_transaction_is_refused(pki, serve):
    _, relay = serve(secret=SECRET)
    ca = pbm_client(pki, relay.url)
    assert ca.submit(pki.csr_der, None, None).status == "issued"
    relay.tamper = lambda index, request, answer, done: done[0][1]  # the first cp, again
    with pytest.raises(CertificateAuthorityError, match="transactionID"):
        ca.submit(pki.csr_der, None, None)


def test_a_replayed_answer_within_the_transaction_is_refused(pki, serve):
    _, relay = serve(secret=SECRET, extra=["-poll_count", "2", "-check_after", "0"])

    def replay_poll_rep(index, request, answer, done):
        return done[1][1] if index == 2 else answer  # the second pollReq gets the first pollRep

    relay.tamper = replay_poll_rep
    with pytest.raises(CertificateAuthorityError, match="recipNonce"):
        pbm_client(pki, relay.url).submit(pki.csr_der, None, None)


def test_revocation(pki, serve):
    _, relay = serve(secret=SECRET)
    pbm_client(pki, relay.url).revoke(pki.der(pki.ee_cert), "key_compromise")
    assert relay.kinds() == ["rr", "rp"]
    details = decode(relay.exchanges[0][0])["body"]["rr"][0]
    assert int(details["certDetails"]["serialNumber"]) == pki.ee_cert.serial_number
    reason = details["crlEntryDetails"][0]
    assert str(reason["extnID"]) == "2.5.29.21" and bytes(reason["extnValue"]) == b"\x0a\x01\x01"


def test_revocation_with_signature_protection(pki, serve):
    _, relay = serve(signed=True)
    signing_client(pki, relay.url).revoke(pki.der(pki.ee_cert), "superseded")
    assert relay.kinds() == ["rr", "rp"]


def test_revocation_refused(pki, serve):
    _, relay = serve(secret=SECRET)  # the mock server revokes only its prepared certificate
    with pytest.raises(CertificateAuthorityError, match="refused the revocation"):
        pbm_client(pki, relay.url).revoke(pki.der(pki.client_cert), "unspecified")
    with pytest.raises(ValueError):
        pbm_client(pki, relay.url).revoke(pki.der(pki.ee_cert), "because")


def test_unreachable_server(pki):
    ca = pbm_client(pki, f"http://127.0.0.1:{free_port()}/pkix/")
    with pytest.raises(CertificateAuthorityError, match="cannot reach"):
        ca.submit(pki.csr_der, None, None)
    with pytest.raises(CertificateAuthorityError, match="cannot reach"):
        ca.revoke(pki.der(pki.ee_cert), "unspecified")


@pytest.mark.parametrize("stub, error", [
    (dict(status=500, body=b"boom"), "HTTP 500"),
    (dict(content_type="text/html", body=b"<html>login</html>"), "text/html"),
    (dict(body=b"\x30\x03\x02\x01\x02"), "unreadable"),
    (dict(delay=2.0), "cannot reach"),  # our timeout is 0.5 s
])
def test_transport_and_format_errors(pki, stub, error):
    with StubHttpServer(**stub) as server:
        ca = pbm_client(pki, server.url, timeout=0.5)
        with pytest.raises(CertificateAuthorityError, match=error):
            ca.submit(pki.csr_der, None, None)


def test_configuration_and_input_checks(pki):
    with pytest.raises(ValueError, match="secret"):
        CmpCA("http://127.0.0.1/", recipient="/CN=CA")
    with pytest.raises(ValueError, match="http"):
        CmpCA("file:///etc/passwd", recipient="/CN=CA", secret=SECRET)
    with pytest.raises(CertificateAuthorityError, match="PKCS#10"):
        pbm_client(pki, "http://127.0.0.1:9/").submit(b"not a request", None, None)
    assert parse_dn("/C=BR/O=ICP-Brasil/CN=AC Exemplo") == \
        parse_dn("CN=AC Exemplo,O=ICP-Brasil,C=BR")
    assert parse_dn("/CN=a\\/b").rfc4514_string() == "CN=a/b"
    assert parse_dn("") == x509.Name([])
    with pytest.raises(ValueError):
        parse_dn("/XX=1")
