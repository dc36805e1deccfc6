"""An external certificate authority reached over CMP (RFC 4210, as updated by RFC 9480),
the way EJBCA and OpenSSL's `openssl cmp` speak it, over HTTP (RFC 6712).

    ca = CmpCA("https://ca.example/ejbca/publicweb/cmp/ra", recipient="/CN=AC Exemplo",
               reference="ra-videoar", secret=b"...", trusted_der=[root_der])
    submission = ca.submit(csr_der, profile, holder)     # "issued" | "pending" | "rejected"
    ca.revoke(certificate_der, "key_compromise")

Enrolment: the holder's PKCS#10 request is sent as it is (p10cr). The holder's private key
never exists here, so there is no ir/cr with a proof of possession of our own. The answer (cp,
or ip) carries the certificate. We check it: it must have the request's public key, and with
`trusted_der` it must chain to one of those certificates (the chain is built from the answer's
caPubs and extraCerts). Then we confirm it with certConf (its hash, taken with the hash of its
signature algorithm), which the CA acknowledges with pkiConf. A bad certificate gets a negative
certConf and raises CertificateAuthorityError. An answer "waiting" starts polling (pollReq and
pollRep, honouring checkAfter) for at most `max_wait` seconds. After that, submit returns
status "pending" with the transactionID (hex) as reference, and each `status(reference)` call
sends one pollReq. The transaction's state (and its outcome, for status/retrieve) is kept in
`state`: by default this process's memory, or any mapping given, whose values are plain data.
Revocation: rr with the certificate's issuer, serial number and a CRL reason code, answered
by rp.

Protection of every request: with `secret`, PBM (password-based MAC, RFC 4210 §5.1.3.1:
SHA-256 one-way function, HMAC-SHA256, `reference` as senderKID). Otherwise a signature with
`client_key`, with our certificate in extraCerts and its key identifier as senderKID. Every
answer must be protected; an unprotected one raises, even an error message. A PBM answer is
checked with the secret. A signed answer is checked with a certificate from `trusted_der`, or
one from its extraCerts that chains to them. The transactionID must be ours, and recipNonce
must be the senderNonce we sent. A refusal by the CA (status "rejection", or an error message)
comes back as a Submission "rejected" with the CA's text. Transport and protocol failures
raise CertificateAuthorityError.

Not implemented: ir/cr/kur (our own key pairs, key update), central key generation and
encrypted certificates, CA key update announcements and the other announcements, genm/genp,
nested messages, polling for revocations, hashAlg in certConf (pvno 3, needed for certificates
signed with EdDSA), RSASSA-PSS protection, TLS client authentication, and revocation or policy
checks on the certificates in the chains. Not thread-safe per transaction: poll one reference
from one place at a time.
"""
import datetime as dt
import hashlib
import hmac
import http.client
import os
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import NameOID
from pyasn1.codec.der import decoder, encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import namedtype, tag, univ
from pyasn1_modules import rfc2314, rfc2459, rfc2511, rfc4210

from .authority import CertificateAuthorityError, Submission

CONTENT_TYPE = "application/pkixcmp"
MAX_RESPONSE = 1 << 20
PBM = "1.2.840.113533.7.66.13"
PBM_ITERATIONS, PBM_MAX_ITERATIONS = 10_000, 100_000
SHA256, HMAC_SHA256 = "2.16.840.1.101.3.4.2.1", "1.2.840.113549.2.9"
IMPLICIT_CONFIRM = "1.3.6.1.5.5.7.4.13"
CRL_REASON = "2.5.29.21"
HASHES = {"1.3.14.3.2.26": "sha1", "2.16.840.1.101.3.4.2.4": "sha224", SHA256: "sha256",
          "2.16.840.1.101.3.4.2.2": "sha384", "2.16.840.1.101.3.4.2.3": "sha512"}
HMACS = {"1.3.6.1.5.5.8.1.2": "sha1", "1.2.840.113549.2.7": "sha1",
         "1.2.840.113549.2.8": "sha224", HMAC_SHA256: "sha256",
         "1.2.840.113549.2.10": "sha384", "1.2.840.113549.2.11": "sha512"}
SIGNATURES = {  # protectionAlg → (key kind, hash)
    "1.2.840.113549.1.1.5": ("rsa", hashes.SHA1), "1.2.840.113549.1.1.11": ("rsa", hashes.SHA256),
    "1.2.840.113549.1.1.12": ("rsa", hashes.SHA384),
    "1.2.840.113549.1.1.13": ("rsa", hashes.SHA512),
    "1.2.840.10045.4.3.2": ("ec", hashes.SHA256), "1.2.840.10045.4.3.3": ("ec", hashes.SHA384),
    "1.2.840.10045.4.3.4": ("ec", hashes.SHA512),
    "1.3.101.112": ("ed", None), "1.3.101.113": ("ed", None)}
REASON_CODES = {"unspecified": 0, "key_compromise": 1, "ca_compromise": 2,
                "affiliation_changed": 3, "superseded": 4, "cessation_of_operation": 5,
                "certificate_hold": 6, "privilege_withdrawn": 9}
ACCEPTED, GRANTED, REJECTION, WAITING = 0, 1, 2, 3
DN_KEYS = {"C": NameOID.COUNTRY_NAME, "ST": NameOID.STATE_OR_PROVINCE_NAME,
           "L": NameOID.LOCALITY_NAME, "O": NameOID.ORGANIZATION_NAME,
           "OU": NameOID.ORGANIZATIONAL_UNIT_NAME, "CN": NameOID.COMMON_NAME,
           "SERIALNUMBER": NameOID.SERIAL_NUMBER, "DC": NameOID.DOMAIN_COMPONENT,
           "UID": NameOID.USER_ID, "EMAILADDRESS": NameOID.EMAIL_ADDRESS,
           "STREET": NameOID.STREET_ADDRESS, "TITLE": NameOID.TITLE, "GN": NameOID.GIVEN_NAME,
           "SN": NameOID.SURNAME}
CLOCK_SKEW = dt.timedelta(minutes=5)


# --- ASN.1 ------------------------------------------------------------------------------------
# pyasn1-modules' rfc4210 is used as it is, except for rp. Its CertId comes from rfc2511, whose
# GeneralName is only a placeholder OCTET STRING, so an rp with revCerts would not decode.

def _context(number: int):
    return tag.Tag(tag.tagClassContext, tag.tagFormatConstructed, number)


def _replace(named_types, name, asn1_type):
    return namedtype.NamedTypes(*(type(t)(t.name, asn1_type) if t.name == name else t
                                  for t in named_types.namedTypes))


class _CertId(univ.Sequence):
    componentType = namedtype.NamedTypes(namedtype.NamedType("issuer", rfc2459.GeneralName()),
                                         namedtype.NamedType("serialNumber", univ.Integer()))


class _RevRepContent(univ.Sequence):
    componentType = _replace(rfc4210.RevRepContent.componentType, "revCerts", univ.SequenceOf(
        componentType=_CertId()).subtype(explicitTag=_context(0)))


class _PKIBody(univ.Choice):
    componentType = _replace(rfc4210.PKIBody.componentType, "rp",
                             _RevRepContent().subtype(explicitTag=_context(12)))


class _PKIMessage(univ.Sequence):
    componentType = _replace(rfc4210.PKIMessage.componentType, "body", _PKIBody())


def _body_type(name: str):
    """An empty value of a PKIBody alternative, with its context tag."""
    return rfc4210.PKIBody().componentType[name].asn1Object.clone()


def _short(exc: Exception) -> str:
    return str(exc)[:200]  # pyasn1's messages can run to many kilobytes


# --- names and DER ----------------------------------------------------------------------------

def parse_dn(text: str) -> x509.Name:
    """"/O=Org/CN=Name" (OpenSSL's form, most significant first; "\\/" for a slash in a value)
    or RFC 4514 ("CN=Name,O=Org"); "" is the empty (NULL-)DN."""
    text = text.strip()
    if not text.startswith("/"):
        return x509.Name.from_rfc4514_string(text) if text else x509.Name([])
    attributes, part = [], ""
    pieces = text[1:].split("/")
    for i, piece in enumerate(pieces):
        part += piece
        if part.endswith("\\") and i + 1 < len(pieces):
            part = part[:-1] + "/"
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        oid = DN_KEYS.get(key.upper())
        if oid is None and key[:1].isdigit():
            oid = x509.ObjectIdentifier(key)
        if not sep or oid is None:
            raise ValueError(f"cannot read the DN {text!r} at {part!r}")
        attributes.append(x509.NameAttribute(oid, value))
        part = ""
    return x509.Name(attributes)


def _rdn_sequence(name: x509.Name):
    return decoder.decode(name.public_bytes(), asn1Spec=rfc2459.RDNSequence())[0]


def _directory_name(name: x509.Name) -> rfc2459.GeneralName:
    general = rfc2459.GeneralName()
    choice = general.componentType["directoryName"].asn1Object.clone()
    choice.setComponentByPosition(0, _rdn_sequence(name))
    general["directoryName"] = choice
    return general


def _name_der(general) -> bytes | None:
    """The DER of a GeneralName's directoryName (None for other kinds of names)."""
    if general.getName() != "directoryName":
        return None
    return encoder.encode(general["directoryName"].getComponentByPosition(0))


def _elements(der: bytes, start: int = 0, end: int | None = None):
    """(start, content start, end) of each DER element in der[start:end]."""
    end = len(der) if end is None else end
    while start < end:
        length, pos = der[start + 1], start + 2
        if length & 0x80:
            count = length & 0x7F
            length, pos = int.from_bytes(der[pos:pos + count], "big"), pos + count
        yield start, pos, pos + length
        start = pos + length


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _protected_part(raw: bytes) -> bytes:
    """ProtectedPart ::= SEQUENCE { header, body }, from the message's own bytes."""
    _, content, end = next(_elements(raw))
    parts = _elements(raw, content, end)
    (header_start, _, _), (_, _, body_end) = next(parts), next(parts)
    inner = raw[header_start:body_end]
    return b"\x30" + _der_length(len(inner)) + inner


def _free_text(items) -> str:
    return "; ".join(str(s) for s in items) if items.isValue else ""


def status_text(info) -> str:
    """A PKIStatusInfo as a person reads it: the CA's text, then the failure names."""
    parts = [_free_text(info["statusString"])] if info["statusString"].isValue else []
    if info["failInfo"].isValue:
        names = rfc4210.PKIFailureInfo.namedValues
        failures = [names.getName(i) or str(i) for i, bit in enumerate(info["failInfo"]) if bit]
        if failures:
            parts.append("(" + ", ".join(failures) + ")")
    status = int(info["status"])
    return " ".join(parts) or rfc4210.PKIStatus.namedValues.getName(status) or str(status)


def _error_text(content) -> str:
    text = status_text(content["pKIStatusInfo"])
    details = _free_text(content["errorDetails"])
    if content["errorCode"].isValue:
        details = f"{details} [code {int(content['errorCode'])}]".strip()
    return f"{text}: {details}" if details else text


# --- certificates -----------------------------------------------------------------------------

def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def _valid_now(cert: x509.Certificate) -> bool:
    now = dt.datetime.now(dt.timezone.utc)
    return cert.not_valid_before_utc - CLOCK_SKEW <= now <= cert.not_valid_after_utc + CLOCK_SKEW


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _issuers(cert: x509.Certificate, candidates, anchors) -> list[x509.Certificate]:
    """The chain above `cert` (issuer first, root last) as far as a self-signed certificate,
    each link checked by signature and validity. Trusted certificates are tried first."""
    chain, current = [], cert
    for _ in range(8):
        if current.issuer == current.subject and chain:
            break
        for issuer in sorted(candidates, key=lambda c: c not in anchors):
            if issuer == current or issuer in chain or issuer.subject != current.issuer:
                continue
            if not _valid_now(issuer) or not (_is_ca(issuer) or issuer in anchors):
                continue
            try:
                current.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, InvalidSignature):
                continue
            chain.append(issuer)
            current = issuer
            break
        else:
            break
    return chain


def _trusted(cert: x509.Certificate, chain, anchors) -> bool:
    """Whether `cert` is trusted or its checked chain goes through a trusted certificate."""
    return any(c in anchors for c in [cert, *chain])


def _confirmation_hash(cert: x509.Certificate) -> bytes:
    algorithm = cert.signature_hash_algorithm
    if algorithm is None:
        raise CertificateAuthorityError("a certificate signed with EdDSA needs hashAlg in "
                                        "certConf (CMP v3), which is not implemented")
    digest = hashes.Hash(algorithm)
    digest.update(_der(cert))
    return digest.finalize()


def _verify_signature(cert: x509.Certificate, algorithm: str, data: bytes, signature: bytes):
    kind, hash_class = SIGNATURES[algorithm]
    key = cert.public_key()
    try:
        if kind == "rsa" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hash_class())
        elif kind == "ec" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hash_class()))
        elif kind == "ed" and isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            key.verify(signature, data)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _load_key(key):
    if key is None or not isinstance(key, (bytes, str)):
        return key
    data = key.encode() if isinstance(key, str) else key
    if b"-----BEGIN" in data:
        return serialization.load_pem_private_key(data, password=None)
    return serialization.load_der_private_key(data, password=None)


# --- the connector ----------------------------------------------------------------------------

@dataclass
class _Answer:
    kind: str            # body type: "cp", "pollRep", "error", ...
    body: object         # its pyasn1 value
    header: object
    sender_nonce: bytes
    certs: list[x509.Certificate] = field(default_factory=list)   # extraCerts
    raw: bytes = b""


class _States(OrderedDict):
    """Transactions by reference; the oldest are forgotten past `limit`."""

    def __init__(self, limit=1000):
        super().__init__()
        self.limit = limit

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


_STATES = _States()


class CmpCA:
    """An external CA over CMP; see the module's docstring. With both `secret` and a client
    certificate, requests are protected with the secret (PBM)."""

    label = "AC externa (CMP)"
    homologation = False

    def __init__(self, url: str, *, recipient: str, reference: str | None = None,
                 secret: bytes | None = None, client_cert_der: bytes | None = None,
                 client_key=None, trusted_der: list[bytes] = (), timeout: float = 10.0,
                 max_wait: float = 20.0, state=None):
        if not url.lower().startswith(("http://", "https://")):
            raise ValueError(f"CMP URL must be http(s): {url!r}")
        if secret is None and (client_cert_der is None or client_key is None):
            raise ValueError("CMP needs a shared secret (PBM) or a client certificate and key")
        self.url, self.timeout, self.max_wait = url, timeout, max_wait
        self.recipient = parse_dn(recipient or "")
        self.reference = reference.encode() if isinstance(reference, str) else reference
        self.secret = secret
        self.client_cert = client_cert_der and x509.load_der_x509_certificate(client_cert_der)
        self.client_key = _load_key(client_key)
        self.trusted = [x509.load_der_x509_certificate(d) for d in trusted_der or ()]
        self.state = _STATES if state is None else state

    # --- the CertificateAuthority operations

    def submit(self, csr_der: bytes, profile=None, holder=None) -> Submission:
        """Enrol the holder's PKCS#10 request. The profile is the CA's (the CMP alias and
        `reference` select it there): CMP carries none."""
        try:
            csr = x509.load_der_x509_csr(csr_der)
            plain = decoder.decode(csr_der, asn1Spec=rfc2314.CertificationRequest())[0]
        except (ValueError, PyAsn1Error) as exc:
            raise CertificateAuthorityError(f"not a DER PKCS#10 request: {_short(exc)}") from exc
        if not csr.is_signature_valid:
            raise CertificateAuthorityError("the PKCS#10 request's signature is not valid")
        if encoder.encode(plain) != csr_der:
            raise CertificateAuthorityError("the PKCS#10 request is not DER-encoded")
        request = _body_type("p10cr")
        for i, component in enumerate(plain.values()):
            request.setComponentByPosition(i, component)
        tx = {"txid": os.urandom(16).hex(), "spki": _spki(csr.public_key()).hex(),
              "cert_req_id": None, "nonce": None}
        answer = self._exchange(tx, "p10cr", request, ("cp", "ip"))
        return self._enrolment(tx, answer, time.monotonic() + self.max_wait)

    def status(self, reference: str) -> Submission:
        """Where a request stands; a pending one is polled once (pollReq)."""
        tx = self.state.get(reference)
        if tx is None:
            raise CertificateAuthorityError(f"unknown CMP transaction {reference!r}")
        if tx.get("result"):
            result = tx["result"]
            certificate = result["certificate"] and bytes.fromhex(result["certificate"])
            return Submission(reference, result["status"], certificate_der=certificate,
                              chain_der=[bytes.fromhex(c) for c in result["chain"]],
                              message=result["message"])
        return self._enrolment(tx, self._poll(tx), deadline=time.monotonic())

    def retrieve(self, reference: str) -> bytes:
        submission = self.status(reference)
        if submission.status != "issued":
            detail = f": {submission.message}" if submission.message else ""
            raise CertificateAuthorityError(f"CMP transaction {reference} is "
                                            f"{submission.status}{detail}")
        return submission.certificate_der

    def revoke(self, certificate_der: bytes, reason: str) -> None:
        if reason not in REASON_CODES:
            raise ValueError(f"unknown revocation reason {reason!r}")
        try:
            cert = x509.load_der_x509_certificate(certificate_der)
        except ValueError as exc:
            raise CertificateAuthorityError(f"not a DER certificate: {exc}") from exc
        template = rfc2511.CertTemplate()
        template["serialNumber"] = cert.serial_number
        issuer = template.componentType["issuer"].asn1Object.clone()
        issuer.setComponentByPosition(0, _rdn_sequence(cert.issuer))
        template["issuer"] = issuer
        extension = rfc2459.Extension()
        extension["extnID"] = univ.ObjectIdentifier(CRL_REASON)
        extension["extnValue"] = encoder.encode(univ.Enumerated(REASON_CODES[reason]))
        details = rfc4210.RevDetails()
        details["certDetails"] = template
        details["crlEntryDetails"].append(extension)
        content = _body_type("rr")
        content.append(details)
        tx = {"txid": os.urandom(16).hex(), "nonce": None}
        answer = self._exchange(tx, "rr", content, ("rp",))
        if answer.kind == "error":
            raise CertificateAuthorityError(f"the CA refused the revocation: "
                                            f"{_error_text(answer.body)}")
        statuses = answer.body["status"]
        if len(statuses) != 1:
            raise CertificateAuthorityError(f"rp with {len(statuses)} statuses for one certificate")
        if int(statuses[0]["status"]) in (REJECTION, WAITING):
            raise CertificateAuthorityError(f"the CA did not revoke the certificate: "
                                            f"{status_text(statuses[0])}")

    # --- enrolment steps

    def _enrolment(self, tx: dict, answer: _Answer, deadline: float) -> Submission:
        """Follow an enrolment from an answer (cp/ip, pollRep or error) until `deadline`."""
        while True:
            if answer.kind == "error":
                return self._finish(tx, "rejected", message=_error_text(answer.body))
            if answer.kind == "pollRep":
                if len(answer.body) != 1:
                    raise CertificateAuthorityError("a pollRep must answer for one request")
                check_after = max(0, int(answer.body[0]["checkAfter"]))
                if time.monotonic() + check_after > deadline:
                    reason = _free_text(answer.body[0]["reason"])
                    return self._pending(tx, f"the CA asks to check again after {check_after} s"
                                             + (f": {reason}" if reason else ""))
                time.sleep(max(check_after, 0.1))
                answer = self._poll(tx)
                continue
            responses = answer.body["response"]
            if len(responses) != 1:
                raise CertificateAuthorityError(f"{answer.kind} with {len(responses)} responses "
                                                "for one request")
            response = responses[0]
            cert_req_id = int(response["certReqId"])
            if tx["cert_req_id"] is not None and cert_req_id != tx["cert_req_id"]:
                raise CertificateAuthorityError(f"{answer.kind} for certReqId {cert_req_id}, "
                                                f"not {tx['cert_req_id']}")
            tx["cert_req_id"] = cert_req_id
            status = int(response["status"]["status"])
            if status == WAITING:
                if time.monotonic() >= deadline:
                    return self._pending(tx, status_text(response["status"]))
                answer = self._poll(tx)
                continue
            if status not in (ACCEPTED, GRANTED):
                return self._finish(tx, "rejected", message=status_text(response["status"]))
            return self._accept(tx, answer, response)

    def _accept(self, tx: dict, answer: _Answer, response) -> Submission:
        pair = response["certifiedKeyPair"]
        if not pair.isValue or pair["certOrEncCert"].getName() != "certificate":
            raise CertificateAuthorityError("the CA's answer has no (plain) certificate")
        tagged = encoder.encode(pair["certOrEncCert"]["certificate"])
        _, start, end = next(_elements(tagged))
        cert_der = tagged[start:end]  # without its [0]
        if cert_der not in answer.raw:
            raise CertificateAuthorityError("the certificate is not DER-encoded")
        ca_pubs = answer.body["caPubs"]
        try:
            cert = x509.load_der_x509_certificate(cert_der)
            pool = [x509.load_der_x509_certificate(encoder.encode(c)) for c in ca_pubs] \
                if ca_pubs.isValue else []
        except ValueError as exc:
            raise CertificateAuthorityError(f"unreadable certificate: {exc}") from exc
        chain = _issuers(cert, pool + answer.certs + self.trusted, self.trusted)
        problem = None
        if _spki(cert.public_key()).hex() != tx["spki"]:
            problem = "the certificate is not for the request's public key"
        elif not _valid_now(cert):
            problem = "the certificate is not valid now"
        elif self.trusted and not _trusted(cert, chain, self.trusted):
            problem = "the certificate does not chain to a trusted CA certificate"
        if not self._implicitly_confirmed(answer):
            self._confirm(tx, cert, problem)
        if problem:
            raise CertificateAuthorityError(problem + " (refused with certConf)")
        return self._finish(tx, "issued", certificate_der=cert_der,
                            chain_der=[_der(c) for c in chain])

    def _confirm(self, tx: dict, cert: x509.Certificate, problem: str | None):
        status = rfc4210.CertStatus()
        status["certHash"] = _confirmation_hash(cert)
        status["certReqId"] = tx["cert_req_id"]
        info = status["statusInfo"]
        info["status"] = REJECTION if problem else ACCEPTED
        if problem:
            info["statusString"].append(problem)
            info["failInfo"] = info["failInfo"].clone(binValue="00000001")  # incorrectData
        content = _body_type("certConf")
        content.append(status)
        answer = self._exchange(tx, "certConf", content, ("pkiconf",))
        if answer.kind == "error":
            raise CertificateAuthorityError("the CA did not accept the certificate confirmation: "
                                            + _error_text(answer.body))

    def _poll(self, tx: dict) -> _Answer:
        content = _body_type("pollReq")
        entry = content.componentType.clone()
        entry["certReqId"] = tx["cert_req_id"] if tx["cert_req_id"] is not None else 0
        content.append(entry)
        return self._exchange(tx, "pollReq", content, ("pollRep", "cp", "ip"))

    def _pending(self, tx: dict, message: str) -> Submission:
        self.state[tx["txid"]] = tx
        return Submission(tx["txid"], "pending", message=message)

    def _finish(self, tx: dict, status: str, certificate_der: bytes | None = None,
                chain_der=(), message: str | None = None) -> Submission:
        """The end of an enrolment, remembered for status() and retrieve()."""
        self.state[tx["txid"]] = {**tx, "result": {
            "status": status, "message": message, "chain": [c.hex() for c in chain_der],
            "certificate": certificate_der.hex() if certificate_der else None}}
        return Submission(tx["txid"], status, certificate_der=certificate_der,
                          chain_der=list(chain_der), message=message)

    @staticmethod
    def _implicitly_confirmed(answer: _Answer) -> bool:
        info = answer.header["generalInfo"]
        return info.isValue and any(str(i["infoType"]) == IMPLICIT_CONFIRM for i in info)

    # --- messages

    def _exchange(self, tx: dict, kind: str, content, expect: tuple[str, ...]) -> _Answer:
        """Send one request of the transaction and return the checked answer; the
        transaction's next recipNonce is the answer's senderNonce."""
        nonce = os.urandom(16)
        answer = self._read(self._post(self._message(tx, kind, content, nonce)), tx, nonce)
        if answer.kind not in expect + ("error",):
            raise CertificateAuthorityError(f"the CA answered {kind} with {answer.kind}")
        tx["nonce"] = answer.sender_nonce.hex()
        return answer

    def _message(self, tx: dict, kind: str, content, nonce: bytes) -> bytes:
        signed = self.secret is None
        header = rfc4210.PKIHeader()
        header["pvno"] = 2
        header["sender"] = _directory_name(self.client_cert.subject if signed else x509.Name([]))
        header["recipient"] = _directory_name(self.recipient)
        header["messageTime"] = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d%H%M%SZ")
        algorithm = header["protectionAlg"]
        if signed:
            algorithm["algorithm"], parameters = self._signature_algorithm()
            if parameters is not None:
                algorithm["parameters"] = parameters
            try:
                ski = self.client_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
                header["senderKID"] = ski.value.digest
            except x509.ExtensionNotFound:
                pass
        else:
            parameters = rfc4210.PBMParameter()
            parameters["salt"] = os.urandom(16)
            parameters["owf"]["algorithm"] = univ.ObjectIdentifier(SHA256)
            parameters["iterationCount"] = PBM_ITERATIONS
            parameters["mac"]["algorithm"] = univ.ObjectIdentifier(HMAC_SHA256)
            algorithm["algorithm"] = univ.ObjectIdentifier(PBM)
            algorithm["parameters"] = encoder.encode(parameters)
            if self.reference:
                header["senderKID"] = self.reference
        header["transactionID"] = bytes.fromhex(tx["txid"])
        header["senderNonce"] = nonce
        if tx.get("nonce"):
            header["recipNonce"] = bytes.fromhex(tx["nonce"])
        body = rfc4210.PKIBody()
        body[kind] = content
        part = rfc4210.ProtectedPart()
        part["header"], part["infoValue"] = header, body
        protected = encoder.encode(part)
        protection = self._sign(protected) if signed else self._mac(protected,
                                                                    algorithm["parameters"])
        message = rfc4210.PKIMessage()
        message["header"], message["body"] = header, body
        message["protection"] = message.componentType["protection"].asn1Object.clone(
            hexValue=protection.hex())
        if signed:
            message["extraCerts"].append(decoder.decode(_der(self.client_cert),
                                                        asn1Spec=rfc4210.CMPCertificate())[0])
        return encoder.encode(message)

    def _signature_algorithm(self):
        key = self.client_key
        if isinstance(key, rsa.RSAPrivateKey):
            return univ.ObjectIdentifier("1.2.840.113549.1.1.11"), b"\x05\x00"
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return univ.ObjectIdentifier("1.2.840.10045.4.3.2"), None
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return univ.ObjectIdentifier("1.3.101.112"), None
        raise ValueError(f"unsupported client key type {type(key).__name__}")

    def _sign(self, data: bytes) -> bytes:
        key = self.client_key
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(data, ec.ECDSA(hashes.SHA256()))
        return key.sign(data)

    def _mac(self, data: bytes, parameters_der) -> bytes:
        try:
            parameters = decoder.decode(bytes(parameters_der), asn1Spec=rfc4210.PBMParameter())[0]
        except PyAsn1Error as exc:
            raise CertificateAuthorityError(f"unreadable PBM parameters: {_short(exc)}") from exc
        owf = HASHES.get(str(parameters["owf"]["algorithm"]))
        mac = HMACS.get(str(parameters["mac"]["algorithm"]))
        iterations = int(parameters["iterationCount"])
        if owf is None or mac is None or not 1 <= iterations <= PBM_MAX_ITERATIONS:
            raise CertificateAuthorityError(
                f"unsupported PBM parameters (owf {parameters['owf']['algorithm']}, "
                f"mac {parameters['mac']['algorithm']}, {iterations} iterations)")
        key = self.secret + bytes(parameters["salt"])
        for _ in range(iterations):
            key = hashlib.new(owf, key).digest()
        return hmac.new(key, data, mac).digest()

    def _read(self, raw: bytes, tx: dict, nonce: bytes) -> _Answer:
        try:
            message, rest = decoder.decode(raw, asn1Spec=_PKIMessage())
            if rest:
                raise PyAsn1Error("data after the message")
            header, body = message["header"], message["body"]
            kind = body.getName()
            extra = message["extraCerts"]
            certs = [x509.load_der_x509_certificate(encoder.encode(c)) for c in extra] \
                if extra.isValue else []
        except (PyAsn1Error, ValueError, IndexError) as exc:
            raise CertificateAuthorityError(f"unreadable CMP answer: {_short(exc)}") from exc
        if int(header["pvno"]) not in (2, 3):
            raise CertificateAuthorityError(f"unsupported CMP version {int(header['pvno'])}")
        if not header["protectionAlg"].isValue or not message["protection"].isValue:
            detail = f": {_error_text(body['error'])}" if kind == "error" else ""
            raise CertificateAuthorityError(f"unprotected CMP answer ({kind}){detail}")
        self._check_protection(raw, header, message["protection"].asOctets(), certs)
        txid = header["transactionID"]
        if not txid.isValue or txid.asOctets().hex() != tx["txid"]:
            raise CertificateAuthorityError("the answer belongs to another transaction "
                                            "(transactionID)")
        if not header["recipNonce"].isValue or header["recipNonce"].asOctets() != nonce:
            raise CertificateAuthorityError("the answer does not answer our request (recipNonce)")
        if not header["senderNonce"].isValue:
            raise CertificateAuthorityError("the answer has no senderNonce")
        return _Answer(kind, body[kind], header, header["senderNonce"].asOctets(), certs, raw)

    def _check_protection(self, raw: bytes, header, protection: bytes, certs):
        algorithm = str(header["protectionAlg"]["algorithm"])
        protected = _protected_part(raw)
        if algorithm == PBM:
            if self.secret is None:
                raise CertificateAuthorityError("the answer is MAC-protected, but we have no "
                                                "shared secret")
            mac = self._mac(protected, header["protectionAlg"]["parameters"])
            if not hmac.compare_digest(mac, protection):
                raise CertificateAuthorityError("bad protection: the answer's MAC does not match "
                                                "the shared secret")
            return
        if algorithm not in SIGNATURES:
            raise CertificateAuthorityError(f"unsupported protection algorithm {algorithm}")
        if not self.trusted:
            raise CertificateAuthorityError("the answer is signed, but we trust no CA certificate")
        kid = header["senderKID"].asOctets() if header["senderKID"].isValue else None
        sender = _name_der(header["sender"])
        for cert in certs + self.trusted:
            if sender not in (None, b"\x30\x00") and cert.subject.public_bytes() != sender:
                continue
            try:
                ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
                if kid is not None and ski.value.digest != kid:
                    continue
            except x509.ExtensionNotFound:
                pass
            if not _valid_now(cert) or not _verify_signature(cert, algorithm, protected,
                                                             protection):
                continue
            if _trusted(cert, _issuers(cert, certs + self.trusted, self.trusted), self.trusted):
                return
        raise CertificateAuthorityError("bad protection: the answer's signature does not verify "
                                        "with a trusted certificate")

    def _post(self, data: bytes) -> bytes:
        request = urllib.request.Request(self.url, data=data, method="POST", headers={
            "Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                content_type = response.headers.get_content_type()
                raw = response.read(MAX_RESPONSE + 1)
        except urllib.error.HTTPError as exc:
            raise CertificateAuthorityError(f"the CA at {self.url} answered HTTP {exc.code} "
                                            f"{exc.reason}") from exc
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
            reason = getattr(exc, "reason", None) or exc
            raise CertificateAuthorityError(f"cannot reach the CA at {self.url}: {reason}") from exc
        if content_type != CONTENT_TYPE:
            raise CertificateAuthorityError(f"the CA answered with {content_type}, "
                                            f"not {CONTENT_TYPE}")
        if len(raw) > MAX_RESPONSE:
            raise CertificateAuthorityError("the CA's answer is too large")
        return raw
