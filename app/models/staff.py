from flask_login import UserMixin

from ..extensions import db
from .types import UTCDateTime, utcnow

ROLES = ("agent", "verifier", "admin")


class StaffUser(UserMixin, db.Model):
    """A person of the office who logs in: any set of the roles agent, verifier and admin."""

    __tablename__ = "staff_user"

    id = db.Column(db.Integer, primary_key=True)
    email = db.Column(db.String(254), nullable=False, unique=True)
    name = db.Column(db.String(200), nullable=False)
    password_hash = db.Column(db.String(255), nullable=False)
    is_agent = db.Column(db.Boolean, nullable=False, default=False)
    is_verifier = db.Column(db.Boolean, nullable=False, default=False)
    is_admin = db.Column(db.Boolean, nullable=False, default=False)
    active = db.Column(db.Boolean, nullable=False, default=True)
    failed_logins = db.Column(db.Integer, nullable=False, default=0)
    locked_until = db.Column(UTCDateTime)
    last_login_at = db.Column(UTCDateTime)
    # Bumped on password reset or deactivation: invalidates every open session of the user.
    session_version = db.Column(db.Integer, nullable=False, default=1)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    @property
    def is_active(self):
        return self.active

    def get_id(self):
        return f"{self.id}:{self.session_version}"

    def has_role(self, role: str) -> bool:
        return bool(getattr(self, f"is_{role}"))

    @property
    def roles(self) -> list[str]:
        return [r for r in ROLES if self.has_role(r)]

    def __repr__(self):
        return f"<StaffUser {self.email}>"
