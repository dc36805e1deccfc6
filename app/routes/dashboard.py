"""The agents' dashboard: the queue of requests."""
from functools import lru_cache

from flask import Blueprint, make_response, render_template, request
from flask_babel import get_locale, ngettext
from flask_babel import gettext as _
from sqlalchemy import select

from ..auth import staff_blueprint_guard
from ..extensions import db
from ..models import Product, StaffUser
from ..services import queue as request_queue
from ..services import workflow

bp = Blueprint("dashboard", __name__, url_prefix="/painel")
staff_blueprint_guard(bp)


def _wants_queue_fragment() -> bool:
    """An htmx swap of the queue region (filters, pager), not a history restore."""
    return (request.headers.get("HX-Request") == "true"
            and request.headers.get("HX-Target") == "queue"
            and request.headers.get("HX-History-Restore-Request") != "true")


# `locale` is only the cache key: the lookups translate into the current request's language.
@lru_cache(maxsize=16)
def _state_labels(locale: str) -> dict[str, str]:
    return {s: workflow.label(s) for s in workflow.STATES}


@lru_cache(maxsize=2048)
def _waiting_label(locale: str, days: int) -> str:
    if not days:
        return _("menos de 1 dia útil")
    return ngettext("%(num)d dia útil", "%(num)d dias úteis", days)


def _labels(result) -> dict:
    """State names and waiting times, translated once per language and value rather than a
    few times per row: Flask-Babel's lookups showed high in the page's profile."""
    locale = str(get_locale())
    return {"state_labels": _state_labels(locale),
            "waiting_labels": {row.waiting_business_days: _waiting_label(
                locale, row.waiting_business_days) for row in result.rows}}


@bp.route("/")
def queue():
    """Requests by state, oldest first, filtered by state, product and agent."""
    state = request.args.get("estado") or None
    if state not in workflow.STATES:
        state = None
    product_id = request.args.get("produto", type=int)
    agent_id = request.args.get("agente", type=int)
    page = request.args.get("pagina", 1, type=int)
    result = request_queue.load_queue(state=state, product_id=product_id, agent_id=agent_id,
                                      page=page)
    # The filters as query arguments, for the pager's links.
    filter_args = {k: v for k, v in (("estado", state), ("produto", product_id),
                                     ("agente", agent_id)) if v is not None}
    context = dict(result=result, state=state, product_id=product_id, agent_id=agent_id,
                   filter_args=filter_args, unassigned=request_queue.UNASSIGNED,
                   **_labels(result))
    if _wants_queue_fragment():
        response = make_response(render_template("dashboard/_queue.html", **context))
    else:
        context.update(
            products=db.session.execute(select(Product.id, Product.name)
                                        .order_by(Product.name)).all(),
            agents=db.session.execute(select(StaffUser.id, StaffUser.name)
                                      .where(StaffUser.is_agent.is_(True))
                                      .order_by(StaffUser.name)).all(),
        )
        response = make_response(render_template("dashboard/queue.html", **context))
    # One URL, two bodies: caches must key on the htmx headers.
    response.vary.update(("HX-Request", "HX-Target"))
    return response
