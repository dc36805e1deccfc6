"""Issuance benchmarks in one run: certificate signing and a CRL with 10,000 revoked serials
(bench/issuance_ca.py), termo render + office seal with timestamp (bench/issuance_termo.py).

    .venv/bin/python bench/issuance.py

Targets (issue 5): termo render + seal ≤ 250 ms, certificate signing ≤ 50 ms, CRL with 10,000
serials ≤ 1 s. Each part prints its numbers and the ratio to its target; results are recorded in
docs/performance.md with the command that produced them.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import issuance_ca, issuance_termo  # noqa: E402


def main() -> int:
    print("== certificate signing and CRL (bench/issuance_ca.py)")
    status = issuance_ca.main([]) or 0
    print()
    print("== termo render + office seal with timestamp (bench/issuance_termo.py)")
    return status or issuance_termo.main([]) or 0


if __name__ == "__main__":
    sys.exit(main())
