"""The agents' queue: requests by state, oldest first, with their waiting time."""
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import joinedload

from ..extensions import db
from ..models import CertificateRequest, utcnow
from . import workflow
from .calendar import BusinessCalendar

PAGE_SIZE = 50


@dataclass
class QueueRow:
    request: CertificateRequest
    waiting_business_days: int
    overdue: bool


@dataclass
class QueuePage:
    rows: list[QueueRow]
    total: int
    page: int
    pages: int
    counts: dict[str, int]


def load_queue(*, state: str | None = None, product_id: int | None = None,
               agent_id: int | None = None, page: int = 1, open_only: bool = True) -> QueuePage:
    filters = []
    if state:
        filters.append(CertificateRequest.state == state)
    elif open_only:
        filters.append(CertificateRequest.state.in_(workflow.OPEN_STATES))
    if product_id:
        filters.append(CertificateRequest.product_id == product_id)
    if agent_id:
        filters.append(CertificateRequest.assigned_agent_id == agent_id)

    total = db.session.execute(
        select(func.count(CertificateRequest.id)).where(*filters)
    ).scalar_one()
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(1, page), pages)
    requests = db.session.execute(
        select(CertificateRequest).where(*filters)
        .options(joinedload(CertificateRequest.holder), joinedload(CertificateRequest.product),
                 joinedload(CertificateRequest.assigned_agent),
                 joinedload(CertificateRequest.company))
        .order_by(CertificateRequest.state_changed_at.asc(), CertificateRequest.id.asc())
        .limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)
    ).scalars().all()

    count_filters = [f for f in filters if f is not None and "state" not in str(f)]
    counts = dict(db.session.execute(
        select(CertificateRequest.state, func.count(CertificateRequest.id))
        .where(*count_filters).group_by(CertificateRequest.state)
    ).all())

    calendar = BusinessCalendar.for_office()
    from .office import get_settings

    promise = get_settings().review_promise_business_days
    now = utcnow()
    rows = []
    for r in requests:
        waited = calendar.business_days_between(r.state_changed_at, now)
        rows.append(QueueRow(r, waited, r.state == "documents_submitted" and waited >= promise))
    return QueuePage(rows, total, page, pages, counts)
