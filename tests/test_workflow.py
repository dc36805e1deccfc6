"""The state machine: only allowed steps, each audited."""
import pytest
from sqlalchemy import select

from app.models import AuditEvent
from app.services import workflow


def test_invalid_transition_is_refused_and_leaves_state(factory, mailbox, db):
    cert_request = factory.request()
    with pytest.raises(workflow.InvalidTransition) as exc:
        workflow.transition(cert_request, "issued")
    assert "não pode passar para" in str(exc.value.message)
    db.session.rollback()
    db.session.refresh(cert_request)
    assert cert_request.state == "documents_pending"


def test_every_state_has_transitions_defined():
    assert set(workflow.TRANSITIONS) == set(workflow.STATES)
    for targets in workflow.TRANSITIONS.values():
        assert set(targets) <= set(workflow.STATES)


def test_whole_happy_path_is_allowed(factory, mailbox, db):
    cert_request = factory.request()
    path = ["documents_submitted", "pendency", "documents_submitted", "documents_approved",
            "scheduled", "in_conference", "conference_done", "second_check", "approved",
            "issued", "revoked"]
    for state in path:
        workflow.transition(cert_request, state, reason="teste")
    db.session.commit()
    states = db.session.execute(
        select(AuditEvent.to_state).where(AuditEvent.action == "request.transition")
        .order_by(AuditEvent.seq)).scalars().all()
    assert states == ["documents_pending", *path]
