"""Built-in CA benchmark: time to sign one holder's certificate and to build a CRL of 10,000
revoked certificates.

    .venv/bin/python bench/issuance_ca.py [--runs 50] [--revoked 10000] [--crl-runs 5]

A fresh BuiltinCA (root and issuing CA, RSA 3072) in a temporary directory signs e-CPF
certificates for an RSA 2048 key with every otherName field filled:
- "sign": `profiles.build_certificate` alone (the profile, the extensions, the RSA signature);
- "submit": `BuiltinCA.submit`, what the app calls: the CSR parsed and its signature and key
  checked, the certificate signed and written (fsynced) under issued/.
Target: <= 50 ms per certificate (median). Then `build_crl` with `--revoked` entries (random
159-bit serials, reasons cycling through key_compromise, superseded, cessation_of_operation and
unspecified), DER. Target: <= 1 s for 10,000 entries (median).
"""
import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cryptography  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.backends.openssl.backend import backend  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from app.pki.builtin_ca import BuiltinCA  # noqa: E402
from app.pki.profiles import PersonData, ProfileSpec, build_certificate  # noqa: E402

SIGN_TARGET_MS = 50
CRL_TARGET_MS = 1000
REASONS = ("key_compromise", "superseded", "cessation_of_operation", "unspecified")

PERSON = PersonData(
    name="José Conceição", cpf="52998224725", email="jose@example.com",
    birth_date=date(1980, 1, 31), nis="12345678901", rg_number="123456789", rg_issuer="SSP",
    rg_uf="SP", voter_id="123456789012", voter_zone="45", voter_section="678",
    voter_city="São Paulo", voter_uf="SP", cei="123456789012",
)


def timed(fn, runs):
    """Milliseconds per call of `fn`, `runs` times."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--revoked", type=int, default=10_000)
    parser.add_argument("--crl-runs", type=int, default=5)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="videoar-bench-ca-") as tmp:
        run(args, Path(tmp) / "ca")


def run(args, directory: Path):
    ca = BuiltinCA.create(directory, b"bench passphrase", base_url="https://ar.example.com")
    profile = ProfileSpec(kind="e_cpf", cert_type="A1", policy_oid="2.16.76.1.2.1.99",
                          validity_months=12, issuing_ca_name=ca.issuing_ca_name,
                          ar_cnpj="11444777000161", identification="videoconferencia",
                          crl_url=ca.crl_url, ca_issuers_url=ca.ca_issuers_url,
                          cps_url="https://ar.example.com/dpc", homologation=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr_der = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "token")]))
               .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    now = datetime.now(timezone.utc)

    def sign():
        build_certificate(public_key=key.public_key(), profile=profile, holder=PERSON,
                          issuer_cert=ca.issuing_cert, issuer_key=ca._issuing_key,
                          serial=x509.random_serial_number(), not_before=now)

    revoked = [(x509.random_serial_number(), now - timedelta(minutes=i), REASONS[i % 4])
               for i in range(args.revoked)]
    crl_size = []

    def crl():
        crl_size.append(len(ca.build_crl(revoked, crl_number=1, this_update=now,
                                         next_update=now + timedelta(days=1))))

    print(f"Python {platform.python_version()}, cryptography {cryptography.__version__} "
          f"({backend.openssl_version_text()}); {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; {args.runs} certificates, {args.crl_runs} CRLs")
    print(f"{'step':<40} {'runs':>5} {'median ms':>10} {'max ms':>8} {'median/target':>14}")
    sign()  # warm-up
    for label, fn, runs, target in (
            ("sign an e-CPF certificate", sign, args.runs, SIGN_TARGET_MS),
            ("submit (CSR checks, sign, write)", lambda: ca.submit(csr_der, profile, PERSON),
             args.runs, SIGN_TARGET_MS),
            (f"CRL with {args.revoked:,} revoked", crl, args.crl_runs, CRL_TARGET_MS)):
        times = timed(fn, runs)
        median = statistics.median(times)
        print(f"{label:<40} {runs:>5} {median:10.1f} {max(times):8.1f} {median / target:13.2f}x")
    print(f"CRL size: {crl_size[-1] / 1e6:.2f} MB")
    print(f"targets: a certificate signed in <= {SIGN_TARGET_MS} ms, a CRL of 10,000 entries "
          f"built in <= {CRL_TARGET_MS} ms (median/target <= 1.00 meets it)")


if __name__ == "__main__":
    main()
