"""The client's way into the room (domain step 5, up to the devices page): the access code with
the robot check, wrong codes, the pause and the rate limit, the 30-minute rule, rejoining, and
the two instruction pages. Times are made by moving `opens_at`, never by faking the clock."""
import logging
import re
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.models import AuditEvent, Conference, EmailMessage, utcnow
from app.services import links, scheduling
from app.services.email import build_mime
from tests.conftest import STAFF_PASSWORD
from tests.support.processes import count_rows
from tests.support.robot import solve_robot_check
from tests.test_scheduling import approved, move_opening, schedule, tomorrow_at


@pytest.fixture
def room(db, factory, agent, mailbox):
    """A scheduled room whose time came a minute ago."""
    conference = schedule(db, approved(db, factory.request(agent=agent)), agent)
    return move_opening(db, conference, 1)


def token_of(conference):
    return links.token_for(links.current_link(conference.request, "conference"))


def enter(client, conference, code=None, robot=True):
    data = {"code": scheduling.access_code(conference) if code is None else code}
    if robot:
        data["altcha"] = solve_robot_check(client)
    return client.post(f"/conferencia/{token_of(conference)}", data=data)


def wrong(code):
    """Another 6-digit code."""
    return f"{(int(code) + 1) % 10**6:06d}"


def test_code_robot_check_and_instructions(client, db, room):
    token = token_of(room)
    page = client.get(f"/conferencia/{token}")
    assert page.status_code == 200
    for expected in ("CONFIRMAÇÃO DE CADASTRO DE TITULAR", "Informe o código recebido por e-mail",
                     'inputmode="numeric"', 'autocomplete="one-time-code"', "Não sou um robô",
                     "Prosseguir", "prazo de 30 minutos"):
        assert expected in page.text, expected
    assert client.get("/conferencia/instrucoes/1").status_code == 401

    # The robot check is required.
    response = enter(client, room, robot=False)
    assert response.status_code == 422
    assert "Marque “Não sou um robô” antes de enviar." in response.text
    # A wrong code says how many tries are left.
    response = enter(client, room, code=wrong(scheduling.access_code(room)))
    assert response.status_code == 422
    assert "Código de acesso incorreto. Confira o código no e-mail recebido. Tentativas " \
           "restantes: 4." in response.text
    response = enter(client, room, code="12")
    assert "O código de acesso tem 6 números." in response.text and "restantes: 3" in response.text
    assert client.get("/conferencia/instrucoes/1").status_code == 401
    db.session.expire_all()
    assert db.session.get(Conference, room.id).failed_codes == 2

    # The right code: the session is bound and the first entry recorded.
    response = enter(client, room)
    assert response.status_code == 302 and response.location == "/conferencia/instrucoes/1"
    db.session.expire_all()
    conference = db.session.get(Conference, room.id)
    assert conference.client_first_entry_at is not None and conference.failed_codes == 0
    assert conference.request.last_client_activity_at is not None
    first = client.get("/conferencia/instrucoes/1")
    assert first.status_code == 200
    for expected in ("INSTRUÇÕES VIDEOCONFERÊNCIA",
                     "Para realizar a videoconferência corretamente, siga as instruções abaixo:",
                     "A videoconferência pode ser realizada através de computador, tablet ou "
                     "celular. O dispositivo deve possuir câmera e microfone habilitados.",
                     "Verifique se a conexão da sua internet está com um bom sinal",
                     "Você deverá apresentá-lo na videoconferência.",
                     'href="/conferencia/instrucoes/2"', "Próximo", room.request.protocol):
        assert expected in first.text, expected
    second = client.get("/conferencia/instrucoes/2")
    for expected in ("não utilize acessórios como chapéus e óculos de sol",
                     "Escolha um ambiente silencioso, iluminado e com fundo neutro",
                     "Utilize fone de ouvido pra manter o sigilo",
                     'href="/conferencia/dispositivos"', "Prosseguir"):
        assert expected in second.text, expected
    assert client.get("/conferencia/instrucoes/3").status_code == 404
    # Opening the link again in the same browser goes straight to the instructions.
    again = client.get(f"/conferencia/{token}")
    assert again.status_code == 302 and again.location == "/conferencia/instrucoes/1"
    assert count_rows(db, AuditEvent, action="conference.client_entry") == 1
    assert count_rows(db, AuditEvent, action="conference.code_wrong") == 2


def test_twenty_wrong_codes_pause_the_room_then_the_rate_limit(app, client, db, room, agent):
    app.config["CONFERENCE_CODE_RATE_LIMIT"] = "20 per 15 minutes"  # production's value
    code = scheduling.access_code(room)
    statuses = []
    for attempt in range(1, 21):
        # The right code on the 10th and 20th try: refused while the room is paused.
        typed = code if attempt in (10, 20) else wrong(code)
        response = enter(client, room, code=typed)
        statuses.append(response.status_code)
        if attempt < 5:
            assert f"Tentativas restantes: {5 - attempt}." in response.text
        else:
            assert "Muitas tentativas com o código errado. A entrada nesta sala está pausada " \
                   "até" in response.text, attempt
    assert statuses == [422] * 20
    # The 21st answer comes from the limit on this address, whatever the code.
    response = enter(client, room)
    assert response.status_code == 429 and "Muitas tentativas" in response.text
    assert client.get("/conferencia/instrucoes/1").status_code == 401
    db.session.expire_all()
    conference = db.session.get(Conference, room.id)
    assert conference.client_first_entry_at is None
    assert conference.locked_until > utcnow() + timedelta(minutes=14)
    assert count_rows(db, AuditEvent, action="conference.code_wrong") == 4
    assert count_rows(db, AuditEvent, action="conference.code_paused") == 1
    # The agent sees why the client cannot get in.
    staff = app.test_client()
    staff.post("/equipe/entrar", data={"email": agent.email, "password": STAFF_PASSWORD})
    until = conference.locked_until.astimezone(scheduling.office_tz())
    page = staff.get(f"/solicitacoes/{room.request_id}").text
    assert "Entrada pausada" in page and f"muitos códigos errados; até {until:%H:%M}" in page


def test_the_pause_says_until_when_and_ends(app, client, db, room):
    code = scheduling.access_code(room)
    for _ in range(app.config["CONFERENCE_CODE_MAX_TRIES"]):
        response = enter(client, room, code=wrong(code))
    db.session.expire_all()
    until = db.session.get(Conference, room.id).locked_until.astimezone(scheduling.office_tz())
    assert (f"A entrada nesta sala está pausada até {until:%H:%M} (horário de Brasília). Tente "
            "novamente depois desse horário.") in response.text
    assert enter(client, room).status_code == 422
    # The pause is over (moved into the past): the right code opens the room.
    db.session.execute(update(Conference).where(Conference.id == room.id)
                       .values(locked_until=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    assert enter(client, room).status_code == 302


def test_room_not_open_yet(client, db, factory, agent, mailbox):
    conference = schedule(db, approved(db, factory.request(agent=agent)), agent,
                          when=tomorrow_at(10, 15))
    page = client.get(f"/conferencia/{token_of(conference)}")
    assert page.status_code == 200
    assert (f"A sala abre em {tomorrow_at():%d/%m/%Y} às 10:15 (horário de Brasília). Volte "
            "nesse horário.") in page.text
    assert "Informe o código recebido por e-mail" not in page.text
    response = enter(client, conference)
    assert "A sala abre em" in response.text
    db.session.expire_all()
    assert db.session.get(Conference, conference.id).client_first_entry_at is None


def test_window_of_30_minutes(client, db, room):
    late = move_opening(db, room, 31)
    message = ("O prazo de 30 minutos para entrar na videoconferência terminou. Aguarde o "
               "contato do Agente de Registro para reagendar.")
    page = client.get(f"/conferencia/{token_of(late)}")
    assert page.status_code == 409 and message in page.text
    response = enter(client, late)
    assert response.status_code == 409 and message in response.text
    # An agent who started the call late is still waiting: the client may come in.
    db.session.execute(update(Conference).where(Conference.id == room.id)
                       .values(started_at=utcnow(), state="open"))
    db.session.commit()
    assert enter(client, late).status_code == 302


def test_rejoin_until_the_room_ends(app, client, db, room):
    assert enter(client, room).status_code == 302
    # Long after the window, the client who came in may come back (a reload, a new phone).
    move_opening(db, room, 120)
    assert client.get("/conferencia/instrucoes/2").status_code == 200
    other = app.test_client()
    assert enter(other, room).status_code == 302
    assert other.get("/conferencia/instrucoes/1").status_code == 200
    assert count_rows(db, AuditEvent, action="conference.client_entry") == 1
    # Ended: never again.
    db.session.execute(update(Conference).where(Conference.id == room.id)
                       .values(state="ended", ended_at=utcnow()))
    db.session.commit()
    for browser in (client, other):
        page = browser.get("/conferencia/instrucoes/1")
        assert page.status_code == 409 and "Esta videoconferência já foi encerrada." in page.text
    page = app.test_client().get(f"/conferencia/{token_of(room)}")
    assert page.status_code == 409 and "Esta videoconferência já foi encerrada." in page.text
    assert enter(app.test_client(), room).status_code == 409


def test_links_that_do_not_open(client, db, factory, agent, room, mailbox):
    assert client.get("/conferencia/" + "x" * 43).status_code == 404
    # A documents link's token is not a conference link.
    documents_token = links.token_for(links.current_link(room.request, "documents"))
    page = client.get(f"/conferencia/{documents_token}")
    assert page.status_code == 404 and "Este link não é válido." in page.text
    # An expired one.
    link = links.current_link(room.request, "conference")
    link.expires_at = utcnow() - timedelta(minutes=1)
    db.session.commit()
    page = client.get(f"/conferencia/{links.token_for(link)}")
    assert page.status_code == 404 and "Este link expirou." in page.text


def test_the_code_is_never_logged_nor_audited_nor_stored(app, client, db, room, caplog):
    from app.services import email as email_service

    code = scheduling.access_code(room)
    with caplog.at_level(logging.DEBUG):
        enter(client, room, code=wrong(code))
        assert enter(client, room).status_code == 302
        # The worker's sending, here (no SMTP server: the outbox).
        for message in db.session.execute(select(EmailMessage)).scalars().all():
            assert email_service.send(message.id) == "sent"
    pattern = re.compile(rf"(?<!\d){code}(?!\d)")
    assert not pattern.search(caplog.text)
    for event in db.session.execute(select(AuditEvent)).scalars():
        assert not pattern.search(f"{event.details} {event.reason} {event.actor_label}")
    for message in db.session.execute(select(EmailMessage)).scalars():
        assert not pattern.search(message.body_text + message.body_html)
    # It did reach the client, in the message sent.
    [scheduled] = db.session.execute(select(EmailMessage).where(
        EmailMessage.kind == "conference_scheduled")).scalars().all()
    assert code in build_mime(scheduled).get_body(preferencelist=("plain",)).get_content()
    outbox = (app.config["INSTANCE_DIR"] / "outbox").glob("*.eml")
    assert any(code.encode() in f.read_bytes() for f in outbox)


def test_instant_room_admits_at_once(client, db, factory, agent, mailbox):
    cert_request = factory.request(product_code="enotariado", agent=agent)
    conference = scheduling.open_instant_room(cert_request, agent)
    db.session.commit()
    assert enter(client, conference).status_code == 302
    assert client.get("/conferencia/instrucoes/1").status_code == 200
