"""The built-in RFC 3161 timestamp authority (app/pki/tsa.py): LocalTSA.respond answers DER
requests with DER responses — granted tokens that verify against the TSA certificate, or
rejections with the right failInfo, never an exception — and HttpTSA reaches a TSA over HTTP
(here a tiny server on 127.0.0.1 in front of a LocalTSA)."""
import asyncio
import base64
import hashlib
import os
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from asn1crypto import core, tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from tests.test_pki_pades import _cert, _name, build_pki


@pytest.fixture(scope="module")
def pki():
    return build_pki()


@pytest.fixture(scope="module")
def tsa(pki):
    from app.pki.tsa import LocalTSA

    return LocalTSA(pki.tsa.cert, pki.tsa.key, pki.chain)


def request(data: bytes = b"termo", *, algorithm="sha256", nonce=None, cert_req=True,
            policy=None, extensions=None, digest=None) -> bytes:
    if digest is None:
        digest = hashlib.new(algorithm, data).digest()
    req = {
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": algorithm}, "hashed_message": digest},
        "cert_req": cert_req,
    }
    if nonce is not None:
        req["nonce"] = nonce
    if policy is not None:
        req["req_policy"] = policy
    if extensions is not None:
        req["extensions"] = extensions
    return tsp.TimeStampReq(req).dump()


def parse(response_der: bytes):
    from app.pki.tsa import TimeStampResp

    resp = TimeStampResp.load(response_der)
    status = resp["status"]
    return resp, status["status"].native, status["fail_info"].native, status["status_string"].native


def has_token(resp) -> bool:
    return resp["time_stamp_token"].native is not None


def signed_attrs_der(signer) -> bytes:
    """The DER the signer signed: signedAttrs with the SET tag instead of [0] IMPLICIT."""
    return b"\x31" + signer["signed_attrs"].dump()[1:]


def tst_info(resp) -> tsp.TSTInfo:
    return resp["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed


def test_granted_token_echoes_the_request(tsa, pki):
    nonce = int.from_bytes(os.urandom(8), "big")
    before = datetime.now(timezone.utc)
    resp, status, fail, _ = parse(tsa.respond(request(b"termo", nonce=nonce)))
    assert status == "granted" and fail is None
    info = tst_info(resp)
    assert info["version"].native == "v1"
    assert info["nonce"].native == nonce
    assert info["message_imprint"]["hashed_message"].native == hashlib.sha256(b"termo").digest()
    assert info["message_imprint"]["hash_algorithm"]["algorithm"].native == "sha256"
    assert info["policy"].native == tsa.policy_oid
    assert before - timedelta(seconds=1) <= info["gen_time"].native <= datetime.now(timezone.utc)
    assert info["accuracy"]["seconds"].native == 1
    assert info["tsa"].chosen.native["common_name"] == "Carimbo do Tempo VideoAR Teste"
    # certReq: the TSA certificate and its chain come along
    certs = resp["time_stamp_token"]["content"]["certificates"]
    assert {c.chosen.subject.native["common_name"] for c in certs} == {
        "Carimbo do Tempo VideoAR Teste", "AC VideoAR Teste", "AC Raiz VideoAR Teste"}


def test_serial_numbers_are_unique(tsa):
    serials = {tst_info(parse(tsa.respond(request(bytes([i]))))[0])["serial_number"].native
               for i in range(50)}
    assert len(serials) == 50
    assert all(0 < s < 2 ** 160 for s in serials)  # RFC 3161: up to 160 bits


def test_other_hash_algorithms_and_no_cert_req(tsa):
    for algorithm in ("sha384", "sha512"):
        resp, status, *_ = parse(tsa.respond(request(algorithm=algorithm)))
        assert status == "granted"
        assert tst_info(resp)["message_imprint"]["hash_algorithm"]["algorithm"].native == algorithm
    resp, status, *_ = parse(tsa.respond(request(cert_req=False)))
    assert status == "granted"
    assert not resp["time_stamp_token"]["content"]["certificates"].native
    assert tst_info(resp)["nonce"].native is None


def test_token_verifies_against_the_tsa_certificate(tsa, pki):
    resp, status, *_ = parse(tsa.respond(request(b"termo", nonce=42)))
    signed_data = resp["time_stamp_token"]["content"]
    [signer] = signed_data["signer_infos"]
    sid = signer["sid"].chosen
    assert sid["serial_number"].native == pki.tsa.cert.serial_number
    content = signed_data["encap_content_info"]["content"].contents
    attrs = {a["type"].native: a["values"][0] for a in signer["signed_attrs"]}
    assert attrs["content_type"].native == "tst_info"
    assert attrs["message_digest"].native == hashlib.sha256(content).digest()
    # RFC 5816 ESSCertIDv2: the token names the TSA certificate by its SHA-256
    [cert_id] = attrs["signing_certificate_v2"]["certs"]
    assert cert_id["cert_hash"].native == hashlib.sha256(
        pki.tsa.cert.public_bytes(serialization.Encoding.DER)).digest()
    # the signature over the signed attributes (as a SET) with the TSA's public key
    pki.tsa.cert.public_key().verify(signer["signature"].native, signed_attrs_der(signer),
                                     padding.PKCS1v15(), hashes.SHA256())

    # and pyHanko's own check of a timestamp token: signature, ESS binding, EKU timeStamping,
    # the chain up to the trusted root with the CRLs
    from pyhanko.sign.validation.generic_cms import validate_tst_signed_data

    from app.pki.pades import make_validation_context

    context = make_validation_context([pki.root.cert], pki.crls_der)
    result = asyncio.run(validate_tst_signed_data(
        signed_data, context, lambda algorithm: hashlib.new(algorithm, b"termo").digest()))
    assert result["intact"] and result["valid"]
    assert result["trust_problem_indic"] is None and result["validation_path"] is not None
    bad = asyncio.run(validate_tst_signed_data(
        signed_data, context, lambda algorithm: hashlib.new(algorithm, b"outro").digest()))
    assert not bad["intact"]


def test_bad_hash_algorithm_is_rejected(tsa):
    for algorithm in ("md5", "sha1", "sha224"):
        resp, status, fail, text = parse(tsa.respond(request(algorithm=algorithm)))
        assert status == "rejection"
        assert fail == {"bad_alg"}
        assert "not accepted" in text[0]
        assert not has_token(resp)


@pytest.mark.parametrize("body, failure", [
    (b"", "bad_request"),
    (b"not DER at all", "bad_request"),
    (b"\x30\x03\x02\x01\x01", "bad_request"),                      # a SEQUENCE, not a request
    (b"\x30" * 20000, "bad_request"),                                # far too large
    (request(digest=b"\x00" * 20), "bad_data_format"),            # 20 bytes for SHA-256
    (request(policy="1.2.3.4.5"), "unaccepted_policy"),
    (request(extensions=[{"extn_id": "1.2.3.4", "critical": False,
                          "extn_value": core.OctetString(b"x").dump()}]),
     "unaccepted_extensions"),
])
def test_bad_requests_get_a_rejection_not_an_exception(tsa, body, failure):
    resp, status, fail, _ = parse(tsa.respond(body))
    assert status == "rejection"
    assert fail == {failure}
    assert not has_token(resp)


def test_version_2_request_is_rejected(tsa):
    req = tsp.TimeStampReq.load(request())
    der = bytearray(req.dump())
    # version INTEGER 1 → 2 (the first field of the SEQUENCE: 02 01 01)
    i = der.index(b"\x02\x01\x01")
    der[i + 2] = 2
    _, status, fail, _ = parse(tsa.respond(bytes(der)))
    assert (status, fail) == ("rejection", {"bad_request"})


def test_the_policy_asked_for_is_accepted_when_it_is_ours(tsa):
    resp, status, *_ = parse(tsa.respond(request(policy=tsa.policy_oid)))
    assert status == "granted"


def test_an_ec_key_signs_with_ecdsa(pki):
    from app.pki.tsa import LocalTSA

    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert(_name("TSA EC Teste", "TSA"), key, pki.issuing, not_before=pki.now,
                 not_after=pki.now + timedelta(days=30), ku=dict(digital_signature=True),
                 eku=[x509.oid.ExtendedKeyUsageOID.TIME_STAMPING], eku_critical=True)
    local = LocalTSA(cert, key, pki.chain, policy_oid="1.3.6.1.4.1.32473.9")
    resp, status, *_ = parse(local.respond(request()))
    assert status == "granted"
    [signer] = resp["time_stamp_token"]["content"]["signer_infos"]
    assert signer["signature_algorithm"]["algorithm"].native == "sha256_ecdsa"
    cert.public_key().verify(signer["signature"].native, signed_attrs_der(signer),
                             ec.ECDSA(hashes.SHA256()))
    assert tst_info(resp)["policy"].native == "1.3.6.1.4.1.32473.9"


def test_timestamper_asks_the_local_tsa_in_process(tsa):
    from pyhanko.sign.timestamps import TimeStamper

    from app.pki.tsa import TimestampAuthority

    assert isinstance(tsa, TimestampAuthority)
    stamper = tsa.timestamper()
    assert isinstance(stamper, TimeStamper)
    digest = hashlib.sha256(b"pdf").digest()
    token = asyncio.run(stamper.async_timestamp(digest, "sha256"))
    info = token["content"]["encap_content_info"]["content"].parsed
    assert info["message_imprint"]["hashed_message"].native == digest
    assert info["nonce"].native is not None  # pyHanko sends one and checks the echo


def test_a_failing_tsa_answers_system_failure_and_pyhanko_reports_it(pki):
    from pyhanko.sign.timestamps import TimestampRequestError

    from app.pki.tsa import LocalTSA

    def broken_clock():
        raise RuntimeError("no clock")

    late = LocalTSA(pki.tsa.cert, pki.tsa.key, pki.chain,
                    clock=lambda: pki.tsa.cert.not_valid_after_utc + timedelta(days=1))
    _, status, fail, text = parse(late.respond(request()))
    assert (status, fail) == ("rejection", {"system_failure"})
    assert text == ["the TSA certificate is not valid now"]

    broken = LocalTSA(pki.tsa.cert, pki.tsa.key, pki.chain, clock=broken_clock)
    resp, status, fail, text = parse(broken.respond(request()))
    assert (status, fail, text) == ("rejection", {"system_failure"}, ["internal error"])
    with pytest.raises(TimestampRequestError, match="system_failure"):
        asyncio.run(broken.timestamper().async_timestamp(hashlib.sha256(b"x").digest(), "sha256"))


class _TsaHandler(BaseHTTPRequestHandler):
    tsa = None
    seen = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append((self.headers.get("Content-Type"),
                                self.headers.get("Authorization")))
        reply = self.tsa.respond(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/timestamp-reply")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def test_http_tsa_over_loopback(tsa):
    from app.pki.tsa import HttpTSA

    handler = type("Handler", (_TsaHandler,), {"tsa": tsa, "seen": []})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/tsa"
        stamper = HttpTSA(url, username="ar", password="segredo", timeout=5).timestamper()
        digest = hashlib.sha256(b"pdf").digest()
        token = asyncio.run(stamper.async_timestamp(digest, "sha256"))
        info = token["content"]["encap_content_info"]["content"].parsed
        assert info["message_imprint"]["hashed_message"].native == digest
        content_type, auth = handler.seen[-1]
        assert content_type == "application/timestamp-query"
        assert auth == "Basic " + base64.b64encode(b"ar:segredo").decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_http_tsa_checks_its_url():
    from app.pki.tsa import HttpTSA

    with pytest.raises(ValueError):
        HttpTSA("ftp://tsa.example/")
