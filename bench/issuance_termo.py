"""Termo de titularidade benchmark: rendering the termo (WeasyPrint) and sealing it (PAdES B-LTA:
signature timestamp, DSS with the validation data of all signatures, document timestamp), the two
steps the server runs around the holder's signature (target: render + seal <= 250 ms, median,
on one core).

    .venv/bin/python bench/issuance_termo.py                 # 20 rounds
    .venv/bin/python bench/issuance_termo.py --rounds 50 --hashes 40 --keep /tmp/termo.pdf

Each round renders a termo with a face photo and `--hashes` recording segments, counter-signs it
with the agent's key, has the "browser" sign it (prepare_external → PKCS#1 v1.5 over the signed
attributes → finish_external), then seals it with the built-in RFC 3161 TSA (LocalTSA,
in-process), all with timestamps, and finally validates it (pyHanko, offline). The keys and
certificates come from a throwaway CA chain (RSA 2048) built like the tests' (tests/
test_pki_pades.py `build_pki`). The first round (imports, font loading) is left out of the
statistics. Times are wall-clock; CPU time is the process's user + system time.
"""
import argparse
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET_MS = 250.0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(rounds: int = 20, hashes: int = 4, keep: str | None = None) -> dict:
    """Run `rounds` + 1 rounds; return the per-step timings in ms (the first round dropped)."""
    import hashlib

    from cryptography.hazmat.primitives import hashes as crypto_hashes
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    from app.pki import pades
    from app.pki.termo import render_termo_pdf
    from app.pki.tsa import LocalTSA
    from tests.test_pki_pades import build_pki, sample_termo

    pki = build_pki()
    tsa = LocalTSA(pki.tsa.cert, pki.tsa.key, pki.chain)
    chain_der = [c.public_bytes(serialization.Encoding.DER) for c in pki.chain]
    segments = [(f"cliente-{i:04d}.webm", hashlib.sha256(bytes([i % 256, i // 256])).hexdigest())
                for i in range(hashes)]
    data = sample_termo(pki, recording_hashes=segments)
    steps = {k: [] for k in ("render", "agent", "holder", "seal", "validate", "cpu_render_seal")}
    size = 0
    for round_no in range(rounds + 1):
        t0, c0 = time.perf_counter(), _cpu()
        pdf = render_termo_pdf(data)
        t1, c1 = time.perf_counter(), _cpu()
        pdf = pades.sign_pdf(pdf, key=pki.agent.key, cert=pki.agent.cert, chain=pki.chain,
                             field_name="AgenteDeRegistro", reason="Contra-assinatura",
                             timestamper=tsa.timestamper())
        t2 = time.perf_counter()
        state = pades.prepare_external(pdf, cert_der=pki.holder.der, chain_der=chain_der,
                                       field_name="Titular", reason="Aceite",
                                       timestamper=tsa.timestamper())
        state = pades.ExternalSigning.from_json(state.to_json())
        signature = pki.holder.key.sign(state.to_be_signed, padding.PKCS1v15(),
                                        crypto_hashes.SHA256())
        pdf = pades.finish_external(state, signature, timestamper=tsa.timestamper())
        t3, c3 = time.perf_counter(), _cpu()
        pdf = pades.seal_pdf(pdf, key=pki.office.key, cert=pki.office.cert, chain=pki.chain,
                             timestamper=tsa.timestamper(),
                             validation_context=pades.make_validation_context(
                                 [pki.root.cert], pki.crls_der))
        t4, c4 = time.perf_counter(), _cpu()
        reports = pades.validate_pdf(pdf, trust_roots_der=[pki.root.der], crls_der=pki.crls_der)
        t5 = time.perf_counter()
        if not all(r.bottom_line for r in reports) or len(reports) != 4:
            raise SystemExit(f"the sealed termo does not validate: {reports}")
        if round_no == 0:
            continue  # warm-up: imports, fonts, pyHanko's first parse
        steps["render"].append((t1 - t0) * 1000)
        steps["agent"].append((t2 - t1) * 1000)
        steps["holder"].append((t3 - t2) * 1000)
        steps["seal"].append((t4 - t3) * 1000)
        steps["validate"].append((t5 - t4) * 1000)
        steps["cpu_render_seal"].append(((c1 - c0) + (c4 - c3)) * 1000)
        size = len(pdf)
    if keep:
        Path(keep).write_bytes(pdf)
    medians = {k: statistics.median(v) for k, v in steps.items()}
    together = [r + s for r, s in zip(steps["render"], steps["seal"])]
    medians["render_seal"] = statistics.median(together)
    medians["render_seal_p90"] = sorted(together)[int(0.9 * (len(together) - 1))]
    medians["ratio"] = medians["render_seal"] / TARGET_MS
    medians["size_kb"] = size / 1024
    medians["pages"] = _pages(pdf)
    return medians


def _pages(pdf: bytes) -> int:
    import pypdfium2

    doc = pypdfium2.PdfDocument(pdf)
    try:
        return len(doc)
    finally:
        doc.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--hashes", type=int, default=4, help="recording segments listed")
    parser.add_argument("--keep", help="write the last sealed termo here")
    args = parser.parse_args(argv)
    from importlib.metadata import version

    print(f"{platform.python_version()} WeasyPrint {version('weasyprint')} "
          f"pyHanko {version('pyhanko')}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}")
    r = measure(args.rounds, args.hashes, args.keep)
    print("| termo | render | agent sig. | holder sig. | seal (B-LTA) | render + seal "
          "| / target | p90 | CPU render + seal | validate | output |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {args.hashes} segments, photo | {r['render']:.0f} ms | {r['agent']:.0f} ms "
          f"| {r['holder']:.0f} ms | {r['seal']:.0f} ms | {r['render_seal']:.0f} ms "
          f"| {r['ratio']:.2f}× | {r['render_seal_p90']:.0f} ms | {r['cpu_render_seal']:.0f} ms "
          f"| {r['validate']:.0f} ms | {r['pages']} p., {r['size_kb']:.0f} KB |", flush=True)
    print(f"target: render + seal <= {TARGET_MS:.0f} ms (median of {args.rounds} rounds)")


if __name__ == "__main__":
    main()
