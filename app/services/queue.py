"""The agents' queue: requests by state, oldest first, with their waiting time."""
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, func, select

from ..extensions import db
from ..models import (CertificateRequest, Company, Person, Product, RequestDocument, StaffUser,
                      utcnow)
from . import workflow
from .calendar import BusinessCalendar

PAGE_SIZE = 50
# The state in which the office owes the client an answer within the promised business days.
AWAITING_REVIEW = "documents_submitted"
# `agent_id` value that selects the requests nobody has taken yet.
UNASSIGNED = 0


@dataclass
class QueueRow:
    """What the queue shows of one request (plain values: a page of the queue is read in one
    query, without loading model objects)."""

    id: int
    protocol: str
    state: str
    state_changed_at: datetime  # aware UTC
    since: datetime  # the same moment in the office's zone
    holder_name: str
    company_name: str | None
    product_name: str
    agent_name: str | None
    waiting_business_days: int
    overdue: bool  # past the review promise
    due_today: bool  # the last day of the review promise
    resubmission: bool = False  # documents sent again after a pendência


@dataclass
class QueuePage:
    rows: list[QueueRow]
    total: int
    page: int
    pages: int
    counts: dict[str, int]  # open requests per state, under the product and agent filters


def _name(column, condition, label):
    return select(column).where(condition).scalar_subquery().label(label)


def load_queue(*, state: str | None = None, product_id: int | None = None,
               agent_id: int | None = None, page: int = 1, open_only: bool = True,
               now: datetime | None = None) -> QueuePage:
    """One page of the queue, oldest in its state first, with the business days each request
    has waited in its current state and whether the review promise is broken.

    `state` narrows the rows; the per-state counts keep every open state so the agent sees the
    whole queue under the product and agent filters. `agent_id=UNASSIGNED` selects requests
    without an agent.
    """
    R = CertificateRequest
    scope = []
    if product_id:
        scope.append(R.product_id == product_id)
    if agent_id == UNASSIGNED:
        scope.append(R.assigned_agent_id.is_(None))
    elif agent_id:
        scope.append(R.assigned_agent_id == agent_id)

    counts = dict(db.session.execute(
        select(R.state, func.count()).where(R.state.in_(workflow.OPEN_STATES), *scope)
        .group_by(R.state)
    ).all())
    if state:
        state_filter = R.state == state
        if state in workflow.OPEN_STATES:
            total = counts.get(state, 0)
        else:
            total = db.session.execute(
                select(func.count()).select_from(R).where(state_filter, *scope)).scalar_one()
    elif open_only:
        state_filter = R.state.in_(workflow.OPEN_STATES)
        total = sum(counts.values())
    else:
        state_filter = None
        total = db.session.execute(select(func.count()).select_from(R).where(*scope)).scalar_one()
    filters = [*scope] if state_filter is None else [state_filter, *scope]

    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(1, page), pages)
    # The page's rows first, then the names for those rows only: scalar subqueries over 50
    # rows cost PostgreSQL far less planning than joining four tables (about 1 ms a page).
    page_rows = (
        select(R.id, R.protocol, R.state, R.state_changed_at, R.holder_id, R.company_id,
               R.product_id, R.assigned_agent_id)
        .where(*filters).order_by(R.state_changed_at.asc(), R.id.asc())
        .limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)
    ).subquery("page_rows")
    found = db.session.execute(
        select(page_rows.c.id, page_rows.c.protocol, page_rows.c.state,
               page_rows.c.state_changed_at,
               _name(Person.name, Person.id == page_rows.c.holder_id, "holder_name"),
               _name(Company.legal_name, Company.id == page_rows.c.company_id, "company_name"),
               _name(Product.name, Product.id == page_rows.c.product_id, "product_name"),
               _name(StaffUser.name, StaffUser.id == page_rows.c.assigned_agent_id,
                     "agent_name"),
               exists().where(RequestDocument.request_id == page_rows.c.id,
                              RequestDocument.round > 1).label("resubmission"))
        .order_by(page_rows.c.state_changed_at.asc(), page_rows.c.id.asc())
    ).all()

    from .office import get_settings

    calendar = BusinessCalendar.for_office()
    promise = get_settings().review_promise_business_days
    now = now or utcnow()
    rows = []
    for r in found:
        waited = calendar.business_days_between(r.state_changed_at, now)
        reviewing = r.state == AWAITING_REVIEW
        rows.append(QueueRow(
            id=r.id, protocol=r.protocol, state=r.state, state_changed_at=r.state_changed_at,
            since=r.state_changed_at.astimezone(calendar.tz), holder_name=r.holder_name,
            company_name=r.company_name, product_name=r.product_name, agent_name=r.agent_name,
            waiting_business_days=waited, overdue=reviewing and waited > promise,
            due_today=reviewing and waited == promise, resubmission=bool(r.resubmission)))
    return QueuePage(rows, total, page, pages, counts)
