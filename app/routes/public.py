"""Public pages: the office's home, the client's own request, and the entry by private link."""
from flask import Blueprint, current_app, jsonify, render_template

from ..extensions import db, limiter
from ..forms import PublicRequestForm, choices
from ..services import robot_check
from ..services import requests as request_service

bp = Blueprint("public", __name__)


@bp.route("/")
def home():
    """The office's public page: ask for a certificate, or staff login."""
    return render_template("public/home.html")


@bp.route("/privacidade")
def privacy():
    """The privacy notice (LGPD): what is collected, why, for how long, whom to ask."""
    from ..services import retention

    return render_template(
        "public/privacy.html", document_years=retention.setting("RETENTION_DOCUMENT_YEARS"),
        audit_years=retention.setting("RETENTION_AUDIT_YEARS"),
        unissued_days=retention.setting("RETENTION_UNISSUED_DAYS"))


@bp.route("/altcha/desafio")
@limiter.limit(lambda: current_app.config.get("ALTCHA_CHALLENGE_RATE_LIMIT", "30 per minute"))
def altcha_challenge():
    """A fresh proof-of-work challenge for the "Não sou um robô" widget (JSON)."""
    response = jsonify(robot_check.create_challenge())
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/solicitar", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["PUBLIC_FORM_RATE_LIMIT"], methods=["POST"])
def request_certificate():
    """The client asks for a certificate: product, CPF, contact, company data for e-CNPJ."""
    form = PublicRequestForm()
    products = request_service.public_products()
    form.products = {p.id: p for p in products}
    form.product_id.choices = choices([(0, PublicRequestForm.CHOOSE)] + [(p.id, p.name) for p in products])
    if not form.validate_on_submit():
        return render_template("public/request_form.html", form=form), 422 if form.errors else 200
    try:
        # Spent only once the form is otherwise valid: a typo costs no new proof of work.
        robot_check.verify(form.altcha.data)
    except robot_check.RobotCheckError as exc:
        form.altcha.errors.append(exc.message)
        return render_template("public/request_form.html", form=form), 422
    try:
        cert_request, on_record = request_service.open_public_request(
            product=form.product, cpf=form.cpf.data, name=form.name.data,
            email=form.email.data, phone=form.phone.data, company_data=form.company_data())
    except request_service.RequestError as exc:
        db.session.rollback()
        return render_template("public/request_form.html", form=form, refusal=exc.message), 409
    db.session.commit()
    holder_email = cert_request.holder.email
    return render_template(
        "public/request_done.html", cert_request=cert_request, on_record=on_record,
        sent_to=request_service.mask_email(holder_email) if on_record else holder_email)
