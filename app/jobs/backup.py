"""The scheduled backup job, and the `flask backup` / `flask restore` commands (docs/backup.md).

`scheduled_backup` (every BACKUP_SECONDS, worker.py) writes one archive into BACKUP_DIR, deletes
the oldest beyond BACKUP_KEEP and records the outcome in BACKUP_DIR/last.json for the admin's
status page. It never writes the secrets: they are kept apart.

    flask backup [--dir DIR] [--with-secrets]
    flask restore ARCHIVE [--secrets FILE] [--force]
"""
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

import click
from flask.cli import with_appcontext

from . import job_context

log = logging.getLogger(__name__)


def scheduled_backup():
    """The periodic job: one archive, the old ones pruned, the outcome in last.json. Raises
    (the job fails) when the backup failed, after recording it."""
    from flask import current_app

    from ..services import backup

    with job_context("backup"):
        config = current_app.config
        directory = backup.backup_dir(config)
        # The cron runs interval jobs once at every worker start: a restart must not make a
        # new archive when the last good one is recent.
        last = backup.last_backup(config)
        if last and last.get("ok"):
            age = (datetime.now(timezone.utc) - datetime.fromisoformat(last["at"])).total_seconds()
            if age < int(config.get("BACKUP_SECONDS", 86400)) - 60:
                return {"skipped": "the last backup is recent", "last": last.get("file")}
        try:
            report = backup.create_backup(directory)
        except Exception as exc:
            backup.record_last(directory, error=f"{type(exc).__name__}: {exc}")
            raise
        removed = backup.prune(directory, int(config.get("BACKUP_KEEP", 7)))
        backup.record_last(directory, report=report)
        if report.missing:
            log.warning("backup %s: %d referenced file(s) were gone when copied",
                        report.archive.name, len(report.missing))
        return {"file": report.archive.name, "size": report.size,
                "removed": [p.name for p in removed], "missing": len(report.missing)}


def _fail(exc):
    click.echo(str(getattr(exc, "message", exc)), err=True)
    sys.exit(1)


@click.command("backup")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Where to write the archive (default: BACKUP_DIR).")
@click.option("--with-secrets", is_flag=True,
              help="Also write the keys and secrets into <name>.secrets.tar (mode 600), to be "
                   "kept apart from the archive.")
@with_appcontext
def backup_command(directory, with_secrets):
    """Write one consistent archive of the database, stored files and settings, while the
    system runs. Keys and secrets are not in it."""
    from flask_babel import gettext as _

    from ..services import backup

    try:
        report = backup.create_backup(Path(directory) if directory else None,
                                      with_secrets=with_secrets)
    except backup.BackupError as exc:
        _fail(exc)
    click.echo(_("Backup gravado: %(file)s (%(size)d bytes; banco %(kind)s, revisão %(rev)s; "
                 "%(blobs)d arquivos, %(segments)d segmentos de gravação).",
                 file=str(report.archive), size=report.size, kind=report.database,
                 rev=report.revision or "-", blobs=report.counts.get("blobs", 0),
                 segments=report.counts.get("recording_files", 0)))
    for member in report.missing:
        click.echo(_("Aviso: %(member)s foi apagado depois do instantâneo do banco.",
                     member=member), err=True)
    click.echo(str(backup.KEPT_APART))
    if report.secrets is not None:
        click.echo(_("Segredos gravados à parte em %(file)s (modo 600): tire-o deste disco e "
                     "guarde-o longe dos backups.", file=str(report.secrets)))
    else:
        click.echo(_("Para gravá-los (uma vez, e guardá-los à parte): flask backup "
                     "--with-secrets."))


@click.command("restore")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@click.option("--secrets", "secrets_file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="The <name>.secrets.tar written by `flask backup "
                                 "--with-secrets`.")
@click.option("--force", is_flag=True,
              help="Replace a database and folders that are not empty.")
@with_appcontext
def restore_command(archive, secrets_file, force):
    """Bring a backup back into an empty database and empty storage, checking every file."""
    from flask_babel import gettext as _
    from flask_babel import ngettext

    from ..services import backup

    try:
        report = backup.restore_backup(archive, secrets=secrets_file, force=force)
    except backup.BackupError as exc:
        _fail(exc)
    manifest = report.manifest
    click.echo(_("Restaurado o backup de %(at)s: %(members)d membros conferidos (SHA-256).",
                 at=manifest.get("created_at"), members=report.members))
    if report.revision_from != report.revision_to:
        click.echo(_("Banco migrado da revisão %(old)s para %(new)s.",
                     old=report.revision_from, new=report.revision_to))
    if report.secrets_written:
        click.echo(_("Segredos restaurados: %(names)s.", names=", ".join(report.secrets_written)))
    else:
        click.echo(_("Sem --secrets: as chaves (DATA_KEYS, KEYS_PASSPHRASE) deste sistema "
                     "precisam ser as do sistema de origem, ou os arquivos cifrados e as "
                     "chaves da AC não poderão ser lidos."))
    for setting in report.secrets_overridden:
        click.echo(_("Atenção: %(name)s está definido no ambiente e tem precedência sobre o "
                     "do backup; use o valor do backup.", name=setting), err=True)
    if report.missing_blobs or report.missing_segments:
        click.echo(_("Arquivos referenciados ausentes: %(blobs)d do armazenamento, "
                     "%(segments)d segmentos.", blobs=report.missing_blobs,
                     segments=report.missing_segments), err=True)
    chain = report.chain
    if not chain.intact:
        click.echo(_("A cadeia de auditoria foi alterada:"), err=True)
        for problem in chain.breaks:
            click.echo(f"- {problem}", err=True)
        sys.exit(1)
    click.echo(ngettext("Cadeia de auditoria íntegra: %(num)d evento.",
                        "Cadeia de auditoria íntegra: %(num)d eventos.", chain.events))
