"""Periodic upkeep: reminders and expiry of requests waiting on the client."""
from datetime import timedelta

from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import or_, select

from . import job_context


def remind_and_expire():
    """Remind clients who have not acted for `reminder_after_days` (once per idle spell), and
    expire requests untouched for `expire_after_days`, revoking their links. Each is audited
    and emailed. Returns how many requests were reminded and expired.

    Each request is handled in its own transaction with its row locked and its state read
    again, so two runs at once (two cron schedulers, a run that overlaps the next) neither
    remind twice nor expire twice.
    """
    from ..extensions import db
    from ..models import CertificateRequest, utcnow
    from ..services import workflow
    from ..services.office import get_settings

    with job_context("remind_and_expire"):
        settings = get_settings()
        reminder_after = timedelta(days=settings.reminder_after_days)
        expire_after = timedelta(days=settings.expire_after_days)
        cutoff = utcnow() - min(reminder_after, expire_after)
        ids = db.session.execute(
            select(CertificateRequest.id).where(
                CertificateRequest.state.in_(workflow.AWAITING_CLIENT),
                CertificateRequest.state_changed_at <= cutoff,
                or_(CertificateRequest.last_client_activity_at.is_(None),
                    CertificateRequest.last_client_activity_at <= cutoff),
            ).order_by(CertificateRequest.id)
        ).scalars().all()
        db.session.commit()
        counts = {"reminded": 0, "expired": 0}
        for request_id in ids:
            done = _remind_or_expire(request_id, reminder_after, expire_after,
                                     settings.expire_after_days)
            db.session.commit()
            if done:
                counts[done] += 1
        return counts


def _remind_or_expire(request_id, reminder_after, expire_after, expire_days):
    from ..extensions import db
    from ..models import CertificateRequest, utcnow
    from ..services import audit, email, links, workflow

    r = db.session.execute(
        select(CertificateRequest).where(CertificateRequest.id == request_id)
        .with_for_update().execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if r is None or r.state not in workflow.AWAITING_CLIENT:
        return None
    now = utcnow()
    last = max(filter(None, (r.state_changed_at, r.last_client_activity_at)))
    idle = now - last
    if idle >= expire_after:
        revoked = 0
        for link in r.links:
            if link.revoked_at is None:
                link.revoked_at = now
                revoked += 1
        workflow.transition(r, "expired", actor=audit.SYSTEM,
                            reason=f"sem ação do cliente por {expire_days} dias",
                            details={"links_revoked": revoked})
        with force_locale("pt_BR"):
            email.queue_email("request_expired", r.holder.email,
                              _("Solicitação expirada — protocolo %(protocol)s",
                                protocol=r.protocol),
                              "request_expired", cert_request=r)
        return "expired"
    if idle >= reminder_after and (r.reminder_sent_at is None or r.reminder_sent_at < last):
        link = links.current_link(r, "documents")
        if link is None or link.expires_at <= now:
            link = links.create_link(r, "documents", actor=audit.SYSTEM)
        r.reminder_sent_at = now
        audit.record("request.reminder", actor=audit.SYSTEM, obj=r, cert_request=r,
                     details={"idle_days": idle.days})
        with force_locale("pt_BR"):
            email.queue_email("documents_reminder", r.holder.email,
                              _("Lembrete: importe seus documentos — protocolo %(protocol)s",
                                protocol=r.protocol),
                              "documents_reminder", cert_request=r,
                              link_url=links.url_for_link(link), link=link,
                              expires_at=last + expire_after)
        return "reminded"
    return None
