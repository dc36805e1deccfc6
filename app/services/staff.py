"""Staff accounts: argon2 passwords, login with lockout, roles."""
import secrets
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select

from ..db_setup import sqlite_lock
from ..extensions import db
from ..models import StaffUser, utcnow
from . import ServiceError, audit

_hasher = PasswordHasher()
# Verified against when the email is unknown, so a wrong email costs the same time.
_DUMMY_HASH = _hasher.hash("videoar-dummy-password")
MIN_PASSWORD_LENGTH = 10


class LoginError(ServiceError):
    pass


class AccountLocked(LoginError):
    def __init__(self, until):
        super().__init__(_l("Muitas tentativas sem sucesso. Tente novamente após %(time)s.",
                            time=_format_local(until)))
        self.until = until


class StaffError(ServiceError):
    pass


def _format_local(value):
    from .office import local_time

    local = local_time(value)
    return local.strftime("%H:%M (%d/%m/%Y)")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def check_password_strength(password: str):
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise StaffError(_l("A senha deve ter pelo menos %(n)s caracteres.", n=MIN_PASSWORD_LENGTH))


def find_by_email(email: str) -> StaffUser | None:
    return db.session.execute(
        select(StaffUser).where(func.lower(StaffUser.email) == (email or "").strip().lower())
    ).scalar_one_or_none()


def authenticate(email: str, password: str) -> StaffUser:
    """Return the user for these credentials, counting failures per account.

    After LOGIN_MAX_FAILURES failures in a row the account is locked for LOGIN_LOCKOUT_MINUTES;
    the error says until when. Commits the failure count, so call it outside other work.
    The password is verified (argon2, about 0.2 s) before the writing transaction begins, so
    that on SQLite one login does not hold the write lock while it hashes.
    """
    db.session.rollback()  # nothing of the caller's is pending; start the read afresh
    with sqlite_lock(immediate=False):
        found = find_by_email(email)
        if found is None:
            verify_password(_DUMMY_HASH, password or "")
            password_ok, user_id = False, None
        else:
            password_ok, user_id = verify_password(found.password_hash, password or ""), found.id
            stored_hash = found.password_hash
        db.session.rollback()
    user = db.session.get(StaffUser, user_id) if user_id is not None else None
    now = utcnow()
    if user is None:
        audit.record("staff.login_failed", details={"email": (email or "")[:254]})
        db.session.commit()
        raise LoginError(_l("E-mail ou senha incorretos."))
    if user.password_hash != stored_hash:  # changed meanwhile: check against the new one
        password_ok = verify_password(user.password_hash, password or "")
    if user.locked_until is not None and user.locked_until > now:
        audit.record("staff.login_refused_locked", obj=user)
        db.session.commit()
        raise AccountLocked(user.locked_until)
    if not password_ok:
        user.failed_logins += 1
        cfg = current_app.config
        if user.failed_logins >= cfg["LOGIN_MAX_FAILURES"]:
            user.locked_until = now + timedelta(minutes=cfg["LOGIN_LOCKOUT_MINUTES"])
            user.failed_logins = 0
            audit.record("staff.locked", obj=user,
                         details={"until": user.locked_until.isoformat()})
            db.session.commit()
            raise AccountLocked(user.locked_until)
        audit.record("staff.login_failed", obj=user)
        db.session.commit()
        raise LoginError(_l("E-mail ou senha incorretos."))
    if not user.active:
        audit.record("staff.login_refused_inactive", obj=user)
        db.session.commit()
        raise LoginError(_l("Esta conta está desativada. Fale com o administrador."))
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    audit.record("staff.login", obj=user, actor=audit.staff_actor(user))
    db.session.commit()
    return user


def create_staff(email: str, name: str, password: str, roles: list[str]) -> StaffUser:
    if find_by_email(email) is not None:
        raise StaffError(_l("Já existe um usuário com este e-mail."))
    if not roles:
        raise StaffError(_l("Escolha pelo menos um papel."))
    check_password_strength(password)
    user = StaffUser(email=email.strip().lower(), name=name.strip(),
                     password_hash=hash_password(password),
                     **{f"is_{r}": r in roles for r in ("agent", "verifier", "admin")})
    db.session.add(user)
    db.session.flush()
    audit.record("staff.create", obj=user, details={"roles": sorted(roles)})
    return user


def _admins_left(excluding: StaffUser) -> int:
    return db.session.execute(
        select(func.count(StaffUser.id)).where(StaffUser.is_admin.is_(True),
                                               StaffUser.active.is_(True),
                                               StaffUser.id != excluding.id)
    ).scalar_one()


def set_roles(user: StaffUser, roles: list[str]):
    if not roles:
        raise StaffError(_l("Escolha pelo menos um papel."))
    if user.is_admin and "admin" not in roles and _admins_left(user) == 0:
        raise StaffError(_l("O escritório precisa de pelo menos um administrador ativo."))
    before = user.roles
    for role in ("agent", "verifier", "admin"):
        setattr(user, f"is_{role}", role in roles)
    if before != user.roles:
        audit.record("staff.roles", obj=user, details={"from": before, "to": user.roles})


def set_active(user: StaffUser, active: bool, actor_user: StaffUser):
    if not active and user.id == actor_user.id:
        raise StaffError(_l("Você não pode desativar a sua própria conta."))
    if not active and user.is_admin and _admins_left(user) == 0:
        raise StaffError(_l("O escritório precisa de pelo menos um administrador ativo."))
    if user.active != active:
        user.active = active
        user.session_version += 1
        audit.record("staff.activate" if active else "staff.deactivate", obj=user)


def reset_password(user: StaffUser, new_password: str | None = None) -> str:
    """Set a new password (a random one when none is given), end the user's sessions and
    return the password so the admin can hand it over. It is never logged."""
    password = new_password or secrets.token_urlsafe(12)
    check_password_strength(password)
    user.password_hash = hash_password(password)
    user.session_version += 1
    user.failed_logins = 0
    user.locked_until = None
    audit.record("staff.password_reset", obj=user)
    return password
