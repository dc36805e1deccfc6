"""The periodic retention job, and its commands.

`run_retention` (every RETENTION_SECONDS, worker.py) closes the open audit epoch when it is due
(AUDIT_EPOCH_DAYS old, or more than AUDIT_EPOCH_EVENTS events) with a checkpoint signed by the
office seal, then purges the requests and the audit epochs whose retention ended
(app.services.retention). Without a seal (no built-in CA, none imported) the epoch stays open
and the run goes on; epochs are then purged only once closed.

Commands (registered by app/cli.py):

    flask audit close-epoch          # close the open epoch now
    flask retention run [--dry-run]  # what the job does; --dry-run lists it only
"""
import logging
import sys
from datetime import datetime

import click

from . import job_context

log = logging.getLogger(__name__)


def close_epoch_if_due(now: datetime | None = None):
    """Close the open epoch when due and commit; returns the checkpoint or None."""
    from ..extensions import db
    from ..pki.authority import CertificateAuthorityError
    from ..services import audit, retention
    from ..services.ca import CaUnavailable

    if not retention.epoch_due(now):
        db.session.rollback()
        return None
    try:
        checkpoint = audit.close_epoch(actor=audit.SYSTEM)
    except (CaUnavailable, CertificateAuthorityError, audit.EpochNotClosed) as exc:
        db.session.rollback()
        log.warning("audit epoch not closed: %s", exc)
        return None
    db.session.commit()
    return checkpoint


def run_retention(now: datetime | None = None):
    """The periodic job. Returns a summary; raises (the job fails) when a purge failed, after
    the others were done."""
    from ..services import retention

    with job_context("retention"):
        checkpoint = close_epoch_if_due(now)
        report = retention.run(now)
        summary = {
            "epoch_closed": checkpoint.epoch if checkpoint is not None else None,
            "requests_purged": [p.protocol for p in report.requests],
            "blobs_deleted": sum(len(p.blobs) for p in report.requests),
            "epochs_purged": report.epochs,
            "epochs_refused": report.refused_epochs,
        }
        if report.errors:
            raise RuntimeError("retention: " + "; ".join(report.errors))
        return summary


# --- commands -------------------------------------------------------------------------------

@click.command("close-epoch")
def close_epoch_command():
    """Close the open audit epoch now, with a checkpoint signed by the office seal."""
    from flask_babel import gettext as _

    from ..extensions import db
    from ..services import audit
    from ..services.ca import CaUnavailable

    try:
        checkpoint = audit.close_epoch(actor=audit.Actor("system", None, "flask audit"))
    except (CaUnavailable, audit.EpochNotClosed) as exc:
        db.session.rollback()
        click.echo(str(exc.message), err=True)
        sys.exit(1)
    db.session.commit()
    click.echo(_("Época %(epoch)d fechada: eventos nº %(first)d a %(last)d.",
                 epoch=checkpoint.epoch, first=checkpoint.first_seq, last=checkpoint.last_seq))


retention_cli = click.Group("retention", help="Retention: purge what expired.")


@retention_cli.command("run")
@click.option("--dry-run", is_flag=True, help="Only list what would be closed and purged.")
def retention_run_command(dry_run):
    """Close the audit epoch when due and purge the expired requests and audit epochs."""
    from flask_babel import gettext as _

    from ..services import retention

    if dry_run:
        plan = retention.plan()
        if plan.epoch_due:
            click.echo(_("A época de auditoria aberta seria fechada."))
        for item in plan.requests:
            click.echo(_("Solicitação %(protocol)s seria expurgada (regra: %(rule)s, desde "
                         "%(since)s).", protocol=item.protocol, rule=item.expiry.rule,
                         since=item.expiry.purge_from.date().isoformat()))
        for checkpoint in plan.epochs:
            click.echo(_("Época %(epoch)d (eventos nº %(first)d a %(last)d) seria expurgada.",
                         epoch=checkpoint.epoch, first=checkpoint.first_seq,
                         last=checkpoint.last_seq))
        if not (plan.epoch_due or plan.requests or plan.epochs):
            click.echo(_("Nada a fechar nem a expurgar."))
        return
    try:
        summary = run_retention()
    except RuntimeError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    if summary["epoch_closed"] is not None:
        click.echo(_("Época %(epoch)d fechada.", epoch=summary["epoch_closed"]))
    click.echo(_("Solicitações expurgadas: %(count)d; arquivos apagados: %(files)d; épocas de "
                 "auditoria expurgadas: %(epochs)d.",
                 count=len(summary["requests_purged"]), files=summary["blobs_deleted"],
                 epochs=len(summary["epochs_purged"])))
    for epoch, breaks in summary["epochs_refused"].items():
        click.echo(_("Época %(epoch)d não expurgada: a cadeia não confere.", epoch=epoch),
                   err=True)
        for problem in breaks:
            click.echo(f"- {problem}", err=True)
