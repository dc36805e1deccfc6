"""PAdES signatures of the termo de titularidade, with pyHanko.

The termo is signed three times, each signature an incremental update so the earlier ones stay
valid:

1. `sign_pdf` — the agent's counter-signature, with a key the server holds (PAdES B-B, or B-T
   when given a timestamper).
2. `prepare_external` / `finish_external` — the holder's signature, made in the browser with the
   freshly generated private key. `prepare_external` reserves the signature in the PDF and
   returns an `ExternalSigning` state (JSON-able: a dict of base64 strings) whose `to_be_signed`
   is the DER of the CMS SignedAttributes SET; the browser signs those bytes as they are with
   RSASSA-PKCS1-v1_5 / SHA-256 (WebCrypto's `sign()` hashes its input itself) and sends back the
   raw signature; `finish_external` checks it against the certificate and embeds the CMS.
3. `seal_pdf` — the office seal: a PAdES signature with a signature timestamp, the validation
   data (certificates and CRLs) of every signature in the document's DSS with VRI entries, and a
   document timestamp over all of it (PAdES B-LTA; see `seal_pdf` for why the document
   timestamp).

`validate_pdf` summarises every signature and document timestamp with pyHanko's AdES validation,
offline (only the trust roots and CRLs given plus what the document embeds).

Pure Python: no Flask, no database.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from io import BytesIO
from typing import Iterable, Sequence

from asn1crypto import cms, crl as asn1_crl, keys
from asn1crypto import x509 as asn1_x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pyhanko.pdf_utils import generic as pdf_generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.general import SigningError
from pyhanko.sign.signers.pdf_byterange import PreparedByteRangeDigest
from pyhanko.sign.signers.pdf_signer import PdfTBSDocument
from pyhanko.sign.timestamps import TimeStamper
from pyhanko.sign.validation import DocumentSecurityStore, collect_validation_info
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.registry import SimpleCertificateStore

from .tsa import as_asn1_cert, as_pyca_key

__all__ = [
    "ExternalSigning",
    "SignatureReport",
    "finish_external",
    "make_validation_context",
    "prepare_external",
    "seal_pdf",
    "sign_pdf",
    "validate_pdf",
]

log = logging.getLogger(__name__)


class _QuietOfflineEmbedding(logging.Filter):
    """pyHanko warns at every seal that validation data is embedded while fetching is off:
    here that is the point (the CRLs are handed in), so that one message is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(
            "Validation/revocation info will be embedded, but fetching is not allowed")


_signer_log = logging.getLogger("pyhanko.sign.signers.pdf_signer")
if not any(isinstance(f, _QuietOfflineEmbedding) for f in _signer_log.filters):
    _signer_log.addFilter(_QuietOfflineEmbedding())

MD = "sha256"
# Key usages a signer's certificate may carry (either is enough): ICP-Brasil end-entity
# certificates have digitalSignature, nonRepudiation is allowed.
SIGNER_KEY_USAGE = {"digital_signature", "non_repudiation"}
STATE_VERSION = 1


# --- helpers ----------------------------------------------------------------------------------

def _store(chain: Iterable) -> SimpleCertificateStore:
    return SimpleCertificateStore.from_certs([as_asn1_cert(c) for c in chain])


def _key_info(key) -> keys.PrivateKeyInfo:
    key = as_pyca_key(key)
    return keys.PrivateKeyInfo.load(key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


class _KeySigner(signers.SimpleSigner):
    """pyHanko's SimpleSigner, signing with the already loaded key: SimpleSigner reloads the
    key from DER at every signature, and loading an RSA key checks it (~40 ms)."""

    def __init__(self, key, cert, chain):
        self._key = as_pyca_key(key)
        super().__init__(signing_cert=as_asn1_cert(cert), signing_key=_key_info(self._key),
                         cert_registry=_store(chain))

    def sign_raw(self, data: bytes, digest_algorithm: str) -> bytes:
        mechanism = self.get_signature_mechanism_for_digest(digest_algorithm)
        algorithm = mechanism["algorithm"].native
        if isinstance(self._key, rsa.RSAPrivateKey) and algorithm in (
                "rsassa_pkcs1v15", f"{digest_algorithm}_rsa"):
            return self._key.sign(data, padding.PKCS1v15(),
                                  _HASHES[digest_algorithm]())
        if isinstance(self._key, ec.EllipticCurvePrivateKey) and algorithm in (
                "ecdsa", f"{digest_algorithm}_ecdsa"):
            return self._key.sign(data, ec.ECDSA(_HASHES[digest_algorithm]()))
        return super().sign_raw(data, digest_algorithm)


_HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


def _writer(pdf: bytes) -> IncrementalPdfFileWriter:
    return IncrementalPdfFileWriter(BytesIO(pdf), strict=False)


def _meta(field_name: str, reason: str | None, name: str | None = None,
          **kwargs) -> signers.PdfSignatureMetadata:
    return signers.PdfSignatureMetadata(
        field_name=field_name, reason=reason, name=name, md_algorithm=MD,
        subfilter=fields.SigSeedSubFilter.PADES, signer_key_usage=set(SIGNER_KEY_USAGE),
        **kwargs)


def make_validation_context(trust_roots: Iterable, crls: Iterable = (), *,
                            other_certs: Iterable = (), moment: datetime | None = None,
                            revocation_mode: str = "hard-fail") -> ValidationContext:
    """An offline ValidationContext: trust roots and CRLs given (certificates or DER), no
    fetching. `hard-fail`: a certificate with a CRL distribution point needs a CRL covering it."""
    return ValidationContext(
        trust_roots=[as_asn1_cert(c) for c in trust_roots],
        other_certs=[as_asn1_cert(c) for c in other_certs],
        crls=[c if isinstance(c, asn1_crl.CertificateList) else bytes(c) for c in crls],
        allow_fetching=False, revocation_mode=revocation_mode, moment=moment)


def _run(coro):
    """Run one of pyHanko's coroutines to the end from synchronous code — in a thread of its
    own when this thread already runs an event loop (Playwright's sync API, an async caller)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


# pyHanko reads PDF hex strings one byte at a time (read_non_whitespace per digit); the /Contents
# of each signature is 10–20 KB of hex, read several times per seal or validation: ~30 ms of a
# ~100 ms seal. This reads the string in one go, and hands anything unusual (a comment, a bad
# digit, no closing '>') back to pyHanko's own reader, so its behaviour and errors are kept.
_PDF_WHITESPACE = re.compile(rb"[\x00\t\n\x0c\r ]+")
_NOT_HEX = re.compile(rb"[^0-9a-fA-F]")


def _fast_read_hex_string(stream, _original):
    start = stream.tell()
    stream.read(1)  # the '<'
    chunks = []
    while True:
        chunk = stream.read(65536)
        if not chunk:
            stream.seek(start)
            return _original(stream)
        end = chunk.find(b">")
        if end < 0:
            chunks.append(chunk)
            continue
        chunks.append(chunk[:end])
        stream.seek(end + 1 - len(chunk), os.SEEK_CUR)
        break
    digits = _PDF_WHITESPACE.sub(b"", b"".join(chunks))
    if _NOT_HEX.search(digits):
        stream.seek(start)
        return _original(stream)
    if len(digits) % 2:
        digits += b"0"
    return pdf_generic.pdf_string(binascii.unhexlify(digits))


def _install_fast_hex_reader():
    original = pdf_generic.read_hex_string_from_stream
    if getattr(original, "_videoar_fast", False):
        return

    def read_hex_string_from_stream(stream):
        return _fast_read_hex_string(stream, original)

    read_hex_string_from_stream._videoar_fast = True
    read_hex_string_from_stream.original = original
    pdf_generic.read_hex_string_from_stream = read_hex_string_from_stream


_install_fast_hex_reader()


# --- 1. the agent's counter-signature (server-held key) ---------------------------------------

def sign_pdf(pdf: bytes, *, key, cert, chain: Sequence = (), field_name: str, reason: str,
             name: str | None = None, timestamper: TimeStamper | None = None) -> bytes:
    """Sign `pdf` (PAdES, SHA-256) in a new invisible signature field, as an incremental update.

    `key`/`cert`/`chain`: pyca/cryptography objects or DER. With a `timestamper` the signature
    gets a signature timestamp (PAdES B-T)."""
    signer = _KeySigner(key, cert, chain)
    pdf_signer = signers.PdfSigner(_meta(field_name, reason, name), signer=signer,
                                   timestamper=timestamper)
    return pdf_signer.sign_pdf(_writer(pdf)).getvalue()


# --- 2. the holder's signature, made in the browser -------------------------------------------

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


@dataclass
class ExternalSigning:
    """The state between `prepare_external` and `finish_external`, to keep in a database.

    `to_be_signed` is what the browser signs: the DER of the CMS SignedAttributes (a SET, tag
    0x31) — `crypto.subtle.sign({name: "RSASSA-PKCS1-v1_5"}, key, toBeSigned)` with a SHA-256
    key hashes it itself. The signed attributes are fixed here (content type, the document's
    digest, the signer's certificate); the signing time is the /M of the signature dictionary,
    already written into `prepared_pdf`, so nothing changes between the two steps.
    """

    prepared_pdf: bytes               # the PDF with the reserved /Contents placeholder
    document_digest: bytes            # SHA-256 over the /ByteRange of prepared_pdf
    reserved_region_start: int        # the placeholder's byte offsets in prepared_pdf
    reserved_region_end: int
    to_be_signed: bytes               # DER of the SignedAttributes SET
    cert_der: bytes
    chain_der: list[bytes] = field(default_factory=list)
    field_name: str = ""
    md_algorithm: str = MD
    signing_time: str = ""            # ISO 8601 (UTC), the /M written in the PDF
    timestamp_reserved: bool = False  # room for a signature timestamp was reserved

    @property
    def to_be_signed_sha256(self) -> bytes:
        return hashlib.sha256(self.to_be_signed).digest()

    def to_json(self) -> dict:
        """A dict of base64 strings (and strings) that `json.dumps` takes."""
        return {
            "version": str(STATE_VERSION),
            "prepared_pdf": _b64(self.prepared_pdf),
            "document_digest": _b64(self.document_digest),
            "reserved_region_start": str(self.reserved_region_start),
            "reserved_region_end": str(self.reserved_region_end),
            "to_be_signed": _b64(self.to_be_signed),
            "cert_der": _b64(self.cert_der),
            "chain_der": [_b64(c) for c in self.chain_der],
            "field_name": self.field_name,
            "md_algorithm": self.md_algorithm,
            "signing_time": self.signing_time,
            "timestamp_reserved": "1" if self.timestamp_reserved else "0",
        }

    @classmethod
    def from_json(cls, data: dict) -> "ExternalSigning":
        try:
            if str(data.get("version", STATE_VERSION)) != str(STATE_VERSION):
                raise ValueError(f"unknown external signing state version {data['version']}")
            return cls(
                prepared_pdf=_unb64(data["prepared_pdf"]),
                document_digest=_unb64(data["document_digest"]),
                reserved_region_start=int(data["reserved_region_start"]),
                reserved_region_end=int(data["reserved_region_end"]),
                to_be_signed=_unb64(data["to_be_signed"]),
                cert_der=_unb64(data["cert_der"]),
                chain_der=[_unb64(c) for c in data.get("chain_der", [])],
                field_name=data.get("field_name", ""),
                md_algorithm=data.get("md_algorithm", MD),
                signing_time=data.get("signing_time", ""),
                timestamp_reserved=str(data.get("timestamp_reserved", "0")) == "1",
            )
        except (KeyError, TypeError, binascii.Error) as e:
            raise ValueError(f"bad external signing state: {e!r}") from None


def prepare_external(pdf: bytes, *, cert_der: bytes, chain_der: Sequence[bytes] = (),
                     field_name: str, reason: str, name: str | None = None,
                     timestamper: TimeStamper | None = None) -> ExternalSigning:
    """Reserve a PAdES signature for the holder of `cert_der` (an RSA certificate) in a new
    field of `pdf`, and return the state with the bytes the browser must sign.

    With a `timestamper`, room is also reserved for a signature timestamp, which
    `finish_external(..., timestamper=...)` then adds (PAdES B-T; pyHanko asks the TSA once
    for a sample token to size the room)."""
    cert = as_asn1_cert(cert_der)
    public_key = cert.public_key
    if public_key.algorithm != "rsa":
        raise ValueError("the holder's certificate must have an RSA key")
    signature_size = (public_key.bit_size + 7) // 8
    signing_time = datetime.now(timezone.utc).replace(microsecond=0)
    meta = _meta(field_name, reason, name)
    ext_signer = signers.ExternalSigner(
        signing_cert=cert, cert_registry=_store(chain_der),
        signature_value=bytes(signature_size))

    async def prepare():
        # async_digest_doc_for_signing step by step, to fix the session's time: it is the /M
        # of the signature dictionary, the claimed signing time (PAdES forbids a signingTime
        # attribute), and must be the same for both HTTP requests.
        writer = _writer(pdf)
        session = signers.PdfSigner(meta, signer=ext_signer,
                                    timestamper=timestamper).init_signing_session(writer)
        session.system_time = signing_time
        validation_info = await session.perform_presign_validation(writer)
        reserved = await session.estimate_signature_container_size(validation_info)
        tbs = session.prepare_tbs_document(validation_info=validation_info,
                                           bytes_reserved=reserved)
        prep_digest, output = tbs.digest_tbs_document()
        signed_attrs = await ext_signer.signed_attrs(
            prep_digest.document_digest, MD, use_pades=True)
        return prep_digest, signed_attrs, output

    prep_digest, signed_attrs, output = _run(prepare())
    return ExternalSigning(
        prepared_pdf=output.getvalue(),
        document_digest=prep_digest.document_digest,
        reserved_region_start=prep_digest.reserved_region_start,
        reserved_region_end=prep_digest.reserved_region_end,
        to_be_signed=signed_attrs.dump(),
        cert_der=cert.dump(),
        chain_der=[as_asn1_cert(c).dump() for c in chain_der],
        field_name=field_name,
        signing_time=signing_time.isoformat(),
        timestamp_reserved=timestamper is not None,
    )


def _byte_range_digest(pdf: bytes, start: int, end: int) -> bytes:
    digest = hashlib.sha256()
    digest.update(memoryview(pdf)[:start])
    digest.update(memoryview(pdf)[end:])
    return digest.digest()


def _check_state(state: ExternalSigning) -> cms.CMSAttributes:
    pdf = state.prepared_pdf
    if not 0 < state.reserved_region_start < state.reserved_region_end <= len(pdf):
        raise ValueError("the reserved region is outside the prepared PDF")
    placeholder = pdf[state.reserved_region_start:state.reserved_region_end]
    if placeholder[:1] != b"<" or placeholder[-1:] != b">" or placeholder.strip(b"<0>"):
        raise ValueError("the prepared PDF has no empty signature placeholder there")
    if _byte_range_digest(pdf, state.reserved_region_start,
                          state.reserved_region_end) != state.document_digest:
        raise ValueError("the prepared PDF does not match its digest")
    try:
        signed_attrs = cms.CMSAttributes.load(state.to_be_signed, strict=True)
        attrs = {a["type"].native: a["values"] for a in signed_attrs}
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"to_be_signed is not a DER SignedAttributes SET: {e}") from None
    if ("message_digest" not in attrs
            or attrs["message_digest"][0].native != state.document_digest):
        raise ValueError("the signed attributes do not cover the prepared PDF")
    return signed_attrs


def finish_external(state: ExternalSigning, signature_value: bytes, *,
                    timestamper: TimeStamper | None = None) -> bytes:
    """Embed the holder's raw RSASSA-PKCS1-v1_5 / SHA-256 signature over `state.to_be_signed`
    in the prepared PDF and return the signed PDF. With a `timestamper` (room reserved by
    `prepare_external`), the signature gets a signature timestamp.

    Raises ValueError when the signature does not verify with the certificate's public key (or
    when the state is inconsistent), before anything is embedded."""
    signed_attrs = _check_state(state)
    if timestamper is not None and not state.timestamp_reserved:
        raise ValueError("no room was reserved for a timestamp: pass the timestamper to "
                         "prepare_external too")
    cert = as_asn1_cert(state.cert_der)
    from cryptography import x509 as pyca_x509

    public_key = pyca_x509.load_der_x509_certificate(state.cert_der).public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ValueError("the holder's certificate must have an RSA key")
    signature_value = bytes(signature_value or b"")
    try:
        public_key.verify(signature_value, state.to_be_signed, padding.PKCS1v15(),
                          hashes.SHA256())
    except InvalidSignature:
        raise ValueError("the signature does not verify with the holder's certificate") from None

    ext_signer = signers.ExternalSigner(signing_cert=cert, cert_registry=_store(state.chain_der),
                                        signature_value=signature_value)
    signature_cms = _run(ext_signer.async_sign_prescribed_attributes(
        MD, signed_attrs=signed_attrs, timestamper=timestamper))
    output = BytesIO(state.prepared_pdf)
    try:
        PdfTBSDocument.finish_signing(
            output,
            prepared_digest=PreparedByteRangeDigest(
                document_digest=state.document_digest,
                reserved_region_start=state.reserved_region_start,
                reserved_region_end=state.reserved_region_end),
            signature_cms=signature_cms)
    except SigningError as e:  # the CMS does not fit the reserved room
        raise ValueError(str(e)) from None
    return output.getvalue()


# --- 3. the office seal -----------------------------------------------------------------------

def seal_pdf(pdf: bytes, *, key, cert, chain: Sequence = (), timestamper: TimeStamper,
             validation_context: ValidationContext, field_name: str = "SeloAR",
             reason: str = "Selo da Autoridade de Registro",
             timestamp_field_name: str = "CarimboDoTempo") -> bytes:
    """Seal `pdf` with the office's key: PAdES B-LTA.

    In one incremental update: the validation data (certificate paths and CRLs, from
    `validation_context` — build it with `make_validation_context`, offline) of every signature
    already in the document go into the DSS, each with its VRI entry, and the seal signature
    with a signature timestamp is added. pyHanko then adds the seal's own validation data (the
    seal's and the TSA's paths and CRLs) and a document timestamp, and finally the document
    timestamp's validation data.

    Why the document timestamp: a signature timestamp proves when its signature existed, but
    nothing proves when the validation data in the DSS (the CRLs showing the certificates were
    not revoked at signing time) existed: the DSS is written after the signatures. The document
    timestamp covers the DSS and every signature, so a validator can validate each signature
    in the past, at its signature timestamp, after the signers' certificates have expired (or
    been revoked) and the CRLs have gone stale (ETSI EN 319 102-1 §5.6.3; pyHanko's
    `ades_lta_validation` takes its proofs of existence from document timestamps only). It
    holds while the TSA certificate is valid and its revocation data can be had; an archive
    extends it with further document timestamps. B-LT alone (signature timestamp + DSS) would
    leave the DSS content without a proof of existence.

    For the agent's and the holder's signatures to last the same way, give them their own
    signature timestamps too (`timestamper` in `sign_pdf`, `prepare_external` and
    `finish_external`): the long-term validation needs a signature timestamp per signature.

    A signature already in the document whose certificate (or signature timestamp) does not
    validate against `validation_context` gets no validation data (logged as a warning; the
    seal goes on, and `validate_pdf` will show that signature untrusted). The seal's own
    certificate must validate: otherwise pyHanko raises.
    """
    signer = _KeySigner(key, cert, chain)
    writer = _writer(pdf)
    reader: PdfFileReader = writer.prev

    async def seal():
        for embedded in reader.embedded_regular_signatures:
            await _supply_validation_info(writer, embedded, validation_context)
        meta = _meta(field_name, reason, embed_validation_info=True, use_pades_lta=True,
                     timestamp_field_name=timestamp_field_name,
                     validation_context=validation_context)
        pdf_signer = signers.PdfSigner(meta, signer=signer, timestamper=timestamper)
        return await pdf_signer.async_sign_pdf(writer)

    return _run(seal()).getvalue()


async def _supply_validation_info(writer: IncrementalPdfFileWriter,
                                  embedded: EmbeddedPdfSignature,
                                  validation_context: ValidationContext):
    try:
        paths = await collect_validation_info(embedded, validation_context)
    except Exception:  # noqa: BLE001 - e.g. a token's signature timestamp from an unknown TSA
        try:
            paths = await collect_validation_info(embedded, validation_context,
                                                  skip_timestamp=True)
            log.warning("seal: no validation data for the timestamp of signature %s",
                        embedded.field_name, exc_info=True)
        except Exception:  # noqa: BLE001
            log.warning("seal: no validation data for signature %s (its certificate does not "
                        "validate)", embedded.field_name, exc_info=True)
            return
    # The VRI key is the SHA-1 of the /Contents bytes, padding included, as pyHanko computes
    # it after its own signatures (its add_validation_info hashes the hex text instead).
    DocumentSecurityStore.supply_dss_in_writer(
        writer, embedded.pkcs7_content, paths=paths, validation_context=validation_context)


# --- validation -------------------------------------------------------------------------------

@dataclass
class SignatureReport:
    """One signature (or document timestamp) of a PDF, as validated."""

    field_name: str
    kind: str                       # "signature" or "doc_timestamp"
    signer_cn: str | None
    intact: bool                    # the document digest matches (the bytes are untouched)
    valid: bool                     # the cryptographic signature verifies
    trusted: bool                   # the certificate path reaches a trust root, not revoked
    timestamp_present: bool         # a signature timestamp (or: this is a document timestamp)
    timestamp_valid: bool | None    # None when there is no timestamp
    timestamp_time: datetime | None
    signing_time: datetime | None   # the timestamp's time if any, else the claimed /M
    claimed_signing_time: datetime | None
    validation_data_embedded: bool  # the DSS has this signature's VRI entry
    dss_present: bool               # the document has a DSS (certs / CRLs / OCSPs)
    coverage: str                   # ENTIRE_FILE, ENTIRE_REVISION, …
    modification_level: str | None  # what later revisions did (LTA_UPDATES, FORM_FILLING…)
    indication: str                 # AdES (sub)indication, e.g. "PASSED" or "NO_POE"
    bottom_line: bool               # intact, valid, trusted, later changes allowed
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.bottom_line


def validate_pdf(pdf: bytes, *, trust_roots_der: Sequence[bytes],
                 crls_der: Sequence[bytes] = (),
                 moment: datetime | None = None) -> list[SignatureReport]:
    """Validate every signature and document timestamp in `pdf`, offline, at `moment` (default:
    now), trusting only `trust_roots_der`; CRLs are `crls_der` plus those in the document's DSS.

    A signature with a signature timestamp and a document timestamp after it goes through
    pyHanko's PAdES long-term validation (ETSI EN 319 102-1 §5.6.3, `ades_lta_validation`): the
    timestamps are the proofs of existence, so a signature whose certificate has expired by
    `moment` is still valid if it, and the revocation data that cleared its certificate,
    existed before that (the newest document timestamp must itself validate at `moment`, with
    revocation data current then: pass the CRLs of that moment). Other signatures (B-B, B-T)
    are checked as they stand at `moment`. Document timestamps are checked at `moment`.
    Never raises for a bad signature: it is reported (`indication`, `message`)."""
    return _run(_validate_pdf(pdf, trust_roots_der, crls_der, moment))


def _specs(trust_roots_der, crls_der, key_usage):
    from pyhanko.sign.validation.policy_decl import (CertificateFetchingRule, LocalKnowledge,
                                                     PdfSignatureValidationSpec,
                                                     RevinfoOnlineFetchingRule,
                                                     RevocationInfoGatheringSpec,
                                                     SignatureValidationSpec)
    from pyhanko.sign.validation.settings import KeyUsageConstraints
    from pyhanko_certvalidator.context import CertValidationPolicySpec
    from pyhanko_certvalidator.policy_decl import (CertRevTrustPolicy, RevocationCheckingPolicy,
                                                   RevocationCheckingRule)
    from pyhanko_certvalidator.registry import SimpleTrustManager
    from pyhanko_certvalidator.revinfo.archival import CRLContainer

    check = RevocationCheckingRule.CHECK_IF_DECLARED
    cert_policy = CertValidationPolicySpec(
        trust_manager=SimpleTrustManager.build(
            trust_roots=[as_asn1_cert(c) for c in trust_roots_der]),
        revinfo_policy=CertRevTrustPolicy(RevocationCheckingPolicy(
            ee_certificate_rule=check, intermediate_ca_cert_rule=check)))
    crls = [CRLContainer(asn1_crl.CertificateList.load(bytes(c))) for c in crls_der]
    spec = SignatureValidationSpec(
        cert_validation_policy=cert_policy,
        revinfo_gathering_policy=RevocationInfoGatheringSpec(
            online_fetching_rule=RevinfoOnlineFetchingRule.LOCAL_ONLY,
            certificate_fetching_rule=CertificateFetchingRule.NEVER_FETCH),
        local_knowledge=LocalKnowledge(known_crls=crls),
        key_usage_settings=KeyUsageConstraints(key_usage=set(key_usage),
                                               match_all_key_usages=False),
    )
    return PdfSignatureValidationSpec(spec)


def _cn(cert: asn1_x509.Certificate | None) -> str | None:
    if cert is None:
        return None
    return cert.subject.native.get("common_name")


def _vri_keys(reader: PdfFileReader) -> tuple[bool, set[str]]:
    try:
        dss = DocumentSecurityStore.read_dss(reader)
    except Exception:  # noqa: BLE001 - no DSS (ValidationInfoReadingError) or a broken one
        return False, set()
    return True, {str(k).lstrip("/").upper() for k in dss.vri_entries.keys()}


def _vri_key(embedded: EmbeddedPdfSignature) -> str:
    # ISO 32000-2 §12.8.4.4: SHA-1 of the signature's /Contents bytes (padding included).
    return hashlib.sha1(embedded.pkcs7_content).hexdigest().upper()


async def _validate_pdf(pdf, trust_roots_der, crls_der, moment):
    from pyhanko.sign.validation import ades, async_validate_pdf_timestamp
    from pyhanko_certvalidator.ltv.types import ValidationTimingInfo

    reader = PdfFileReader(BytesIO(pdf), strict=False)
    dss_present, vri = _vri_keys(reader)
    if moment is not None and moment.tzinfo is None:
        raise ValueError("moment must be an aware datetime")
    timing = None
    if moment is not None:
        timing = ValidationTimingInfo(validation_time=moment, best_signature_time=moment,
                                      point_in_time_validation=True)
    spec = _specs(trust_roots_der, crls_der, SIGNER_KEY_USAGE)
    context_kwargs = dict(trust_roots=[as_asn1_cert(c) for c in trust_roots_der],
                          crls=[bytes(c) for c in crls_der], allow_fetching=False,
                          revocation_mode="hard-fail", moment=moment)
    reports = []
    for embedded in reader.embedded_signatures:
        kind = "doc_timestamp" if embedded.sig_object_type == "/DocTimeStamp" else "signature"
        try:
            if kind == "signature":
                report = await _validate_signature(embedded, spec, timing, ades, context_kwargs)
            else:
                report = await _validate_doc_timestamp(embedded, context_kwargs,
                                                       async_validate_pdf_timestamp)
        except Exception as e:  # noqa: BLE001 - a broken signature is reported, not raised
            log.info("signature %s failed to validate", embedded.field_name, exc_info=True)
            report = _broken_report(embedded, kind, e)
        report.dss_present = dss_present
        report.validation_data_embedded = _vri_key(embedded) in vri
        reports.append(report)
    return reports


def _name(value) -> str | None:
    if value is None:
        return None
    return getattr(value, "name", None) or str(value)


async def _validate_signature(embedded, spec, timing, ades, context_kwargs) -> SignatureReport:
    has_ts = any(True for _ in _signature_timestamps(embedded))
    doc_ts_after = any(ts.signed_revision > embedded.signed_revision
                       for ts in embedded.reader.embedded_timestamp_signatures)
    if not (has_ts and doc_ts_after):
        # pyHanko's long-term validation needs a signature timestamp (AdES "with time") and a
        # document timestamp after the signature (the proofs of existence); without both
        # (B-B, B-T) the signature is checked as it stands at the validation time.
        return await _validate_signature_basic(embedded, context_kwargs, has_ts)
    result = await ades.ades_lta_validation(embedded, spec, timing_info=timing)
    status = result.api_status
    ts_status = status.timestamp_validity if status is not None else None
    ts_time = ts_status.timestamp if ts_status is not None else _embedded_tst_time(embedded)
    indication = _name(result.ades_subindic) or "?"
    passed = indication in ("OK", "PASSED")
    return SignatureReport(
        field_name=embedded.field_name,
        kind="signature",
        signer_cn=_cn(embedded.signer_cert),
        intact=bool(status.intact) if status else False,
        valid=bool(status.valid) if status else False,
        trusted=bool(status.trusted) and passed if status else False,
        timestamp_present=True,
        timestamp_valid=(bool(ts_status.intact and ts_status.valid and ts_status.trusted)
                         if ts_status is not None else False),
        timestamp_time=ts_time,
        signing_time=ts_time or embedded.self_reported_timestamp,
        claimed_signing_time=embedded.self_reported_timestamp,
        validation_data_embedded=False,
        dss_present=False,
        coverage=(_name(status.coverage) if status
                  else _name(embedded.evaluate_signature_coverage())),
        modification_level=_name(status.modification_level) if status else None,
        indication="PASSED" if passed else indication,
        bottom_line=bool(status.bottom_line) and passed if status else False,
        message=None if passed else result.failure_msg,
    )


def _context(reader, context_kwargs) -> ValidationContext:
    try:
        dss = DocumentSecurityStore.read_dss(reader)
    except Exception:  # noqa: BLE001 - no DSS
        return ValidationContext(**context_kwargs)
    return dss.as_validation_context(context_kwargs)


async def _validate_signature_basic(embedded, context_kwargs, has_ts) -> SignatureReport:
    from pyhanko.sign.validation import async_validate_pdf_signature
    from pyhanko.sign.validation.settings import KeyUsageConstraints

    status = await async_validate_pdf_signature(
        embedded, signer_validation_context=_context(embedded.reader, context_kwargs),
        ts_validation_context=_context(embedded.reader, context_kwargs),
        key_usage_settings=KeyUsageConstraints(key_usage=set(SIGNER_KEY_USAGE),
                                               match_all_key_usages=False))
    ok = bool(status.bottom_line)
    ts_status = status.timestamp_validity
    ts_time = ts_status.timestamp if ts_status is not None else None
    return SignatureReport(
        field_name=embedded.field_name,
        kind="signature",
        signer_cn=_cn(embedded.signer_cert),
        intact=bool(status.intact),
        valid=bool(status.valid),
        trusted=bool(status.trusted),
        timestamp_present=has_ts,
        timestamp_valid=(bool(ts_status.intact and ts_status.valid and ts_status.trusted)
                         if ts_status is not None else (False if has_ts else None)),
        timestamp_time=ts_time,
        signing_time=ts_time or embedded.self_reported_timestamp,
        claimed_signing_time=embedded.self_reported_timestamp,
        validation_data_embedded=False,
        dss_present=False,
        coverage=_name(status.coverage),
        modification_level=_name(status.modification_level),
        indication="PASSED" if ok else (_name(status.trust_problem_indic) or "FAILED"),
        bottom_line=ok,
    )


def _signature_timestamps(embedded):
    from pyhanko.sign.validation.generic_cms import extract_tst_data_iter

    return extract_tst_data_iter(embedded.signer_info, signed=False)


def _embedded_tst_time(embedded) -> datetime | None:
    for signed_data in _signature_timestamps(embedded):
        return signed_data["encap_content_info"]["content"].parsed["gen_time"].native
    return None


async def _validate_doc_timestamp(embedded, context_kwargs, validate) -> SignatureReport:
    # The document timestamp is checked at the validation time, with the CRLs given and
    # those in the DSS.
    context = _context(embedded.reader, context_kwargs)
    status = await validate(embedded, validation_context=context)
    trusted = bool(status.trusted)
    return SignatureReport(
        field_name=embedded.field_name,
        kind="doc_timestamp",
        signer_cn=_cn(embedded.signer_cert),
        intact=bool(status.intact),
        valid=bool(status.valid),
        trusted=trusted,
        timestamp_present=True,
        timestamp_valid=bool(status.intact and status.valid and trusted),
        timestamp_time=status.timestamp,
        signing_time=status.timestamp,
        claimed_signing_time=embedded.self_reported_timestamp,
        validation_data_embedded=False,
        dss_present=False,
        coverage=_name(status.coverage),
        modification_level=_name(status.modification_level),
        indication="PASSED" if (status.intact and status.valid and trusted) else
        (_name(status.trust_problem_indic) or "FAILED"),
        bottom_line=bool(status.intact and status.valid and trusted),
    )


def _broken_report(embedded, kind, error) -> SignatureReport:
    try:
        cn = _cn(embedded.signer_cert)
    except Exception:  # noqa: BLE001
        cn = None
    return SignatureReport(
        field_name=embedded.field_name, kind=kind, signer_cn=cn, intact=False, valid=False,
        trusted=False, timestamp_present=False, timestamp_valid=None, timestamp_time=None,
        signing_time=None, claimed_signing_time=None, validation_data_embedded=False,
        dss_present=False, coverage="NONE", modification_level=None, indication="FAILED",
        bottom_line=False, message=f"{type(error).__name__}: {error}")
