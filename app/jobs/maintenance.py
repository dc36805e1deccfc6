"""Periodic upkeep: reminders and expiry of requests waiting on the client."""
from datetime import timedelta

from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import select

from . import job_context


def remind_and_expire():
    """Remind clients who have not acted for `reminder_after_days`, and expire requests
    untouched for `expire_after_days` (revoking their links). Audited and emailed."""
    from ..extensions import db
    from ..models import CertificateRequest, utcnow
    from ..services import audit, email, links, workflow
    from ..services.office import get_settings

    with job_context("remind_and_expire"):
        settings = get_settings()
        now = utcnow()
        reminded = expired = 0
        candidates = db.session.execute(
            select(CertificateRequest).where(CertificateRequest.state.in_(workflow.AWAITING_CLIENT))
        ).scalars().all()
        for r in candidates:
            last = max(filter(None, (r.state_changed_at, r.last_client_activity_at)))
            idle = now - last
            if idle >= timedelta(days=settings.expire_after_days):
                workflow.transition(r, "expired", actor=audit.SYSTEM,
                                    reason=f"sem ação do cliente por {settings.expire_after_days} dias")
                for link in r.links:
                    if link.revoked_at is None:
                        link.revoked_at = now
                with force_locale("pt_BR"):
                    email.queue_email("request_expired", r.holder.email,
                                      _("Solicitação expirada — protocolo %(protocol)s",
                                        protocol=r.protocol),
                                      "request_expired", cert_request=r)
                expired += 1
            elif (idle >= timedelta(days=settings.reminder_after_days)
                  and (r.reminder_sent_at is None or r.reminder_sent_at < last)):
                link = links.current_link(r, "documents")
                if link is None or link.expires_at <= now:
                    link = links.create_link(r, "documents", actor=audit.SYSTEM)
                r.reminder_sent_at = now
                audit.record("request.reminder", actor=audit.SYSTEM, obj=r, cert_request=r)
                with force_locale("pt_BR"):
                    email.queue_email("documents_reminder", r.holder.email,
                                      _("Lembrete: importe seus documentos — protocolo %(protocol)s",
                                        protocol=r.protocol),
                                      "documents_reminder", cert_request=r,
                                      link_url=links.url_for_link(link), link=link)
                reminded += 1
            db.session.commit()
        return {"reminded": reminded, "expired": expired}
