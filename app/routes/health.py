"""Health check of the web process and what it depends on."""
from flask import Blueprint, jsonify

from ..services.status import health

bp = Blueprint("health", __name__)


@bp.route("/healthz")
def healthz():
    """Database, Redis, and the media and worker processes' heartbeats ("ok" / "down").

    503 only when web itself cannot work (database or Redis): a missing worker or media process
    is reported, not a reason to restart web."""
    result = health()
    failing = result["database"] != "ok" or result["redis"] != "ok"
    return jsonify(result), 503 if failing else 200
