"""The person registry (agent manual steps 1–7): search, register, detail, remote issuance."""
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import select

from ..auth import staff_blueprint_guard
from ..extensions import db
from ..forms import PersonForm, SearchPersonForm, StartRemoteIssuanceForm, choices
from ..models import Person, Product
from ..services import people, requests as request_service, scheduling
from ..services.audit import staff_actor

bp = Blueprint("people", __name__, url_prefix="/pessoas")
staff_blueprint_guard(bp, "agent", "admin")


@bp.route("/")
def search():
    """Search a person by CPF; offer "Cadastrar pessoa" when absent."""
    form = SearchPersonForm(request.args)
    person = None
    searched = "cpf" in request.args
    if searched and form.validate():
        person = people.find_person_by_cpf(form.cpf.data)
        if person is not None:
            return redirect(url_for("people.detail", person_id=person.id))
    recent = db.session.execute(select(Person).order_by(Person.created_at.desc()).limit(10)).scalars()
    return render_template("people/search.html", form=form, searched=searched, recent=recent)


@bp.route("/nova", methods=["GET", "POST"])
def register():
    """"Cadastrar pessoa"."""
    form = PersonForm()
    if request.method == "GET" and request.args.get("cpf"):
        form.cpf.data = request.args["cpf"]
    if form.validate_on_submit():
        try:
            person = people.register_person(form.cpf.data, **form.person_data())
        except people.DuplicatePerson as exc:
            form.cpf.errors.append(exc.message)
            return render_template("people/form.html", form=form, duplicate=exc.person), 409
        db.session.commit()
        flash(_l("Pessoa cadastrada."), "success")
        return redirect(url_for("people.detail", person_id=person.id))
    return render_template("people/form.html", form=form), 422 if form.errors else 200


def _get_person(person_id) -> Person:
    return db.get_or_404(Person, person_id)


@bp.route("/<int:person_id>")
def detail(person_id):
    """A person's record and requests."""
    return render_template("people/detail.html", person=_get_person(person_id))


@bp.route("/<int:person_id>/editar", methods=["GET", "POST"])
def edit(person_id):
    """Correct a person's data (the CPF is the key and does not change)."""
    person = _get_person(person_id)
    form = PersonForm(obj=person)
    if request.method == "POST":
        form.cpf.data = person.cpf
    if form.validate_on_submit():
        people.update_person(person, **form.person_data())
        db.session.commit()
        flash(_l("Dados atualizados."), "success")
        return redirect(url_for("people.detail", person_id=person.id))
    return render_template("people/form.html", form=form, person=person), 422 if form.errors else 200


@bp.route("/<int:person_id>/certificacao")
def certification(person_id):
    """"Certificação": the ways to issue a certificate for this person."""
    return render_template("people/certification.html", person=_get_person(person_id))


def _product_choices():
    products = db.session.execute(
        select(Product).where(Product.active.is_(True)).order_by(Product.name)
    ).scalars().all()
    return choices((p.id, p.name) for p in products), {p.id: p for p in products}


@bp.route("/<int:person_id>/certificacao/remota", methods=["GET", "POST"])
def start_remote(person_id):
    """"Emitir certificado remotamente": confirm the data and "Iniciar"."""
    person = _get_person(person_id)
    form = StartRemoteIssuanceForm()
    form.product_id.choices, products = _product_choices()
    if form.validate_on_submit():
        product = products.get(form.product_id.data)
        if product is None:
            abort(400)
        company = None
        if product.is_company:
            missing = [f for f in (form.cnpj, form.legal_name, form.company_city, form.company_uf)
                       if not f.data]
            for field in missing:
                field.errors.append(_l("Obrigatório para e-CNPJ."))
            if missing:
                return render_template("people/start_remote.html", person=person, form=form,
                                       products=products), 422
            company = people.find_or_register_company(
                form.cnpj.data, form.legal_name.data.strip(), form.company_city.data.strip(),
                form.company_uf.data, person, form.company_cei.data)
        try:
            cert_request = request_service.open_request(
                product=product, holder=person, company=company, origin="agent",
                created_by=current_user, actor=staff_actor(current_user))
            if not product.needs_documents:
                # e-Notariado: the room opens at once ("Copiar link de acesso").
                scheduling.open_instant_room(cert_request, current_user)
        except (request_service.RequestError, scheduling.SchedulingError) as exc:
            db.session.rollback()
            flash(exc.message, "error")
            return render_template("people/start_remote.html", person=person, form=form,
                                   products=products), 409
        db.session.commit()
        if product.needs_documents:
            flash(_l("Solicitação %(protocol)s criada. O cliente recebeu o e-mail para importar "
                     "os documentos.", protocol=cert_request.protocol), "success")
        else:
            flash(_l("Solicitação %(protocol)s criada e sala aberta. Copie o link de acesso e "
                     "envie ao cliente; o código de acesso foi enviado por e-mail.",
                     protocol=cert_request.protocol), "success")
        return redirect(url_for("requests.detail", request_id=cert_request.id))
    status = 422 if form.errors else 200
    return render_template("people/start_remote.html", person=person, form=form,
                           products=products), status
