"""OpenSSL's own CMP mock server (`openssl cmp -port N ...`) for the CMP client tests.

    pki = make_pki(tmp_path)                                  # certificates, by `cryptography`
    with MockCmpServer(pki, secret=b"s3cret") as server:      # PBM both ways
        CmpCA(server.url, recipient=pki.server_dn, secret=b"s3cret", ...)
    with MockCmpServer(pki, signed=True, extra=["-poll_count", "2"]) as server: ...

The PKI: a root CA, an issuing CA under it, the server's CMP signing certificate and the
registration authority's client certificate (both under the root), an outside root nobody
chains to, and a holder key with its PKCS#10 request and the end-entity certificate the mock
server hands out (`-rsp_cert`, issued by the issuing CA for the holder's key). The mock server
answers every enrolment with that one prepared certificate, whatever is asked, and revokes only
that certificate.

`CmpRelay` sits between a client and a server, records each exchange (`kinds()` gives the
message types in order) and may change answers, e.g. replay an old one. `StubHttpServer`
answers anything with a fixed HTTP status, content type and body, after an optional delay.
"""
import datetime as dt
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.processes import free_port

SERVER_DN = "/O=Mock CA/CN=Mock CMP Server"
SERVER_REF = "mock-server"
CA_USAGE = dict(digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False)
EE_USAGE = {**CA_USAGE, "digital_signature": True, "content_commitment": True,
            "key_cert_sign": False, "crl_sign": False}


def _name(cn: str, org: str = "Mock CA") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(subject, public_key, issuer_name, issuer_key, *, ca: bool, eku=None):
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
        .public_key(public_key).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**(CA_USAGE if ca else EE_USAGE)), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer_key.public_key()), critical=False))
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class Pki:
    dir: Path
    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    issuing: x509.Certificate
    server_cert: x509.Certificate
    client_cert: x509.Certificate
    client_key: ec.EllipticCurvePrivateKey
    holder_key: ec.EllipticCurvePrivateKey
    csr: x509.CertificateSigningRequest
    ee_cert: x509.Certificate          # what the mock server returns (-rsp_cert)
    other_root: x509.Certificate       # a CA nobody in this PKI chains to
    server_dn: str = SERVER_DN

    def path(self, name: str) -> str:
        return str(self.dir / name)

    @property
    def csr_der(self) -> bytes:
        return self.csr.public_bytes(serialization.Encoding.DER)

    @staticmethod
    def der(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.DER)


def make_pki(directory: Path) -> Pki:
    """Make the test PKI (EC P-256 keys: fast) and write the files the server reads."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(6)]
    root_key, issuing_key, server_key, client_key, holder_key, other_key = keys
    root_name, other_name = _name("Mock Root CA"), _name("Other Root CA", "Elsewhere")
    root = issue(root_name, root_key.public_key(), root_name, root_key, ca=True)
    issuing = issue(_name("Mock Issuing CA"), issuing_key.public_key(), root_name, root_key,
                     ca=True)
    server_cert = issue(_name("Mock CMP Server"), server_key.public_key(), root_name, root_key,
                         ca=False, eku=[ExtendedKeyUsageOID.CLIENT_AUTH,
                                        ExtendedKeyUsageOID.SERVER_AUTH])
    client_cert = issue(_name("VideoAR RA", "VideoAR"), client_key.public_key(), root_name,
                         root_key, ca=False, eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    holder_name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "BR"),
                             x509.NameAttribute(NameOID.COMMON_NAME, "MARIA DA SILVA:12345678909")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(holder_name).sign(
        holder_key, hashes.SHA256())
    ee_cert = issue(holder_name, holder_key.public_key(), issuing.subject, issuing_key, ca=False,
                     eku=[ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION])
    other_root = issue(other_name, other_key.public_key(), other_name, other_key, ca=True)

    def pem(cert):
        return cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(key):
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    files = {"root.pem": pem(root), "chain.pem": pem(issuing) + pem(root),
             "server.pem": pem(server_cert), "server.key": key_pem(server_key),
             "client.pem": pem(client_cert), "client.key": key_pem(client_key),
             "holder.key": key_pem(holder_key), "ee.pem": pem(ee_cert),
             "csr.der": csr.public_bytes(serialization.Encoding.DER),
             "other_root.pem": pem(other_root)}
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return Pki(directory, root, root_key, issuing, server_cert, client_cert, client_key,
               holder_key, csr, ee_cert, other_root)


def _listening(port: int) -> bool:
    """Whether a socket listens on `port` (read from /proc: no probe connection)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[1].rsplit(":", 1)[1] == f"{port:04X}" and fields[3] == "0A":
                return True
    return False


class MockCmpServer:
    """`openssl cmp` in mock-server mode on a free local port, in its own process group.

    secret: the server's PBM secret (it then protects its answers with it too);
    signed: sign answers with the server certificate, check signed requests against the root;
    extra: more `openssl cmp` server options (-poll_count, -pkistatus, -send_error, ...).
    Its output goes to `log_path` in the PKI's directory (`log()` reads it).
    """

    def __init__(self, pki: Pki, *, secret: bytes | None = None, signed: bool = False,
                 extra=()):
        self.pki, self.secret, self.signed, self.extra = pki, secret, signed, list(extra)
        self.proc = self.port = self.log_path = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/pkix/"

    def args(self) -> list[str]:
        p = self.pki.path
        args = ["openssl", "cmp", "-port", str(self.port), "-srv_ref", SERVER_REF,
                "-rsp_cert", p("ee.pem"), "-rsp_extracerts", p("chain.pem"),
                "-rsp_capubs", p("root.pem")]
        if self.secret is not None:
            args += ["-srv_secret", "pass:" + self.secret.decode()]
        if self.signed:
            args += ["-srv_cert", p("server.pem"), "-srv_key", p("server.key"),
                     "-srv_trusted", p("root.pem")]
        return args + self.extra

    def start(self, timeout: float = 10.0):
        for _attempt in range(5):  # the free port may be taken meanwhile: then another one
            self.port = free_port()
            self.log_path = self.pki.dir / f"cmp-server-{self.port}.log"
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if _listening(self.port):
                    return self
                time.sleep(0.02)
            if self.proc.poll() is None:
                self.stop()
                raise RuntimeError(f"openssl cmp not listening after {timeout}s:\n{self.log()}")
        raise RuntimeError(f"openssl cmp mock server did not start:\n{self.log()}")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


BODY_TYPES = ["ir", "ip", "cr", "cp", "p10cr", "popdecc", "popdecr", "kur", "kup", "krr", "krp",
              "rr", "rp", "ccr", "ccp", "ckuann", "cann", "rann", "crlann", "pkiconf", "nested",
              "genm", "genp", "error", "certConf", "pollReq", "pollRep"]


def body_type(message: bytes) -> str:
    """The body type of a DER PKIMessage, read from the tag of its second element."""
    def end_of(pos):  # where the element starting at pos ends
        length, pos = message[pos + 1], pos + 2
        if length & 0x80:
            count = length & 0x7F
            length, pos = int.from_bytes(message[pos:pos + count], "big"), pos + count
        return pos + length
    header = 2 + (message[1] & 0x7F if message[1] & 0x80 else 0)
    return BODY_TYPES[message[end_of(header)] & 0x1F]


class _Server:
    """A ThreadingHTTPServer on a free local port, served from a thread."""

    def start(self):
        handler = type("Handler", (BaseHTTPRequestHandler,), {
            "do_POST": lambda h: self.handle(h), "log_message": lambda *a: None})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/pkix/"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @staticmethod
    def reply(h, status: int, content_type: str, body: bytes):
        try:
            h.send_response(status)
            h.send_header("Content-Type", content_type)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
            pass


class CmpRelay(_Server):
    """Forwards CMP requests to `target` and records (request, answer) pairs in `exchanges`.
    `tamper`, when set, is called as tamper(index, request, answer, earlier exchanges) and
    returns the answer to send instead."""

    def __init__(self, target: str):
        self.target, self.exchanges, self.tamper = target, [], None

    def handle(self, h):
        request = h.rfile.read(int(h.headers["Content-Length"]))
        forward = urllib.request.Request(self.target, data=request, method="POST",
                                         headers={"Content-Type": "application/pkixcmp"})
        try:
            with urllib.request.urlopen(forward, timeout=10) as answer:
                status, content_type = answer.status, answer.headers["Content-Type"]
                body = answer.read()
        except urllib.error.HTTPError as exc:  # passed on as it is
            status, content_type, body = exc.code, exc.headers["Content-Type"], exc.read()
        if self.tamper is not None:
            body = self.tamper(len(self.exchanges), request, body, list(self.exchanges))
        self.exchanges.append((request, body))
        self.reply(h, status, content_type, body)

    def kinds(self) -> list[str]:
        return [body_type(m) for exchange in self.exchanges for m in exchange]


class StubHttpServer(_Server):
    def __init__(self, status=200, content_type="application/pkixcmp", body=b"", delay=0.0):
        self.status, self.content_type, self.body, self.delay = status, content_type, body, delay

    def handle(self, h):
        h.rfile.read(int(h.headers.get("Content-Length", 0)))
        time.sleep(self.delay)
        self.reply(h, self.status, self.content_type, self.body)
