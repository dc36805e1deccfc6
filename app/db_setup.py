"""Engine settings per database.

SQLite: WAL journal, a busy timeout, foreign keys. A transaction that will write is opened
with BEGIN IMMEDIATE, so concurrent writers (web threads, the worker) queue for the write lock
instead of failing halfway through, which a read-then-write upgrade in WAL mode would do
(SQLITE_BUSY_SNAPSHOT). Requests with safe methods (GET, HEAD, OPTIONS) read with a plain
BEGIN, unless their view is marked `@writes_db`; jobs and commands always take the lock.
"""
from contextlib import contextmanager
from contextvars import ContextVar

from sqlalchemy import event
from sqlalchemy.engine import Engine

SQLITE_BUSY_TIMEOUT_MS = 15000
# Whether the next SQLite transaction of this thread/task takes the write lock up front.
sqlite_immediate: ContextVar[bool] = ContextVar("sqlite_immediate", default=True)


def writes_db(view):
    """Mark a GET view that writes (for example, auditing that a link was opened)."""
    view.writes_db = True
    return view


@contextmanager
def sqlite_lock(immediate: bool):
    """Within this block, SQLite transactions begin with (or without) the write lock."""
    token = sqlite_immediate.set(immediate)
    try:
        yield
    finally:
        sqlite_immediate.reset(token)


def init_app(app):
    from flask import request

    @app.before_request
    def _choose_lock_mode():
        view = app.view_functions.get(request.endpoint)
        immediate = request.method not in ("GET", "HEAD", "OPTIONS") or getattr(
            view, "writes_db", False)
        request.environ["videoar.sqlite_token"] = sqlite_immediate.set(immediate)

    @app.teardown_request
    def _reset_lock_mode(exc):
        token = request.environ.pop("videoar.sqlite_token", None)
        if token is not None:
            sqlite_immediate.reset(token)


def configure_engine(engine: Engine):
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, connection_record):
        # Let SQLAlchemy's "begin" event issue BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE" if sqlite_immediate.get() else "BEGIN")
