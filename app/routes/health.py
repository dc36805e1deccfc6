"""Health check of the web process and what it depends on."""
from flask import Blueprint, jsonify
from sqlalchemy import text

from ..extensions import db
from ..jobs import redis_connection

bp = Blueprint("health", __name__)


@bp.route("/healthz")
def healthz():
    """Database, Redis and the media process's last heartbeat."""
    result = {"web": "ok"}
    status = 200
    try:
        db.session.execute(text("SELECT 1"))
        result["database"] = "ok"
    except Exception:
        result["database"] = "error"
        status = 503
    try:
        conn = redis_connection()
        conn.ping()
        result["redis"] = "ok"
        result["media"] = "ok" if conn.get("videoar:media:heartbeat") else "down"
    except Exception:
        result["redis"] = "error"
        result["media"] = "unknown"
        status = 503
    return jsonify(result), status
