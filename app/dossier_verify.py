"""Offline check of a dossier ZIP exported by VideoAR (docs/dossier.md).

    python -m app.dossier_verify dossie-1234567890.zip [--trust raiz.pem]
    python3 dossier_verify.py dados-pessoais-52998224725.zip      # this file alone, anywhere

Needs Python 3.10+ and the `openssl` command; nothing of the app, its database or Flask (it
imports only the standard library, so it can be copied out and run on its own).

It checks, for the manifest at the ZIP's root and for each folder's own manifest it lists
(`parts`, one per request of an LGPD export):
- every file listed: present, its SHA-256 and size as in the manifest;
- files in the ZIP that no manifest lists;
- the audit events: each event's hash recomputed from its fields (the same canonical JSON as
  app/services/audit.py), and the link between consecutive events (`prev_hash` of event n+1 is
  the hash of event n) wherever the manifest holds both;
- the detached CMS signature `manifest.json.p7s` of `manifest.json` (`openssl cms -verify`):
  against the root certificate(s) of `--trust` when given, as of the export time the signed
  manifest states; otherwise only the signature, naming the signer and saying the trust was not
  checked.

It prints one line per problem ("ERRO: …") and exits 1, or "OK: …" lines and exits 0.
"""
import argparse
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone

# The fields each audit event's hash covers, in app/services/audit.py (tests check they agree).
HASHED_FIELDS = (
    "seq", "at", "actor_type", "actor_id", "actor_label", "action", "object_type", "object_id",
    "request_id", "from_state", "to_state", "reason", "ip", "user_agent", "details", "prev_hash",
)
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.p7s"
CHAIN = "chain.pem"
CHUNK_SIZE = 1024 * 1024
MAX_DEPTH = 3
OPENSSL_TIMEOUT = 60


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    ok: list[str] = field(default_factory=list)

    def problem(self, where: str, text: str) -> None:
        self.problems.append(f"ERRO: {where}: {text}")

    def good(self, where: str, text: str) -> None:
        self.ok.append(f"OK: {where}: {text}")


def event_hash(event: dict) -> str:
    """SHA-256 of the event's canonical JSON, as app/services/audit.py `_hash_values`."""
    payload = {name: event[name] for name in HASHED_FIELDS}
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


class _Checker:
    def __init__(self, zf: zipfile.ZipFile, report: Report, trust: str | None, openssl: str):
        self.zf = zf
        self.report = report
        self.trust = trust  # as the user named it
        self.trust_file = trust  # as openssl reads it (PEM)
        self.openssl = openssl
        self.covered: set[str] = set()
        infos = [i for i in zf.infolist() if not i.is_dir()]
        self.names: dict[str, zipfile.ZipInfo] = {}
        counts: dict[str, int] = {}
        for info in infos:
            counts[info.filename] = counts.get(info.filename, 0) + 1
            self.names.setdefault(info.filename, info)
        for name, n in sorted(counts.items()):
            if n > 1:
                report.problem(name, f"aparece {n} vezes no ZIP (só uma é conferida).")

    def _read(self, name: str) -> bytes | None:
        try:
            return self.zf.read(self.names[name])
        except (zipfile.BadZipFile, OSError, EOFError, KeyError):
            return None

    def _hash(self, name: str) -> tuple[str, int] | None:
        digest = hashlib.sha256()
        size = 0
        try:
            with self.zf.open(self.names[name]) as f:
                while True:
                    chunk = f.read(CHUNK_SIZE)
                    if not chunk:
                        break
                    digest.update(chunk)
                    size += len(chunk)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError):
            return None
        return digest.hexdigest(), size

    def bundle(self, prefix: str = "", depth: int = 0) -> None:
        where = prefix + MANIFEST
        self.covered.update({prefix + MANIFEST, prefix + SIGNATURE})
        if prefix + MANIFEST not in self.names:
            self.report.problem(where, "ausente do ZIP: não há o que conferir.")
            return
        data = self._read(prefix + MANIFEST)
        try:
            manifest = json.loads(data.decode("utf-8")) if data is not None else None
        except (UnicodeDecodeError, ValueError):
            manifest = None
        if not isinstance(manifest, dict):
            self.report.problem(where, "ilegível (não é um manifesto JSON).")
            return
        self._files(prefix, manifest)
        self._events(prefix, manifest)
        self._signature(prefix, data, manifest)
        for part in manifest.get("parts") or []:
            path = part.get("path") if isinstance(part, dict) else None
            if not isinstance(path, str) or not path.endswith("/") or ".." in path.split("/"):
                self.report.problem(where, f"parte inválida no manifesto: {part!r}.")
            elif depth >= MAX_DEPTH:
                self.report.problem(where, f"partes aninhadas demais ({prefix + path}).")
            else:
                self.bundle(prefix + path, depth + 1)

    def _files(self, prefix: str, manifest: dict) -> None:
        where = prefix + MANIFEST
        files = manifest.get("files")
        if not isinstance(files, list):
            self.report.problem(where, "o manifesto não lista os arquivos.")
            return
        checked = 0
        listed: set[str] = set()
        for entry in files:
            ok_entry = (isinstance(entry, dict) and isinstance(entry.get("path"), str)
                        and isinstance(entry.get("sha256"), str)
                        and isinstance(entry.get("size"), int))
            if not ok_entry:
                self.report.problem(where, f"item inválido no manifesto: {entry!r}.")
                continue
            name = prefix + entry["path"]
            if name in listed:
                self.report.problem(name, "listado mais de uma vez no manifesto.")
                continue
            listed.add(name)
            self.covered.add(name)
            if name not in self.names:
                self.report.problem(name, "ausente do ZIP (o manifesto lista este arquivo).")
                continue
            result = self._hash(name)
            if result is None:
                self.report.problem(name, "corrompido no ZIP (não foi possível lê-lo por "
                                          "inteiro; o CRC não confere).")
                continue
            sha256, size = result
            if sha256 != entry["sha256"].lower():
                self.report.problem(name, "alterado: o SHA-256 não confere com o manifesto "
                                          f"(manifesto {entry['sha256']}, arquivo {sha256}).")
            elif size != entry["size"]:
                self.report.problem(name, f"alterado: o tamanho ({size} bytes) não confere com "
                                          f"o manifesto ({entry['size']} bytes).")
            else:
                checked += 1
        if checked == len(files):
            self.report.good(where, _plural(checked, "arquivo conferido", "arquivos conferidos")
                             + " (SHA-256 e tamanho).")

    def _events(self, prefix: str, manifest: dict) -> None:
        where = prefix + MANIFEST
        events = manifest.get("audit_events", [])
        if not isinstance(events, list):
            self.report.problem(where, "a lista de eventos de auditoria é ilegível.")
            return
        good = True
        by_seq: dict[int, dict] = {}
        for event in events:
            seq = event.get("seq") if isinstance(event, dict) else None
            if not isinstance(seq, int) or not isinstance(event.get("hash"), str):
                self.report.problem(where, f"evento de auditoria ilegível: {event!r:.120}.")
                good = False
                continue
            label = f"{where} (auditoria, evento nº {seq})"
            if seq in by_seq:
                self.report.problem(label, "aparece mais de uma vez.")
                good = False
                continue
            by_seq[seq] = event
            missing = [name for name in HASHED_FIELDS if name not in event]
            if missing:
                self.report.problem(label, "faltam campos: " + ", ".join(missing) + ".")
                good = False
            elif event_hash(event) != event["hash"]:
                self.report.problem(label, "o conteúdo foi alterado depois de gravado (o hash "
                                           "não confere).")
                good = False
        links = 0
        for seq in sorted(by_seq):
            before = by_seq.get(seq - 1)
            if before is None:
                continue
            links += 1
            if by_seq[seq].get("prev_hash") != before["hash"]:
                self.report.problem(f"{where} (auditoria, evento nº {seq})",
                                    f"não se encadeia ao evento nº {seq - 1} (o hash anterior "
                                    "não confere).")
                good = False
        if good:
            self.report.good(where, _plural(len(by_seq), "evento de auditoria conferido",
                                            "eventos de auditoria conferidos")
                             + " (o hash de cada um e " + _plural(links, "elo", "elos")
                             + " entre eventos consecutivos).")

    def _signature(self, prefix: str, manifest_data: bytes, manifest: dict) -> None:
        where = prefix + MANIFEST
        if prefix + SIGNATURE not in self.names:
            self.report.problem(prefix + SIGNATURE, "ausente do ZIP: o manifesto não está "
                                                    "assinado.")
            return
        signature = self._read(prefix + SIGNATURE)
        chain = self._read(prefix + CHAIN) if prefix + CHAIN in self.names else None
        if signature is None:
            self.report.problem(prefix + SIGNATURE, "corrompido no ZIP.")
            return
        if shutil.which(self.openssl) is None:
            self.report.problem(where, "não foi possível conferir a assinatura: o comando "
                                       "openssl não foi encontrado.")
            return
        with tempfile.TemporaryDirectory(prefix="dossie-verify-") as work:
            paths = {name: os.path.join(work, name) for name in
                     ("manifest.json", "manifest.p7s", "chain.pem", "signer.pem")}
            for name, data in (("manifest.json", manifest_data), ("manifest.p7s", signature),
                               ("chain.pem", chain)):
                if data is not None:
                    with open(paths[name], "wb") as f:
                        f.write(data)
            command = [self.openssl, "cms", "-verify", "-binary", "-inform", "DER",
                       "-in", paths["manifest.p7s"], "-content", paths["manifest.json"],
                       "-out", os.devnull, "-signer", paths["signer.pem"], "-purpose", "any"]
            if self.trust:
                command += ["-CAfile", self.trust_file, "-no-CApath", "-no-CAstore", "-partial_chain"]
                if chain is not None:
                    command += ["-certfile", paths["chain.pem"]]
                at = _timestamp(manifest.get("exported_at"))
                if at is not None:
                    command += ["-attime", str(at)]
            else:
                command += ["-noverify"]
            result = _run(command)
            if result is None or result.returncode != 0:
                why = _first_error(result)
                if self.trust:
                    self.report.problem(where, "assinatura inválida ou cadeia não confiável "
                                               f"segundo {self.trust} (o manifesto, a "
                                               f"assinatura ou o certificado foi alterado): "
                                               f"{why}")
                else:
                    self.report.problem(where, "assinatura inválida (o manifesto ou a "
                                               f"assinatura foi alterado): {why}")
                return
            signer = _describe(self.openssl, paths["signer.pem"])
        if self.trust:
            self.report.good(where, f"assinatura válida de {signer}; cadeia confiável até "
                                    f"{self.trust}.")
        else:
            self.report.good(where, f"assinatura válida de {signer}; a confiança na cadeia NÃO "
                                    "foi verificada (informe --trust RAIZ.pem).")

    def unlisted(self) -> None:
        for name in sorted(set(self.names) - self.covered):
            self.report.problem(name, "não consta de nenhum manifesto (incluído depois da "
                                      "exportação?).")


def _run(command):
    try:
        return subprocess.run(command, capture_output=True, timeout=OPENSSL_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _first_error(result) -> str:
    if result is None:
        return "o openssl não respondeu."
    lines = [line.strip() for line in result.stderr.decode("utf-8", "replace").splitlines()
             if line.strip()]
    # openssl's first line ("Verification failure") is generic; the reason follows.
    detail = [line for line in lines if "error" in line.lower() or "fail" in line.lower()]
    return "; ".join((detail or lines or ["erro desconhecido"])[:2])


def _describe(openssl: str, pem_path: str) -> str:
    result = _run([openssl, "x509", "-in", pem_path, "-noout", "-subject", "-fingerprint",
                   "-sha256", "-nameopt", "RFC2253,-esc_msb"])
    if result is None or result.returncode != 0:
        return "signatário desconhecido"
    subject = fingerprint = ""
    for line in result.stdout.decode("utf-8", "replace").splitlines():
        key, _, value = line.partition("=")
        if key.strip().lower() == "subject":
            subject = value.strip()
        elif "fingerprint" in key.lower():
            fingerprint = value.strip()
    return f"{subject} (SHA-256 {fingerprint})" if fingerprint else subject


def _timestamp(value) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())


def _as_pem(path: str, work: str) -> str:
    """The trust file as PEM, which `openssl -CAfile` needs: a DER certificate (as
    /ac/raiz.crt serves it) is wrapped into a PEM copy."""
    with open(path, "rb") as f:
        data = f.read()
    if b"-----BEGIN" in data:
        return path
    body = base64.b64encode(data).decode("ascii")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    target = os.path.join(work, "trust.pem")
    with open(target, "w", encoding="ascii") as f:
        f.write("-----BEGIN CERTIFICATE-----\n" + "\n".join(lines)
                + "\n-----END CERTIFICATE-----\n")
    return target


def verify(path: str, trust: str | None = None, openssl: str = "openssl") -> Report:
    """Check the ZIP at `path`; the report lists problems and what was found right. `trust`
    is a file of root certificates, PEM or one DER certificate."""
    report = Report()
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        report.problem(path, f"não é um ZIP legível ({exc}).")
        return report
    with zf, tempfile.TemporaryDirectory(prefix="dossie-trust-") as work:
        checker = _Checker(zf, report, trust, openssl)
        if trust:
            checker.trust_file = _as_pem(trust, work)
        checker.bundle()
        checker.unlisted()
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.dossier_verify",
        description="Confere um ZIP de dossiê exportado pelo VideoAR, sem o sistema: o SHA-256 "
                    "e o tamanho de cada arquivo, a trilha de auditoria e a assinatura do "
                    "manifesto.")
    parser.add_argument("zip", help="o arquivo ZIP exportado")
    parser.add_argument("--trust", metavar="RAIZ.pem",
                        help="certificado(s) raiz confiável(is), em PEM, contra o qual a "
                             "assinatura do manifesto é conferida")
    parser.add_argument("--openssl", default="openssl", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.trust and not os.path.isfile(args.trust):
        parser.error(f"arquivo não encontrado: {args.trust}")
    report = verify(args.zip, trust=args.trust, openssl=args.openssl)
    if report.problems:
        for line in report.problems:
            print(line)
        found = _plural(len(report.problems), "problema encontrado", "problemas encontrados")
        print(f"FALHOU: {found}.", file=sys.stderr)
        return 1
    for line in report.ok:
        print(line)
    print("OK: nenhum problema encontrado.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
