"""Timestamp authorities (RFC 3161) for the PAdES signatures of the termo de titularidade.

Two kinds, both giving pyHanko a `TimeStamper` through `.timestamper()`:

- `LocalTSA(cert, key, chain)`: a timestamp responder built in. `respond(request_der)` takes a
  DER `TimeStampReq` and always returns a DER `TimeStampResp` — a granted one with a signed
  token, or a rejection (status `rejection` with a failInfo: badRequest, badAlg,
  badDataFormat, unacceptedPolicy, unacceptedExtension, systemFailure) — never an exception.
  It is what an HTTP route serving `application/timestamp-query` → `application/timestamp-reply`
  calls, and `.timestamper()` calls it in-process.
- `HttpTSA(url, username=None, password=None)`: an external TSA over HTTP (pyHanko's client).

Pure Python: no Flask, no database.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import os
import threading
import time
from datetime import datetime, timezone
from typing import Iterable, Protocol, runtime_checkable

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509 as pyca_x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pyhanko.sign.general import as_signing_certificate_v2, simple_cms_attribute
from pyhanko.sign.timestamps import HTTPTimeStamper, TimeStamper

__all__ = [
    "ACCEPTED_HASHES",
    "DEFAULT_POLICY_OID",
    "HttpTSA",
    "LocalTSA",
    "TimeStampResp",
    "TimestampAuthority",
    "rejection_response",
]

log = logging.getLogger(__name__)

# Digest algorithms a request's messageImprint may use, with their digest lengths.
ACCEPTED_HASHES = {"sha256": 32, "sha384": 48, "sha512": 64}

# A TimeStampReq is a hash and a few small fields; anything this large is not one.
MAX_REQUEST_BYTES = 16 * 1024

# A policy OID under the "example" arc; a real deployment sets the TSA's own policy OID.
DEFAULT_POLICY_OID = "1.3.6.1.4.1.32473.1.1"


@runtime_checkable
class TimestampAuthority(Protocol):
    """Something that gives pyHanko a `TimeStamper` (an RFC 3161 client)."""

    def timestamper(self) -> TimeStamper:  # pragma: no cover - protocol
        ...


# --- conversions ------------------------------------------------------------------------------

def as_asn1_cert(cert) -> asn1_x509.Certificate:
    """A certificate given as asn1crypto, pyca/cryptography, DER or PEM → asn1crypto."""
    if isinstance(cert, asn1_x509.Certificate):
        return cert
    if isinstance(cert, pyca_x509.Certificate):
        return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    if isinstance(cert, (bytes, bytearray)):
        data = bytes(cert)
        if data.lstrip().startswith(b"-----BEGIN"):
            data = pyca_x509.load_pem_x509_certificate(data).public_bytes(
                serialization.Encoding.DER)
        return asn1_x509.Certificate.load(data)
    raise TypeError(f"not a certificate: {type(cert).__name__}")


def as_pyca_key(key):
    """A private key given as pyca/cryptography, DER (PKCS#8) or PEM → pyca/cryptography."""
    if isinstance(key, (bytes, bytearray)):
        data = bytes(key)
        if data.lstrip().startswith(b"-----BEGIN"):
            return serialization.load_pem_private_key(data, password=None)
        return serialization.load_der_private_key(data, password=None)
    if hasattr(key, "dump") and hasattr(key, "native"):  # asn1crypto PrivateKeyInfo
        return serialization.load_der_private_key(key.dump(), password=None)
    return key


# --- the responder ----------------------------------------------------------------------------

class _Rejection(Exception):
    def __init__(self, fail_info: str, text: str):
        super().__init__(text)
        self.fail_info = fail_info
        self.text = text


class TimeStampResp(core.Sequence):
    """RFC 3161 TimeStampResp, with timeStampToken OPTIONAL as in the RFC (asn1crypto's
    tsp.TimeStampResp makes it mandatory, so it cannot encode a rejection)."""

    _fields = [
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


def rejection_response(fail_info: str, text: str) -> bytes:
    """A DER TimeStampResp with status `rejection`, one failInfo bit and a statusString."""
    status = tsp.PKIStatusInfo({
        "status": tsp.PKIStatus("rejection"),
        "status_string": tsp.PKIFreeText([text]),
        "fail_info": tsp.PKIFailureInfo({fail_info}),
    })
    return TimeStampResp({"status": status}).dump()


class LocalTSA:
    """An RFC 3161 timestamp authority that signs with a key held by this process.

    `cert`/`key`: the TSA's certificate (its extendedKeyUsage must be timeStamping, critical)
    and private key (RSA → RSASSA-PKCS1-v1_5, or EC → ECDSA; SHA-256 either way). `chain`: the
    certificates above it (issuing CA, root) to send when the request sets certReq.
    `policy_oid`: the TSA policy put in every token; a request asking for another is rejected.
    `accuracy_seconds`: the accuracy stated in the tokens (None to leave it out).
    """

    def __init__(self, cert, key, chain: Iterable = (), *, policy_oid: str = DEFAULT_POLICY_OID,
                 accuracy_seconds: int | None = 1, clock=None):
        self.cert = as_asn1_cert(cert)
        self.key = as_pyca_key(key)
        if not isinstance(self.key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
            raise TypeError("the TSA key must be RSA or EC")
        self.chain = [as_asn1_cert(c) for c in chain]
        self.policy_oid = policy_oid
        self.accuracy_seconds = accuracy_seconds
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._serial_lock = threading.Lock()
        self._last_serial = 0
        ekus = self.cert.extended_key_usage_value
        if ekus is None or "time_stamping" not in ekus.native:
            log.warning("TSA certificate %s lacks the timeStamping extended key usage",
                        self.cert.subject.human_friendly)
        self._timestamper = None
        # The parts of every token that never change, as DER: asn1crypto re-encodes whatever
        # it is handed as objects (the certificates alone cost ~10 ms a token); parts loaded
        # from DER and left untouched are copied as they are.
        self._tsa_name_der = asn1_x509.GeneralName(
            name="directory_name", value=self.cert.subject).dump()
        self._sid_der = cms.SignerIdentifier({
            "issuer_and_serial_number": cms.IssuerAndSerialNumber({
                "issuer": self.cert.issuer, "serial_number": self.cert.serial_number}),
        }).dump()
        self._ess_der = simple_cms_attribute(
            "signing_certificate_v2", as_signing_certificate_v2(self.cert)).dump()
        self._certs_der = cms.CertificateSet(
            [cms.CertificateChoices(name="certificate", value=c)
             for c in [self.cert, *self.chain]]).dump()

    # serial numbers: nanoseconds since the epoch in the high bits, 32 random bits below, and
    # strictly increasing within the process — unique without keeping state anywhere.
    def _next_serial(self) -> int:
        with self._serial_lock:
            serial = (time.time_ns() << 32) | int.from_bytes(os.urandom(4), "big")
            if serial <= self._last_serial:
                serial = self._last_serial + 1
            self._last_serial = serial
            return serial

    def respond(self, request_der: bytes) -> bytes:
        """Answer one DER TimeStampReq with a DER TimeStampResp (granted or rejection)."""
        try:
            req = self._parse(request_der)
            return self._grant(req)
        except _Rejection as r:
            return rejection_response(r.fail_info, r.text)
        except Exception:  # noqa: BLE001 - the client gets a systemFailure, we get the log
            log.exception("timestamp request failed")
            return rejection_response("system_failure", "internal error")

    def _parse(self, request_der: bytes) -> tsp.TimeStampReq:
        if not request_der:
            raise _Rejection("bad_request", "empty request")
        if len(request_der) > MAX_REQUEST_BYTES:
            raise _Rejection("bad_request", "request too large")
        try:
            req = tsp.TimeStampReq.load(bytes(request_der), strict=True)
            req.native  # parse it all now: asn1crypto is lazy
        except Exception:  # noqa: BLE001 - any decoding error is the client's
            raise _Rejection("bad_request", "the request is not a DER TimeStampReq") from None
        if req["version"].native != "v1":
            raise _Rejection("bad_request", "unsupported request version")
        imprint = req["message_imprint"]
        algorithm = imprint["hash_algorithm"]["algorithm"].native
        if algorithm not in ACCEPTED_HASHES:
            raise _Rejection("bad_alg", f"hash algorithm {algorithm} not accepted "
                                        f"(accepted: SHA-256, SHA-384, SHA-512)")
        params = imprint["hash_algorithm"]["parameters"]
        if params.native is not None and not isinstance(params, core.Null):
            raise _Rejection("bad_alg", "unexpected hash algorithm parameters")
        if len(imprint["hashed_message"].native) != ACCEPTED_HASHES[algorithm]:
            raise _Rejection("bad_data_format", "the hashed message length does not match "
                                                "its algorithm")
        policy = req["req_policy"].native
        if policy is not None and policy != self.policy_oid:
            raise _Rejection("unaccepted_policy", f"policy {policy} not supported")
        if req["extensions"].native:
            raise _Rejection("unaccepted_extensions", "no request extension is supported")
        return req

    def _grant(self, req: tsp.TimeStampReq) -> bytes:
        now = self._clock().astimezone(timezone.utc)
        validity = self.cert["tbs_certificate"]["validity"]
        if not (validity["not_before"].native <= now <= validity["not_after"].native):
            log.error("the TSA certificate is not valid at %s", now.isoformat())
            raise _Rejection("system_failure", "the TSA certificate is not valid now")
        tst_info = {
            "version": "v1",
            "policy": self.policy_oid,
            "message_imprint": req["message_imprint"],
            "serial_number": self._next_serial(),
            "gen_time": core.GeneralizedTime(now),
            "ordering": False,
            "tsa": asn1_x509.GeneralName.load(self._tsa_name_der),
        }
        if self.accuracy_seconds is not None:
            tst_info["accuracy"] = tsp.Accuracy({"seconds": self.accuracy_seconds})
        if req["nonce"].native is not None:
            tst_info["nonce"] = req["nonce"].native
        content = tsp.TSTInfo(tst_info).dump()

        digest = hashes.Hash(hashes.SHA256())
        digest.update(content)
        signed_attrs = cms.CMSAttributes([
            simple_cms_attribute("content_type", "tst_info"),
            simple_cms_attribute("signing_time", cms.Time({"utc_time": core.UTCTime(now)})),
            simple_cms_attribute("message_digest", digest.finalize()),
            # ESSCertIDv2 (RFC 5816) binds the token to this TSA certificate.
            cms.CMSAttribute.load(self._ess_der),
        ])
        if isinstance(self.key, rsa.RSAPrivateKey):
            signature = self.key.sign(signed_attrs.dump(), padding.PKCS1v15(), hashes.SHA256())
            sig_alg = "sha256_rsa"
        else:
            signature = self.key.sign(signed_attrs.dump(), ec.ECDSA(hashes.SHA256()))
            sig_alg = "sha256_ecdsa"
        digest_alg = algos.DigestAlgorithm({"algorithm": "sha256"})
        signer_info = cms.SignerInfo({
            "version": "v1",
            "sid": cms.SignerIdentifier.load(self._sid_der),
            "digest_algorithm": digest_alg,
            "signed_attrs": signed_attrs,
            "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": sig_alg}),
            "signature": signature,
        })
        signed_data = {
            "version": "v3",
            "digest_algorithms": cms.DigestAlgorithms([digest_alg]),
            "encap_content_info": cms.EncapsulatedContentInfo({
                "content_type": "tst_info",
                "content": cms.ParsableOctetString(content),
            }),
            "signer_infos": cms.SignerInfos([signer_info]),
        }
        if req["cert_req"].native:
            signed_data["certificates"] = cms.CertificateSet.load(self._certs_der)
        token = cms.ContentInfo({"content_type": "signed_data",
                                 "content": cms.SignedData(signed_data)})
        return TimeStampResp({
            "status": tsp.PKIStatusInfo({"status": tsp.PKIStatus("granted")}),
            "time_stamp_token": token,
        }).dump()

    def timestamper(self) -> TimeStamper:
        """A pyHanko TimeStamper that asks this TSA in-process (always the same one: pyHanko
        keeps a sample token in it to size the room for timestamps, saving a request)."""
        if self._timestamper is None:
            self._timestamper = _InProcessTimeStamper(self)
        return self._timestamper


class _InProcessTimeStamper(TimeStamper):
    def __init__(self, tsa: LocalTSA):
        super().__init__(include_nonce=True)
        self.tsa = tsa

    async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        # pyHanko reads only the status of a rejection and the token of a grant
        return TimeStampResp.load(self.tsa.respond(req.dump()))

    def request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        return asyncio.run(self.async_request_tsa_response(req))


# --- an external TSA --------------------------------------------------------------------------

class HttpTSA:
    """An external RFC 3161 TSA reached over HTTP(S), optionally with basic authentication."""

    def __init__(self, url: str, username: str | None = None, password: str | None = None,
                 *, timeout: float = 10, headers: dict | None = None):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"not an HTTP(S) URL: {url!r}")
        self.url = url
        self.username = username
        self.password = password
        self.timeout = timeout
        self.headers = dict(headers or {})

    def timestamper(self) -> TimeStamper:
        headers = dict(self.headers)
        if self.username:
            # HTTP basic authentication, as a header (aiohttp deprecates its BasicAuth)
            credentials = f"{self.username}:{self.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")
        return HTTPTimeStamper(self.url, timeout=self.timeout, headers=headers)
