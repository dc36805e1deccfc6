"""The agents' dashboard: the queue of requests."""
from flask import Blueprint, render_template, request
from sqlalchemy import select

from ..auth import staff_blueprint_guard
from ..extensions import db
from ..models import Product, StaffUser
from ..services import queue as request_queue
from ..services import workflow

bp = Blueprint("dashboard", __name__, url_prefix="/painel")
staff_blueprint_guard(bp)


@bp.route("/")
def queue():
    """Requests by state, oldest first, filtered by state, product and agent."""
    state = request.args.get("estado") or None
    if state not in workflow.STATES:
        state = None
    product_id = request.args.get("produto", type=int)
    agent_id = request.args.get("agente", type=int)
    page = request.args.get("pagina", 1, type=int)
    result = request_queue.load_queue(state=state, product_id=product_id, agent_id=agent_id, page=page)
    context = dict(
        result=result, state=state, product_id=product_id, agent_id=agent_id,
        products=db.session.execute(select(Product).order_by(Product.name)).scalars().all(),
        agents=db.session.execute(select(StaffUser).where(StaffUser.is_agent.is_(True))
                                  .order_by(StaffUser.name)).scalars().all(),
    )
    if request.headers.get("HX-Request") and request.headers.get("HX-Target") == "queue":
        return render_template("dashboard/_queue.html", **context)
    return render_template("dashboard/queue.html", **context)
