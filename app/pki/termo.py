"""The termo de titularidade: its data and its PDF (WeasyPrint from a Jinja template).

The termo binds the holder (and, for a company, the responsible person) to the certificate's data
and duties. It is a legal text in Portuguese (pt-BR) whatever the interface language, so it is
rendered with its own Jinja environment — no Flask, no gettext. The signatures are digital (see
app/pki/pades.py): the text only says who signs and in which order.

    pdf = render_termo_pdf(TermoData(...))
"""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2

__all__ = ["TEMPLATE_DIR", "TermoData", "render_termo_html", "render_termo_pdf"]

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates" / "termo"
DEFAULT_ZONE = "America/Sao_Paulo"


@dataclass
class TermoData:
    """Everything the termo shows. Dates are aware datetimes, shown in `zone` (an IANA name).

    A person's certificate (e-CPF): holder_* is the person. A company's (e-CNPJ): company_name
    and company_cnpj are the holder, responsible_* the person who answers for the certificate
    and signs the termo (falling back to holder_name/holder_cpf when not given); holder_email
    is the certificate's e-mail either way. `recording_hashes` lists (segment name, SHA-256 hex)
    of the call's recording; `homologation` prints "HOMOLOGAÇÃO — sem valor legal" on every page.
    """

    holder_name: str
    holder_cpf: str
    holder_email: str
    product_name: str
    certificate_serial: str          # hex, as in the certificate
    certificate_sha256: str          # hex SHA-256 of the certificate's DER
    valid_from: datetime
    valid_until: datetime
    ra_name: str                     # registration authority (AR)
    ra_cnpj: str
    agent_name: str
    call_at: datetime                # start of the identification videoconference
    consent_text: str
    consent_accepted_at: datetime
    protocol: str
    company_name: str | None = None  # e-CNPJ: razão social
    company_cnpj: str | None = None
    responsible_name: str | None = None   # e-CNPJ: the person responsible for the certificate
    responsible_cpf: str | None = None
    face_photo_jpeg: bytes | None = None
    recording_hashes: list[tuple[str, str]] = field(default_factory=list)  # (segment, sha256 hex)
    homologation: bool = False
    zone: str = DEFAULT_ZONE
    certificate_subject: str | None = None  # the subject DN, if it should be shown
    issued_at: datetime | None = None        # when the termo was generated (default: now)

    @property
    def is_company(self) -> bool:
        return bool(self.company_name or self.company_cnpj)


# --- formatting -------------------------------------------------------------------------------

def format_cpf(value: str | None) -> str:
    digits = re.sub(r"\D", "", value or "")
    if len(digits) != 11:
        return value or ""
    return f"{digits[:3]}.{digits[3:6]}.{digits[6:9]}-{digits[9:]}"


def format_cnpj(value: str | None) -> str:
    digits = re.sub(r"\D", "", value or "")
    if len(digits) != 14:
        return value or ""
    return f"{digits[:2]}.{digits[2:5]}.{digits[5:8]}/{digits[8:12]}-{digits[12:]}"


def format_hex(value: str | None, group: int = 2, sep: str = ":") -> str:
    """'0a1b2c' → '0A:1B:2C' (an odd length gets a leading zero)."""
    digits = re.sub(r"[^0-9a-fA-F]", "", value or "").upper()
    if len(digits) % 2:
        digits = "0" + digits
    return sep.join(digits[i:i + group] for i in range(0, len(digits), group))


def _zone_label(zone: str) -> str:
    return "horário de Brasília" if zone == DEFAULT_ZONE else zone


def format_datetime(value: datetime | None, zone: str = DEFAULT_ZONE, seconds: bool = True) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        raise ValueError("the termo's dates must be aware datetimes")
    local = value.astimezone(ZoneInfo(zone))
    offset = local.strftime("%z")
    offset = f"UTC{offset[:3]}:{offset[3:]}" if offset else "UTC"
    clock = local.strftime("%H:%M:%S" if seconds else "%H:%M")
    return f"{local:%d/%m/%Y} às {clock} ({_zone_label(zone)}, {offset})"


def format_date(value: datetime | None, zone: str = DEFAULT_ZONE) -> str:
    if value is None:
        return ""
    return value.astimezone(ZoneInfo(zone)).strftime("%d/%m/%Y")


_MONTHS = ["janeiro", "fevereiro", "março", "abril", "maio", "junho", "julho", "agosto",
           "setembro", "outubro", "novembro", "dezembro"]


def format_long_date(value: datetime, zone: str = DEFAULT_ZONE) -> str:
    local = value.astimezone(ZoneInfo(zone))
    return f"{local.day} de {_MONTHS[local.month - 1]} de {local.year}"


# --- rendering --------------------------------------------------------------------------------

_env: jinja2.Environment | None = None


def _environment() -> jinja2.Environment:
    global _env
    if _env is None:
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
                                 autoescape=True, undefined=jinja2.StrictUndefined,
                                 trim_blocks=True, lstrip_blocks=True)
        env.filters.update(cpf=format_cpf, cnpj=format_cnpj, hexpairs=format_hex)
        _env = env
    return _env


def render_termo_html(data: TermoData, *, inline_css: bool = True) -> str:
    """The termo as HTML (what WeasyPrint lays out), with termo.css inlined unless told."""
    zone = data.zone or DEFAULT_ZONE
    ZoneInfo(zone)  # fail early on a bad zone name
    issued_at = data.issued_at or datetime.now(ZoneInfo(zone))
    photo_uri = None
    if data.face_photo_jpeg:
        photo_uri = "data:image/jpeg;base64," + base64.b64encode(data.face_photo_jpeg).decode()
    css = (TEMPLATE_DIR / "termo.css").read_text(encoding="utf-8") if inline_css else None
    return _environment().get_template("termo.html").render(
        d=data,
        css=css,
        photo_uri=photo_uri,
        dt=lambda v: format_datetime(v, zone),
        date=lambda v: format_date(v, zone),
        issued_long=format_long_date(issued_at, zone),
        issued_at=format_datetime(issued_at, zone),
        zone_label=_zone_label(zone),
    )


_stylesheet = None  # (mtime, weasyprint.CSS): termo.css parsed once, not at every render


def _weasyprint():
    """WeasyPrint, imported late (loading pango takes a while). Importing it sets Pillow's
    process-wide LOAD_TRUNCATED_IMAGES to True, which would make the upload checks in the same
    process accept truncated photos: it is put back at once (the termo embeds only whole JPEGs
    we decoded ourselves)."""
    from PIL import ImageFile

    import weasyprint

    ImageFile.LOAD_TRUNCATED_IMAGES = False
    return weasyprint


def _termo_stylesheet():
    weasyprint = _weasyprint()

    global _stylesheet
    path = TEMPLATE_DIR / "termo.css"
    mtime = path.stat().st_mtime_ns
    if _stylesheet is None or _stylesheet[0] != mtime:
        _stylesheet = (mtime, weasyprint.CSS(string=path.read_text(encoding="utf-8"),
                                             base_url=str(TEMPLATE_DIR)))
    return _stylesheet[1]


def render_termo_pdf(data: TermoData) -> bytes:
    """The termo as an A4 PDF (bytes), ready to be signed."""
    weasyprint = _weasyprint()
    html = render_termo_html(data, inline_css=False)
    # Everything is embedded (the photo as a data: URI): nothing else is fetched.
    fetcher = weasyprint.URLFetcher(allowed_protocols={"data"})
    return weasyprint.HTML(string=html, base_url=str(TEMPLATE_DIR), url_fetcher=fetcher
                           ).write_pdf(stylesheets=[_termo_stylesheet()])
