"""Staff authentication helpers: the user loader and role checks."""
from functools import wraps

from flask import abort
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required

from .extensions import db, login_manager
from .models import StaffUser

login_manager.login_view = "auth.login"
login_manager.login_message = _l("Entre com seu e-mail e senha para continuar.")
login_manager.login_message_category = "info"
login_manager.session_protection = "strong"


@login_manager.user_loader
def load_user(user_id: str):
    uid, _, version = user_id.partition(":")
    if not uid.isdigit() or not version.isdigit():
        return None
    user = db.session.get(StaffUser, int(uid))
    if user is None or not user.active or user.session_version != int(version):
        return None
    return user


def role_required(*roles):
    """Login required, and the user must hold at least one of `roles`."""

    def decorator(view):
        @wraps(view)
        @login_required
        def wrapped(*args, **kwargs):
            if not any(current_user.has_role(r) for r in roles):
                abort(403)
            return view(*args, **kwargs)

        wrapped.required_roles = roles
        return wrapped

    return decorator


def staff_blueprint_guard(blueprint, *roles):
    """Make every route of `blueprint` require login (and one of `roles`, if given)."""

    @blueprint.before_request
    @login_required
    def _guard():
        if roles and not any(current_user.has_role(r) for r in roles):
            abort(403)

    blueprint.required_roles = roles
