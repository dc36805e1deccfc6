"""The "Importe seus documentos" email goes through a real worker to a real SMTP server."""
from app.models import EmailMessage
from tests.support.processes import wait_until, writing


def test_invitation_reaches_smtp(app, factory, mailbox, smtp_server, worker, db):
    with writing(db):  # the worker's cron writes too, from its first second
        cert_request = factory.request()
    [msg] = smtp_server.wait_for(1)
    assert msg["To"] == cert_request.holder.email
    assert msg["Subject"] == f"Importe seus documentos — protocolo {cert_request.protocol}"
    text = msg.get_body(("plain",)).get_content()
    assert cert_request.protocol in text
    html = msg.get_body(("html",)).get_content()
    assert "Importe seus documentos" in html

    def sent():
        db.session.rollback()
        return db.session.get(EmailMessage, 1).status == "sent"

    wait_until(sent, message="the email record marked sent")
    record = mailbox.messages()[0]
    assert record.attempts == 1 and record.transport == "smtp"
    assert msg["Message-ID"] == record.message_id
