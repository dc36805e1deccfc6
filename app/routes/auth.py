"""Staff login and logout."""
from flask import (Blueprint, abort, current_app, flash, redirect, render_template, request,
                   session, url_for)
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required, login_user, logout_user

from .. import LANGUAGE_COOKIE
from ..extensions import db, limiter
from ..forms import LoginForm
from ..services import audit, staff

bp = Blueprint("auth", __name__, url_prefix="/equipe")


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("dashboard.queue")


@bp.route("/entrar", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT"], methods=["POST"])
def login():
    """Staff login form."""
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.queue"))
    form = LoginForm()
    if form.validate_on_submit():
        try:
            user = staff.authenticate(form.email.data, form.password.data)
        except staff.LoginError as exc:
            form.password.errors.append(exc.message)
            return render_template("auth/login.html", form=form), 401
        session.clear()
        login_user(user)
        return redirect(_safe_next(request.args.get("next")))
    return render_template("auth/login.html", form=form)


@bp.route("/sair", methods=["POST"])
@login_required
def logout():
    """End the staff session."""
    audit.record("staff.logout", obj=current_user._get_current_object())
    db.session.commit()
    logout_user()
    session.clear()
    flash(_l("Você saiu do sistema."), "info")
    return redirect(url_for("auth.login"))


@bp.route("/idioma/<lang>", methods=["POST"])
def set_language(lang):
    """Switch the interface language (pt-BR is the default) and go back to the page."""
    if lang not in current_app.config["LANGUAGES"]:
        abort(404)
    target = request.form.get("next")
    if not target and not current_user.is_authenticated:
        target = url_for("public.home")
    response = redirect(_safe_next(target), code=303)
    # Its own cookie, so that the choice outlives logging in and out (see app.select_locale).
    response.set_cookie(LANGUAGE_COOKIE, lang, max_age=365 * 24 * 3600, httponly=True,
                        samesite="Lax", secure=current_app.config["SESSION_COOKIE_SECURE"])
    return response
