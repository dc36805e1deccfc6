"""Administration: office data, closures, staff users, products, outbox, audit."""
from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import select

from ..auth import staff_blueprint_guard
from ..extensions import db
from ..forms import (ClosureForm, OfficeSettingsForm, ProductForm, StaffCreateForm,
                     StaffRolesForm)
from ..models import AuditEvent, EmailMessage, OfficeClosure, Product, StaffUser
from ..services import admin as admin_service
from ..services import audit, staff
from ..services.office import get_settings

bp = Blueprint("admin", __name__, url_prefix="/admin")
staff_blueprint_guard(bp, "admin")


@bp.route("/")
def index():
    """Administration home."""
    return redirect(url_for("admin.office"))


@bp.route("/escritorio", methods=["GET", "POST"])
def office():
    """Office data shown to clients (emails, the call)."""
    settings = get_settings()
    form = OfficeSettingsForm(obj=settings)
    if form.validate_on_submit():
        admin_service.update_settings(**{k: getattr(form, k).data
                                         for k in admin_service.SETTINGS_FIELDS})
        db.session.commit()
        flash(_l("Dados do escritório salvos."), "success")
        return redirect(url_for("admin.office"))
    closures = db.session.execute(select(OfficeClosure).order_by(OfficeClosure.day)).scalars().all()
    return render_template("admin/office.html", form=form, closures=closures,
                           closure_form=ClosureForm()), 422 if form.errors else 200


@bp.route("/escritorio/fechamentos", methods=["POST"])
def add_closure():
    """Add a day the office is closed."""
    form = ClosureForm()
    if form.validate_on_submit():
        try:
            admin_service.add_closure(form.day.data, form.description.data)
        except admin_service.AdminError as exc:
            db.session.rollback()
            flash(exc.message, "error")
        else:
            db.session.commit()
            flash(_l("Data de fechamento adicionada."), "success")
    else:
        flash(_l("Informe a data e a descrição."), "error")
    return redirect(url_for("admin.office"))


@bp.route("/escritorio/fechamentos/<int:closure_id>/remover", methods=["POST"])
def remove_closure(closure_id):
    """Remove a closure day."""
    admin_service.remove_closure(db.get_or_404(OfficeClosure, closure_id))
    db.session.commit()
    flash(_l("Data de fechamento removida."), "success")
    return redirect(url_for("admin.office"))


@bp.route("/usuarios")
def users():
    """Staff users and their roles."""
    rows = db.session.execute(select(StaffUser).order_by(StaffUser.name)).scalars().all()
    return render_template("admin/users.html", users=rows)


@bp.route("/usuarios/novo", methods=["GET", "POST"])
def create_user():
    """Create a staff user."""
    form = StaffCreateForm()
    if form.validate_on_submit():
        try:
            user = staff.create_staff(form.email.data, form.name.data, form.password.data,
                                      form.roles.data)
        except staff.StaffError as exc:
            db.session.rollback()
            flash(exc.message, "error")
            return render_template("admin/user_form.html", form=form), 422
        db.session.commit()
        flash(_l("Usuário %(email)s criado.", email=user.email), "success")
        return redirect(url_for("admin.users"))
    return render_template("admin/user_form.html", form=form), 422 if form.errors else 200


def _user(user_id) -> StaffUser:
    return db.get_or_404(StaffUser, user_id)


@bp.route("/usuarios/<int:user_id>", methods=["GET", "POST"])
def edit_user(user_id):
    """A staff user's roles."""
    user = _user(user_id)
    form = StaffRolesForm(data={"roles": user.roles})
    if form.validate_on_submit():
        try:
            staff.set_roles(user, form.roles.data)
        except staff.StaffError as exc:
            db.session.rollback()
            flash(exc.message, "error")
        else:
            db.session.commit()
            flash(_l("Papéis atualizados."), "success")
            return redirect(url_for("admin.edit_user", user_id=user.id))
    return render_template("admin/user_edit.html", user=user, form=form)


@bp.route("/usuarios/<int:user_id>/desativar", methods=["POST"])
def deactivate_user(user_id):
    """Deactivate a staff user (ends their sessions)."""
    return _set_active(user_id, False)


@bp.route("/usuarios/<int:user_id>/ativar", methods=["POST"])
def activate_user(user_id):
    """Reactivate a staff user."""
    return _set_active(user_id, True)


def _set_active(user_id, active):
    user = _user(user_id)
    try:
        staff.set_active(user, active, current_user)
    except staff.StaffError as exc:
        db.session.rollback()
        flash(exc.message, "error")
    else:
        db.session.commit()
        flash(_l("Usuário ativado.") if active else _l("Usuário desativado."), "success")
    return redirect(url_for("admin.edit_user", user_id=user.id))


@bp.route("/usuarios/<int:user_id>/redefinir-senha", methods=["POST"])
def reset_user_password(user_id):
    """Give the user a new random password, shown once to the admin."""
    user = _user(user_id)
    password = staff.reset_password(user)
    db.session.commit()
    return render_template("admin/password_reset.html", user=user, password=password)


@bp.route("/produtos")
def products():
    """Products: type, policy OID, validity, where the key lives."""
    rows = db.session.execute(select(Product).order_by(Product.name)).scalars().all()
    return render_template("admin/products.html", products=rows)


@bp.route("/produtos/novo", methods=["GET", "POST"])
@bp.route("/produtos/<int:product_id>", methods=["GET", "POST"])
def edit_product(product_id=None):
    """Create or edit a product."""
    product = db.get_or_404(Product, product_id) if product_id else None
    form = ProductForm(obj=product) if product else ProductForm(
        data={"needs_documents": True, "needs_second_check": True, "active": True})
    if form.validate_on_submit():
        data = {k: getattr(form, k).data for k in admin_service.PRODUCT_FIELDS}
        data["policy_oid"] = data["policy_oid"] or None
        try:
            product = admin_service.save_product(product, **data)
        except admin_service.AdminError as exc:
            db.session.rollback()
            flash(exc.message, "error")
            return render_template("admin/product_form.html", form=form, product=product), 422
        db.session.commit()
        flash(_l("Produto salvo."), "success")
        return redirect(url_for("admin.products"))
    return render_template("admin/product_form.html", form=form, product=product), (
        422 if form.errors else 200)


@bp.route("/emails")
def outbox():
    """Every email sent or waiting, newest first (the local outbox when no SMTP is set)."""
    page = request.args.get("pagina", 1, type=int)
    rows = db.paginate(select(EmailMessage).order_by(EmailMessage.id.desc()), page=page,
                       per_page=50, error_out=False)
    return render_template("admin/outbox.html", emails=rows)


@bp.route("/emails/<int:email_id>")
def email_detail(email_id):
    """One email as the client reads it."""
    return render_template("admin/email.html", email=db.get_or_404(EmailMessage, email_id))


@bp.route("/auditoria")
def audit_log():
    """The audit trail, newest first, and the chain check."""
    page = request.args.get("pagina", 1, type=int)
    rows = db.paginate(select(AuditEvent).order_by(AuditEvent.seq.desc()), page=page,
                       per_page=100, error_out=False)
    return render_template("admin/audit.html", events=rows)


@bp.route("/auditoria/verificar", methods=["POST"])
def verify_audit():
    """Recompute the audit chain and say whether it is intact."""
    problems = audit.verify_chain()
    audit.record("audit.verify", details={"problems": len(problems)})
    db.session.commit()
    return render_template("admin/_audit_verify.html", problems=problems)


@bp.route("/certificados", methods=["GET", "POST"])
def credentials():
    """The certificates the office signs with: each agent's (counter-signature of termos), the
    office seal and the timestamp authority. Imported from PKCS#12; in homologação the built-in
    CA can issue them."""
    from ..models import SigningCredential
    from ..services import ca as ca_service

    agents = db.session.execute(select(StaffUser).where(StaffUser.is_agent.is_(True),
                                                        StaffUser.active.is_(True))
                                .order_by(StaffUser.name)).scalars().all()
    error = None
    if request.method == "POST":
        purpose = request.form.get("purpose", "")
        agent = db.session.get(StaffUser, request.form.get("staff_user_id", type=int) or 0)
        try:
            if request.form.get("issue"):
                ca_service.issue_homologation_credential(
                    purpose, staff_user=agent, actor=audit.staff_actor(current_user))
            else:
                upload = request.files.get("pkcs12")
                ca_service.import_pkcs12(
                    purpose, upload.read(1024 * 1024) if upload else b"",
                    request.form.get("password", ""), staff_user=agent,
                    actor=audit.staff_actor(current_user))
        except ca_service.CredentialRejected as exc:
            db.session.rollback()
            error = exc.message
        else:
            db.session.commit()
            flash(_l("Certificado de assinatura guardado (chave cifrada)."), "success")
            return redirect(url_for("admin.credentials"))
    rows = db.session.execute(select(SigningCredential).where(SigningCredential.active.is_(True))
                              .order_by(SigningCredential.purpose, SigningCredential.id)
                              ).scalars().all()
    return render_template("admin/credentials.html", credentials=rows, agents=agents,
                           labels=ca_service.CREDENTIAL_LABELS, error=error,
                           homologation=ca_service.is_homologation()), 422 if error else 200


@bp.route("/estado")
def system_status():
    """Processes, queues and failed jobs, media capacity, disk, last backup, certificate
    expiry; the fragment alone for htmx's polling."""
    from ..services import status as status_service

    template = ("admin/_status.html" if request.headers.get("HX-Request")
                else "admin/status.html")
    return render_template(template, status=status_service.system_status(),
                           warning_days=status_service.EXPIRY_WARNING_DAYS)


@bp.route("/estado/tarefas/<job_id>/tentar-novamente", methods=["POST"])
def retry_job(job_id):
    """Put a failed background job back on its queue (audited)."""
    from ..services import status as status_service

    try:
        status_service.retry_failed_job(job_id, actor=audit.staff_actor(current_user))
    except status_service.JobRetryError as exc:
        db.session.rollback()
        flash(exc.message, "error")
    else:
        db.session.commit()
        flash(_l("Tarefa recolocada na fila."), "success")
    return redirect(url_for("admin.system_status"))
