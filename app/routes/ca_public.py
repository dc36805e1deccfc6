"""What the certificates point at, served to anyone: the built-in CA's certificates and CRLs
(CRL distribution point, authority information access), its policy page, and the local
timestamp authority (RFC 3161 over HTTP)."""
from cryptography.hazmat.primitives import serialization
from flask import Blueprint, abort, current_app, render_template, request

from ..db_setup import writes_db
from ..extensions import csrf, db, limiter
from ..models import utcnow
from ..services import ca as ca_service

bp = Blueprint("ca_public", __name__)
TSA_MAX_BYTES = 16 * 1024


def _ca():
    ca = ca_service.builtin_ca() if ca_service.is_homologation() else None
    if ca is None:
        abort(404)
    return ca


def _der(data: bytes, mimetype: str, filename: str, max_age: int = 300):
    response = current_app.response_class(data, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'inline; filename="{filename}"'
    response.headers["Cache-Control"] = f"public, max-age={max_age}"
    return response


@bp.route("/ac/raiz.crt")
def root_certificate():
    return _der(_ca().root_cert.public_bytes(serialization.Encoding.DER),
                "application/pkix-cert", "raiz.crt", 86400)


@bp.route("/ac/emissora.crt")
def issuing_certificate():
    return _der(_ca().issuing_cert.public_bytes(serialization.Encoding.DER),
                "application/pkix-cert", "emissora.crt", 86400)


@bp.route("/ac/emissora.crl")
@writes_db
def issuing_crl():
    """The newest CRL; a new one is signed when none exists or the last one is past its next
    update (revocations sign one at once)."""
    ca = _ca()
    crl = ca_service.current_crl()
    if crl is None or crl.next_update <= utcnow():
        crl = ca_service.publish_crl(ca)
        db.session.commit()
    return _der(crl.der, "application/pkix-crl", "emissora.crl", 60)


@bp.route("/ac/raiz.crl")
def root_crl():
    ca = _ca()
    now = utcnow().replace(microsecond=0)
    from datetime import timedelta

    der = ca.root_crl(crl_number=int(now.timestamp()), this_update=now,
                      next_update=now + timedelta(days=30))
    return _der(der, "application/pkix-crl", "raiz.crl", 3600)


@bp.route("/ac/dpc")
def policy():
    """The policy page the certificates' policy qualifier points at."""
    return render_template("public/ca_policy.html", homologation=ca_service.is_homologation())


@bp.route("/tsa", methods=["POST"])
@csrf.exempt
@writes_db
@limiter.limit("120 per minute")
def timestamp():
    """RFC 3161 over HTTP: a TimeStampReq in, a TimeStampResp out, signed by the local TSA."""
    if request.mimetype != "application/timestamp-query":
        abort(415)
    data = request.get_data(cache=False)
    if not data or len(data) > TSA_MAX_BYTES:
        abort(400)
    from ..services import termo as termo_service

    tsa = termo_service.local_tsa()
    db.session.commit()  # a credential issued on first use
    return current_app.response_class(tsa.respond(data),
                                      mimetype="application/timestamp-reply")
