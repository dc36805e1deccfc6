"""The audit chain: appended one at a time under concurrent writers, append-only in the
database, and any edit or deletion found and named by `flask audit verify` and the admin page."""
import json
import subprocess
import sys
import textwrap
import threading
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError

from app.db_setup import sqlite_immediate
from app.models import AuditChainHead, AuditEvent
from app.services import audit
from tests.support.processes import ROOT

EVENTS = AuditEvent.__table__
HEAD = AuditChainHead.__table__


def _append_events(count=5):
    """`count` events by different actors, as the app writes them; returns their seqs."""
    from app.extensions import db

    actors = [audit.SYSTEM, audit.Actor("staff", 7, "agente@ar-teste.example"),
              audit.Actor("client", 3, "titular 1234567897")]
    seqs = []
    for i in range(count):
        event = audit.record("request.transition", actor=actors[i % len(actors)],
                             from_state="documents_submitted", to_state="pendency",
                             reason=f"documento ilegível {i}", details={"page": i, "ação": "ok"})
        seqs.append(event.seq)
    db.session.commit()
    return seqs


@contextmanager
def attacker(db):
    """A connection of someone with direct database access who first gets the append-only
    triggers out of the way: PostgreSQL's replica mode (superuser) skips them for this
    transaction; on SQLite the triggers are dropped and, to leave no trace, put back."""
    db.session.commit()
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            yield conn
        else:
            triggers = conn.execute(text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                "AND tbl_name IN ('audit_event', 'audit_chain_head')")).all()
            assert {name for name, _ in triggers} == {"audit_event_append_only",
                                                      "audit_chain_head_forward_only"}
            for name, _ in triggers:
                conn.execute(text(f"DROP TRIGGER {name}"))
            yield conn
            for _, sql in triggers:
                conn.execute(text(sql))


def _breaks():
    return [(b.kind, b.seq, b.last) for b in audit.verify_chain()]


# --- appending -------------------------------------------------------------------------------

def test_events_are_chained_from_the_genesis_hash(app, db):
    _append_events(4)
    events = db.session.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars().all()
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].prev_hash == audit.GENESIS_HASH
    for before, after in zip(events, events[1:]):
        assert after.prev_hash == before.hash
    for e in events:
        assert e.hash == audit.event_hash(e) and len(e.hash) == 64
    head = db.session.get(AuditChainHead, 1)
    assert (head.last_seq, head.last_hash) == (len(events), events[-1].hash)
    assert json.loads(events[-3].details) == {"page": 1, "ação": "ok"}
    assert audit.verify_chain() == []


def test_an_empty_chain_is_intact(app, db):
    with attacker(db) as conn:
        conn.execute(delete(EVENTS))
        conn.execute(update(HEAD).values(last_seq=0, last_hash=audit.GENESIS_HASH))
    assert audit.verify_chain() == []
    assert _append_events(1) == [1]
    assert audit.verify_chain() == []


def test_a_rolled_back_change_takes_its_event_with_it(app, db):
    [_, last] = _append_events(2)
    audit.record("request.cancel", actor=audit.SYSTEM, reason="desistência")
    db.session.rollback()
    event = audit.record("request.cancel", actor=audit.SYSTEM, reason="desistência")
    db.session.commit()
    assert event.seq == last + 1
    assert audit.verify_chain() == []


def _writer(app, name, count, barrier, errors, deferred=False):
    """Append `count` events, each in its own app context and transaction. `deferred` makes
    SQLite open plain BEGIN transactions (as a GET view does) instead of BEGIN IMMEDIATE."""
    from app.extensions import db

    try:
        if deferred:
            sqlite_immediate.set(False)  # this thread's own context
        barrier.wait(timeout=30)
        for i in range(count):
            with app.app_context():
                audit.record("test.parallel", actor=audit.Actor("system", None, name),
                             details={"writer": name, "i": i})
                db.session.commit()
    except Exception as exc:  # reported by the test body
        errors.append(f"{name}: {exc!r}")


def _last_seq(db):
    db.session.commit()
    return db.session.get(AuditChainHead, 1).last_seq


def _assert_contiguous_chain(db, before, writers, count):
    db.session.commit()  # read after the writers, not from an older snapshot
    rows = db.session.execute(select(AuditEvent.seq, AuditEvent.prev_hash, AuditEvent.hash,
                                     AuditEvent.action, AuditEvent.details)
                              .order_by(AuditEvent.seq)).all()
    total = before + len(writers) * count
    assert [r.seq for r in rows] == list(range(1, total + 1))  # contiguous, no duplicates
    prev = audit.GENESIS_HASH
    for r in rows:
        assert r.prev_hash == prev
        prev = r.hash
    by_writer = {}
    for r in rows[before:]:
        assert r.action == "test.parallel"
        d = json.loads(r.details)
        by_writer.setdefault(d["writer"], []).append(d["i"])
    # Every writer's events are all there, in the order it wrote them.
    assert by_writer == {w: list(range(count)) for w in writers}
    head = db.session.get(AuditChainHead, 1)
    assert (head.last_seq, head.last_hash) == (total, prev)
    assert audit.verify_chain() == []


def test_parallel_writer_threads_append_one_at_a_time(app, db):
    count = 40
    writers = [f"thread-{n}" for n in range(6)]
    before = _last_seq(db)
    barrier = threading.Barrier(len(writers))
    errors = []
    threads = [threading.Thread(target=_writer, args=(app, w, count, barrier, errors),
                                kwargs={"deferred": n % 2 == 1})
               for n, w in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    _assert_contiguous_chain(db, before, writers, count)


PROCESS_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from sqlalchemy import text
    from app import create_app
    from app.extensions import db
    from app.services import audit

    go, name, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    app = create_app()
    with app.app_context():
        db.session.execute(text("SELECT 1"))  # connected before the start line
        db.session.rollback()
    Path(sys.argv[4]).touch()
    while not go.exists():
        time.sleep(0.005)
    for i in range(count):
        with app.app_context():
            audit.record("test.parallel", actor=audit.Actor("system", None, name),
                         details={"writer": name, "i": i})
            db.session.commit()
""")


def test_parallel_writer_processes_and_threads_append_one_at_a_time(app, db, process_env,
                                                                   tmp_path):
    from tests.support.processes import wait_until

    count = 50
    before = _last_seq(db)
    go = tmp_path / "go"
    procs = []
    for n in range(4):
        name = f"process-{n}"
        procs.append((name, subprocess.Popen(
            [sys.executable, "-c", PROCESS_WRITER, str(go), name, str(count),
             str(tmp_path / f"ready-{n}")],
            cwd=ROOT, env=process_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
    try:
        wait_until(lambda: all((tmp_path / f"ready-{n}").exists() for n in range(4)) or
                   any(p.poll() is not None for _, p in procs), timeout=60,
                   message="writer processes ready")
        thread_names = ["thread-0", "thread-1"]
        barrier = threading.Barrier(len(thread_names) + 1)
        errors = []
        threads = [threading.Thread(target=_writer, args=(app, w, count, barrier, errors))
                   for w in thread_names]
        for t in threads:
            t.start()
        go.touch()
        barrier.wait(30)
        for t in threads:
            t.join(120)
        outputs = {name: p.communicate(timeout=120)[0].decode(errors="replace")
                   for name, p in procs}
    finally:
        for _, p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert errors == []
    assert [p.returncode for _, p in procs] == [0] * len(procs), outputs
    _assert_contiguous_chain(db, before, [name for name, _ in procs] + thread_names, count)


def test_append_after_the_head_was_read_before_another_writer_committed(app, db):
    """A session that had the head row in its identity map (an earlier read) must still
    append after what another writer committed since, not on top of its stale copy."""
    errors = []
    before = _last_seq(db)
    db.session.rollback()  # a request starts with no transaction open
    token = sqlite_immediate.set(True)  # this test body writes, as a POST request does
    try:
        head = db.session.get(AuditChainHead, 1)  # held: it stays in the identity map
        assert head.last_seq == before
        other = threading.Thread(target=_writer,
                                 args=(app, "other", 1, threading.Barrier(1), errors))
        other.start()
        if db.engine.dialect.name == "postgresql":
            other.join(30)  # committed while `head` still says `before`
        audit.record("test.stale", actor=audit.SYSTEM)
        db.session.commit()  # SQLite: the other writer was waiting for this
        other.join(30)
    finally:
        sqlite_immediate.reset(token)
    assert errors == []
    actions = db.session.execute(select(AuditEvent.action).where(AuditEvent.seq > before)
                                 ).scalars()
    assert sorted(actions) == ["test.parallel", "test.stale"]
    assert db.session.get(AuditChainHead, 1).last_seq == before + 2
    assert audit.verify_chain() == []


# --- append-only in the database ---------------------------------------------------------------

def test_the_database_refuses_to_edit_an_event_or_rewind_the_head(app, db):
    s = _append_events(3)
    with pytest.raises(DBAPIError, match="append-only"):
        db.session.execute(update(EVENTS).where(EVENTS.c.seq == s[1]).values(reason="outro"))
    db.session.rollback()
    with pytest.raises(DBAPIError, match="only moves forward"):
        db.session.execute(update(HEAD).values(last_seq=s[1]))
    db.session.rollback()
    with pytest.raises(DBAPIError, match="only moves forward"):
        db.session.execute(update(HEAD).values(last_seq=s[2] + 2))
    db.session.rollback()
    if db.engine.dialect.name == "postgresql":
        with pytest.raises(DBAPIError, match="append-only"):
            db.session.execute(delete(EVENTS).where(EVENTS.c.seq == s[2]))
        db.session.rollback()
        with pytest.raises(DBAPIError, match="only moves forward"):
            db.session.execute(delete(HEAD))
        db.session.rollback()
    assert db.session.execute(select(AuditEvent.reason).where(AuditEvent.seq == s[1])
                              ).scalar_one() == "documento ilegível 1"
    assert audit.verify_chain() == []


# --- tampering is found and named -----------------------------------------------------------

@pytest.mark.parametrize("column, value", [
    ("reason", "documento legível"),
    ("ip", "203.0.113.9"),
    ("user_agent", "curl/8.0"),
    ("actor_label", "outra.pessoa@ar-teste.example"),
    ("actor_id", 8),
    ("to_state", "documents_approved"),
    ("details", '{"page": 9}'),
    ("at", datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
    ("action", "request.cancel"),
])
def test_an_edited_event_is_found_and_named(app, db, column, value):
    s = _append_events(5)
    with attacker(db) as conn:
        conn.execute(update(EVENTS).where(EVENTS.c.seq == s[2]).values({column: value}))
    [problem] = audit.verify_chain()
    assert (problem.kind, problem.seq) == ("changed", s[2])
    assert str(problem) == f"Evento nº {s[2]}: o conteúdo foi alterado depois de gravado."


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(app, db):
    s = _append_events(5)
    event = db.session.execute(select(AuditEvent).where(AuditEvent.seq == s[1])).scalar_one()
    event.reason = "motivo trocado"
    forged = audit.event_hash(event)
    db.session.rollback()
    with attacker(db) as conn:
        conn.execute(update(EVENTS).where(EVENTS.c.seq == s[1])
                     .values(reason="motivo trocado", hash=forged))
    assert _breaks() == [("unlinked", s[2], None)]
    assert str(audit.verify_chain()[0]) == (
        f"Evento nº {s[2]}: não se encadeia ao evento nº {s[1]} (o hash anterior não confere).")


def test_a_timestamp_moved_by_one_second_is_found(app, db):
    s = _append_events(3)
    at = db.session.execute(select(AuditEvent.at).where(AuditEvent.seq == s[0])).scalar_one()
    with attacker(db) as conn:
        conn.execute(update(EVENTS).where(EVENTS.c.seq == s[0])
                     .values(at=at + timedelta(seconds=1)))
    assert _breaks() == [("changed", s[0], None)]


def test_a_mangled_row_is_named_and_the_check_goes_on(app, db):
    s = _append_events(5)
    with attacker(db) as conn:
        # SQLite keeps whatever text is written, even in a timestamp column.
        bad = "não é uma data" if conn.dialect.name == "sqlite" else "0001-01-01"
        conn.execute(text("UPDATE audit_event SET at = :bad WHERE seq = :seq"),
                     {"bad": bad, "seq": s[1]})
        conn.execute(update(EVENTS).where(EVENTS.c.seq == s[3]).values(ip="10.0.0.1"))
    assert _breaks() == [("changed", s[1], None), ("changed", s[3], None)]


def test_a_mangled_sequence_number_is_named_by_row_id(app, db):
    s = _append_events(4)
    row_id = db.session.execute(select(AuditEvent.id).where(AuditEvent.seq == s[1])).scalar_one()
    with attacker(db) as conn:
        # On SQLite a text value survives in an integer column; PostgreSQL only takes numbers.
        bad = "dois" if conn.dialect.name == "sqlite" else -1
        conn.execute(text("UPDATE audit_event SET seq = :bad WHERE seq = :seq"),
                     {"bad": bad, "seq": s[1]})
    problems = audit.verify_chain()
    assert ("missing", s[1], s[1]) in [(b.kind, b.seq, b.last) for b in problems]
    assert f"Registro de auditoria id {row_id}: ilegível (dados corrompidos)." in map(str, problems)


def test_deleted_events_are_found_and_named(app, db):
    s = _append_events(6)
    with attacker(db) as conn:
        conn.execute(delete(EVENTS).where(EVENTS.c.seq.in_([s[2], s[3]])))
    assert _breaks() == [("missing", s[2], s[3])]
    assert str(audit.verify_chain()[0]) == f"Eventos nº {s[2]} a {s[3]}: ausentes (apagados)."
    with attacker(db) as conn:
        conn.execute(delete(EVENTS).where(EVENTS.c.seq == 1))
    assert _breaks() == [("missing", 1, 1), ("missing", s[2], s[3])]
    assert str(audit.verify_chain()[0]) == "Evento nº 1: ausente (apagado)."


def test_a_deleted_last_event_is_found_by_the_chain_head(app, db):
    s = _append_events(5)
    with attacker(db) as conn:
        conn.execute(delete(EVENTS).where(EVENTS.c.seq == s[4]))
    assert _breaks() == [("missing_tail", s[4], s[4])]
    assert str(audit.verify_chain()[0]) == (
        f"Evento nº {s[4]}: ausente (apagado); era o último registrado no topo da cadeia.")
    with attacker(db) as conn:
        conn.execute(delete(EVENTS).where(EVENTS.c.seq == s[3]))
    assert _breaks() == [("missing_tail", s[3], s[4])]


def test_a_deleted_last_event_with_the_head_rewound_is_found(app, db):
    s = _append_events(5)
    with attacker(db) as conn:
        conn.execute(delete(EVENTS).where(EVENTS.c.seq == s[4]))
        conn.execute(update(HEAD).values(last_seq=s[3]))
    assert _breaks() == [("head_hash", s[3], None)]


def test_an_event_slipped_in_after_the_head_is_found(app, db):
    s = _append_events(3)
    event = db.session.execute(select(AuditEvent).where(AuditEvent.seq == s[2])).scalar_one()
    values = {c.name: getattr(event, c.name) for c in EVENTS.columns if c.name != "id"}
    db.session.rollback()
    values.update(seq=s[2] + 1, prev_hash=values["hash"], reason="inserido")
    with attacker(db) as conn:
        conn.execute(EVENTS.insert().values(values))
    assert _breaks() == [("changed", s[2] + 1, None), ("beyond_head", s[2] + 1, None)]


def test_a_missing_chain_head_is_reported(app, db):
    _append_events(2)
    with attacker(db) as conn:
        conn.execute(delete(HEAD))
    assert _breaks() == [("head_missing", None, None)]


# --- the command and the admin page -------------------------------------------------------------

def test_cli_verify_passes_on_an_intact_chain_and_names_a_break(app, db, runner):
    s = _append_events(5)
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert f"Cadeia de auditoria íntegra: {s[4]} eventos." in result.output

    with attacker(db) as conn:
        conn.execute(update(EVENTS).where(EVENTS.c.seq == s[1]).values(ip="198.51.100.7"))
        conn.execute(delete(EVENTS).where(EVENTS.c.seq == s[4]))
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 1
    assert "A cadeia de auditoria foi alterada:" in result.output
    assert f"Evento nº {s[1]}: o conteúdo foi alterado depois de gravado." in result.output
    assert f"Evento nº {s[4]}: ausente (apagado)" in result.output
    assert "íntegra" not in result.output


def test_admin_page_verifies_the_chain_with_htmx(app, db, client, auth, admin):
    auth.login(admin.email)
    page = client.get("/admin/auditoria")
    assert page.status_code == 200
    assert 'hx-post="/admin/auditoria/verificar"' in page.text
    assert 'hx-target="#verify-result"' in page.text and 'id="verify-result"' in page.text
    assert "Verificar a cadeia de auditoria" in page.text

    hx = {"HX-Request": "true", "HX-Target": "verify-result"}
    response = client.post("/admin/auditoria/verificar", headers=hx)
    assert response.status_code == 200
    assert "<html" not in response.text and "<nav" not in response.text  # only the fragment
    assert "Cadeia de auditoria íntegra" in response.text
    assert 'role="status"' in response.text
    # The check itself is audited, and the chain still holds with it.
    assert db.session.execute(select(AuditEvent.action).order_by(AuditEvent.seq.desc())
                              ).scalars().first() == "audit.verify"

    login_seq = db.session.execute(select(AuditEvent.seq).where(
        AuditEvent.action == "staff.login")).scalars().first()
    assert login_seq is not None
    with attacker(db) as conn:
        conn.execute(update(EVENTS).where(EVENTS.c.seq == login_seq).values(ip="192.0.2.1"))
    response = client.post("/admin/auditoria/verificar", headers=hx)
    assert response.status_code == 200
    assert 'role="alert"' in response.text and "<html" not in response.text
    assert "A cadeia de auditoria foi alterada" in response.text
    assert f"Evento nº {login_seq}: o conteúdo foi alterado depois de gravado." in response.text
    assert "íntegra" not in response.text


def test_only_an_admin_can_verify(app, client, auth, agent):
    auth.login(agent.email)
    assert client.post("/admin/auditoria/verificar", headers={"HX-Request": "true"}
                       ).status_code == 403
