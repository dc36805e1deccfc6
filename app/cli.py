"""Command-line tools: `flask create-admin`, `flask setup`, `flask audit verify`."""
import secrets
import sys

import click
from flask import current_app

from .extensions import db


def register_cli(app):
    @app.cli.command("create-admin")
    @click.option("--email", required=True)
    @click.option("--name", default="Administrador")
    @click.option("--password", default=None, help="Default: a random one, printed once.")
    def create_admin(email, name, password):
        """Create an admin account (with every role, for a small office)."""
        from .services import staff

        password = password or secrets.token_urlsafe(12)
        try:
            staff.create_staff(email, name, password, ["admin", "agent", "verifier"])
        except staff.StaffError as exc:
            raise click.ClickException(str(exc.message))
        db.session.commit()
        click.echo(f"Admin {email} created. Password: {password}")

    @app.cli.command("setup")
    @click.option("--admin-email", default="admin@videoar.local")
    @click.option("--credentials-file", default=None,
                  help="Where to keep the first admin's password (mode 600).")
    def setup(admin_email, credentials_file):
        """Seed an empty database: office settings, default products and a first admin.

        Idempotent: an existing admin is left alone and its saved credentials are printed.
        """
        from pathlib import Path

        from sqlalchemy import select

        from .models import StaffUser
        from .services import admin as admin_service
        from .services import staff
        from .services.office import get_settings

        get_settings()
        created = admin_service.ensure_default_products()
        cred_path = Path(credentials_file or Path(current_app.config["INSTANCE_DIR"]) /
                         "admin-credentials.txt")
        has_admin = db.session.execute(
            select(StaffUser.id).where(StaffUser.is_admin.is_(True))).first()
        if not has_admin:
            password = secrets.token_urlsafe(12)
            staff.create_staff(admin_email, "Administrador", password,
                               ["admin", "agent", "verifier"])
            cred_path.write_text(f"{admin_email}\n{password}\n")
            cred_path.chmod(0o600)
        db.session.commit()
        if created:
            click.echo(f"Created {created} default products.")
        if cred_path.exists():
            login, password = cred_path.read_text().split("\n")[:2]
            click.echo(f"Admin login: {login}\nAdmin password: {password}")
        else:
            click.echo("An admin already exists (its password was not created by setup).")

    audit_group = click.Group("audit", help="The audit trail.")

    @audit_group.command("verify")
    def verify():
        """Recompute the audit chain; exit 1 and name each break if it was changed."""
        from flask_babel import gettext as _
        from flask_babel import ngettext

        from .services import audit

        check = audit.check_chain()
        if not check.intact:
            click.echo(_("A cadeia de auditoria foi alterada:"), err=True)
            for problem in check.breaks:
                click.echo(f"- {problem}", err=True)
            sys.exit(1)
        click.echo(ngettext("Cadeia de auditoria íntegra: %(num)d evento.",
                            "Cadeia de auditoria íntegra: %(num)d eventos.", check.events))

    from .jobs.retention import close_epoch_command, retention_cli

    audit_group.add_command(close_epoch_command)  # flask audit close-epoch
    app.cli.add_command(audit_group)
    app.cli.add_command(retention_cli)  # flask retention run [--dry-run]
    from .jobs.backup import backup_command, restore_command

    app.cli.add_command(backup_command)  # flask backup [--dir DIR] [--with-secrets]
    app.cli.add_command(restore_command)  # flask restore ARCHIVE [--secrets FILE] [--force]
    from .services.encryption import storage_cli

    app.cli.add_command(storage_cli)  # flask storage new-key | rotate-keys | encrypt-existing

    ca_group = click.Group("ca", help="The built-in CA (homologação) and the office's keys.")

    @ca_group.command("init")
    def ca_init():
        """Create the built-in CA (root and issuing CA), keys encrypted with KEYS_PASSPHRASE.
        Does nothing when it exists."""
        from .services import ca as ca_service

        if ca_service.ca_dir().exists():
            click.echo(f"The built-in CA exists: {ca_service.ca_dir()}")
            return
        ca = ca_service.init_builtin_ca()
        click.echo(f"Built-in CA (homologação) created in {ca_service.ca_dir()}: "
                   f"{ca.issuing_cert.subject.rfc4514_string()}")

    @ca_group.command("import")
    @click.option("--purpose", type=click.Choice(["agent", "seal", "tsa"]), required=True)
    @click.option("--staff-email", default=None, help="The agent's login (purpose agent).")
    @click.option("--password", prompt=True, hide_input=True, help="The PKCS#12's password.")
    @click.argument("pkcs12_file", type=click.Path(exists=True, dir_okay=False))
    def ca_import(purpose, staff_email, password, pkcs12_file):
        """Import a signing certificate and its key from a PKCS#12 file (kept encrypted)."""
        from pathlib import Path

        from sqlalchemy import select

        from .models import StaffUser
        from .services import ca as ca_service

        staff_user = None
        if purpose == "agent":
            staff_user = db.session.execute(select(StaffUser).where(
                StaffUser.email == (staff_email or "").lower())).scalar_one_or_none()
            if staff_user is None:
                raise click.ClickException("--staff-email must name an existing staff login.")
        try:
            credential = ca_service.import_pkcs12(purpose, Path(pkcs12_file).read_bytes(),
                                                  password, staff_user=staff_user)
        except ca_service.CredentialRejected as exc:
            raise click.ClickException(str(exc.message))
        db.session.commit()
        click.echo(f"Imported {credential.subject} (valid until {credential.not_after:%Y-%m-%d}).")

    app.cli.add_command(ca_group)
    from .services.status import health_cli

    app.cli.add_command(health_cli)  # flask health worker [--any-host]
