"""Scheduling the videoconference (domain step 4): the agent's form, the manual's email with
its code and `.ics`, rescheduling, resending, the e-Notariado room opened at once, and the
no-show job. Past appointments are made by moving `opens_at` into the past."""
import re
import threading
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar
from sqlalchemy import func, select, update

from app.jobs.conference import mark_no_shows
from app.models import AuditEvent, CertificateRequest, Conference, EmailMessage, utcnow
from app.services import audit, links, scheduling, workflow
from app.services.email import build_mime
from tests.support.processes import count_rows, fresh, wait_until, writing
from tests.test_maintenance import cpf_with_check_digits

SP = ZoneInfo("America/Sao_Paulo")


def approved(db, cert_request):
    """A request whose documents the agent approved."""
    workflow.transition(cert_request, "documents_submitted")
    workflow.transition(cert_request, "documents_approved")
    db.session.commit()
    return cert_request


@pytest.fixture
def ready(db, factory, agent, mailbox):
    """An e-CPF request in documents_approved, assigned to the agent."""
    return approved(db, factory.request(agent=agent))


def tomorrow_at(hour=14, minute=30) -> datetime:
    day = datetime.now(SP).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, hour, minute)


def schedule(db, cert_request, agent, when=None) -> Conference:
    conference = scheduling.schedule(cert_request, when or tomorrow_at(), agent)
    db.session.commit()
    return conference


def move_opening(db, conference, minutes_ago):
    """Make the appointment `minutes_ago` minutes old (negative: in the future)."""
    db.session.execute(update(Conference).where(Conference.id == conference.id)
                       .values(opens_at=utcnow() - timedelta(minutes=minutes_ago)))
    db.session.commit()
    db.session.expire_all()
    return db.session.get(Conference, conference.id)


def sent_form(when: datetime) -> dict:
    return {"date": when.strftime("%Y-%m-%d"), "time": when.strftime("%H:%M")}


def plain(mime) -> str:
    return mime.get_body(preferencelist=("plain",)).get_content()


def ics_of(mime) -> Calendar:
    [part] = [p for p in mime.iter_attachments() if p.get_content_type() == "text/calendar"]
    assert part.get_filename() == "videoconferencia.ics"
    assert part.get_param("method") == "REQUEST"
    return Calendar.from_ical(part.get_content())


def all_audit_text(db) -> str:
    rows = db.session.execute(select(AuditEvent)).scalars().all()
    return " ".join(f"{e.details} {e.reason}" for e in rows)


def test_agent_schedules_and_the_client_gets_the_manuals_email(client, auth, agent, ready, db,
                                                               mailbox):
    auth.login(agent.email)
    page = client.get(f"/solicitacoes/{ready.id}").text
    assert "Agendar videoconferência" in page
    assert "Horário de Brasília (America/Sao_Paulo)" in page
    when = tomorrow_at(14, 30)
    response = client.post(f"/solicitacoes/{ready.id}/videoconferencia/agendar",
                           data=sent_form(when))
    assert response.status_code == 302 and response.location.endswith(
        f"/solicitacoes/{ready.id}#videoconferencia")
    db.session.expire_all()
    cert_request = db.session.get(CertificateRequest, ready.id)
    assert cert_request.state == "scheduled"
    [conference] = cert_request.conferences
    assert (conference.kind, conference.state, conference.window_minutes) == ("scheduled",
                                                                             "scheduled", 30)
    assert conference.opens_at == when.replace(tzinfo=SP)
    assert conference.agent_id == agent.id
    link = links.current_link(cert_request, "conference")
    assert link.expires_at > conference.closes_at
    code = scheduling.access_code(conference)
    assert re.fullmatch(r"\d{6}", code)

    # The agent's page: the time, the link to copy, the room, resend and reschedule.
    page = client.get(f"/solicitacoes/{ready.id}").text
    assert f"{when:%d/%m/%Y} às 14:30 (horário de Brasília)" in page
    assert "das 14:30 às 15:00" in page
    assert f'value="{links.url_for_link(link)}"' in page and "Copiar link de acesso" in page
    assert f'href="/conferencias/{conference.id}"' in page and "Entrar na conferência" in page
    assert "Reenviar e-mail" in page and "Reagendar" in page
    assert code not in page  # the agent resends the code, never reads it

    [message] = mailbox.messages("conference_scheduled")
    assert message.subject == f"Videoconferência agendada — protocolo {ready.protocol}"
    assert message.to_address == ready.holder.email
    # The record keeps a placeholder, not the code: the database alone does not reveal it.
    assert code not in message.body_text and code not in message.body_html
    assert f"[[access-code:{conference.id}]]" in message.body_text
    mime = build_mime(message)
    text = plain(mime)
    html = mime.get_body(preferencelist=("html",)).get_content()
    for expected in (
        "EMISSÃO POR VIDEOCONFERÊNCIA",
        "Os seus documentos foram aprovados e estamos prontos para realizar o processo de "
        "videoconferência.",
        f"Seu código de acesso para videoconferência é: {code}",
        f"Protocolo: {ready.protocol}",
        f"Clique aqui para acessar a sala virtual da videoconferência. {links.url_for_link(link)}",
        f"Data e horário: {when:%d/%m/%Y} às 14:30 (horário de Brasília)",
        "Você terá o prazo de 30 minutos para acessar a videoconferência (das 14:30 às 15:00), "
        "caso não seja possível, você deverá aguardar o contato do Agente de Registro, para o "
        "reagendamento da sessão.",
        "Lembre-se de certificar-se que você possui os seguintes equipamentos:",
        "- Webcam;",
        "- Microfone e auto falantes (preferencialmente headset);",
        "- Boa conexão com a Internet;",
        "- Estar em local silencioso e iluminado, preferencialmente com fundo neutro;",
        "não poderá estar usando acessórios como: óculos, boné, toca ou chapéu.",
        "- O mesmo documento de identificação importado no sistema, deverá ser mostrado na "
        "câmera durante a validação por videoconferência.",
    ):
        assert expected in text, expected
    assert code in html and links.url_for_link(link) in html and "[[access-code" not in html

    # The invitation for the client's calendar: the office's zone, the window, no code.
    cal = ics_of(mime)
    assert str(cal["method"]) == "REQUEST"
    [tz] = cal.walk("VTIMEZONE")
    assert str(tz["tzid"]) == "America/Sao_Paulo"
    [event] = cal.walk("VEVENT")
    assert event["dtstart"].params["TZID"] == "America/Sao_Paulo"
    assert event["dtstart"].dt == when.replace(tzinfo=SP)
    assert event["dtstart"].dt.replace(tzinfo=None) == when
    assert event["dtend"].dt - event["dtstart"].dt == timedelta(minutes=30)
    assert str(event["uid"]) == scheduling.calendar_uid(conference)
    assert str(event["uid"]).startswith(f"videoar-conference-{conference.id}-")
    assert str(event["organizer"]) == "mailto:contato@ar-teste.example"
    assert str(event["attendee"]) == f"mailto:{ready.holder.email}"
    assert links.url_for_link(link) in str(event["description"])
    assert ready.protocol in str(event["summary"])
    ics_text = cal.to_ical().decode()
    assert code not in ics_text
    # The same message built again (a retried job) is the same, attachment included.
    again = build_mime(message)
    assert plain(again) == text
    assert ics_of(again).to_ical() == cal.to_ical()

    events = db.session.execute(select(AuditEvent).where(
        AuditEvent.action == "conference.schedule")).scalars().all()
    assert len(events) == 1 and events[0].actor_label == agent.email
    assert code not in all_audit_text(db)
    assert audit.verify_chain() == []


def test_reschedule_kills_the_old_code_and_link(client, auth, agent, ready, db, mailbox):
    first = schedule(db, ready, agent)
    old_link = links.current_link(ready, "conference")
    old_token, old_code = links.token_for(old_link), scheduling.access_code(first)
    auth.login(agent.email)
    when = tomorrow_at(9, 0) + timedelta(days=1)
    response = client.post(f"/solicitacoes/{ready.id}/videoconferencia/reagendar",
                           data=sent_form(when))
    assert response.status_code == 302
    db.session.expire_all()
    cert_request = db.session.get(CertificateRequest, ready.id)
    assert cert_request.state == "scheduled"
    old, new = cert_request.conferences
    assert (old.state, new.state) == ("cancelled", "scheduled")
    assert old.ended_at is not None and new.opens_at == when.replace(tzinfo=SP)
    assert scheduling.live_conference(cert_request) is new
    assert scheduling.access_code(new) != old_code or new.code_nonce != old.code_nonce
    with pytest.raises(links.LinkError):
        links.resolve(old_token, "conference")
    first_email, second_email = mailbox.messages("conference_scheduled")
    assert second_email.subject == f"Videoconferência reagendada — protocolo {ready.protocol}"
    text = plain(build_mime(second_email))
    assert f"Seu código de acesso para videoconferência é: {scheduling.access_code(new)}" in text
    assert "O código e o link do e-mail anterior não valem mais." in text
    assert links.url_for_link(links.current_link(cert_request, "conference")) in text
    # The old email still says what it said (its own code), and a new calendar entry.
    assert old_code in plain(build_mime(first_email))
    assert str(ics_of(build_mime(second_email)).walk("VEVENT")[0]["uid"]) != \
        str(ics_of(build_mime(first_email)).walk("VEVENT")[0]["uid"])
    # Only one transition to "scheduled"; the reschedule is its own event.
    assert count_rows(db, AuditEvent, action="request.transition", to_state="scheduled") == 1
    assert count_rows(db, AuditEvent, action="conference.reschedule") == 1
    assert count_rows(db, AuditEvent, action="conference.cancel") == 1

    # The client with the old link and code gets nowhere.
    auth.logout()
    page = client.get(f"/conferencia/{old_token}")
    assert page.status_code == 404 and "substituído por um mais recente" in page.text


def test_resend_sends_the_same_code_and_link(client, auth, agent, ready, db, mailbox):
    conference = schedule(db, ready, agent)
    auth.login(agent.email)
    response = client.post(
        f"/solicitacoes/{ready.id}/videoconferencia/{conference.id}/reenviar")
    assert response.status_code == 302
    first, second = mailbox.messages("conference_scheduled")
    assert plain(build_mime(first)) == plain(build_mime(second))
    assert count_rows(db, AuditEvent, action="conference.resend") == 1
    assert db.session.get(Conference, conference.id).state == "scheduled"


def test_ecpf_reminder_only_for_ecpf(client, auth, agent, factory, ready, db, mailbox):
    from app.services import people

    auth.login(agent.email)
    reminder = ("Em caso de certificado e-CPF, pergunte ao cliente sobre a necessidade de "
                "inclusão de CEI/CNO/CAEPF.")
    assert reminder in client.get(f"/solicitacoes/{ready.id}").text
    person = factory.person(cpf="11144477735", email="b@cliente.example")
    company = people.find_or_register_company("11222333000181", "Padaria Exemplo Ltda",
                                              "Campinas", "SP", person)
    db.session.commit()
    ecnpj = approved(db, factory.request(person=person, product_code="ecnpj-a3",
                                         company=company))
    page = client.get(f"/solicitacoes/{ecnpj.id}").text
    assert "Agendar videoconferência" in page and reminder not in page
    # Shown again on the reschedule form of an e-CPF.
    schedule(db, ready, agent)
    page = client.get(f"/solicitacoes/{ready.id}").text
    assert "Reagendar" in page and reminder in page


def test_scheduling_refuses_the_past_and_other_states(client, auth, agent, factory, ready, db,
                                                     mailbox):
    auth.login(agent.email)
    yesterday = tomorrow_at() - timedelta(days=2)
    response = client.post(f"/solicitacoes/{ready.id}/videoconferencia/agendar",
                           data=sent_form(yesterday))
    assert response.status_code == 422
    assert "Escolha uma data e um horário que ainda não passaram." in response.text
    assert f'value="{yesterday:%Y-%m-%d}"' in response.text  # what was typed stays
    response = client.post(f"/solicitacoes/{ready.id}/videoconferencia/agendar", data={})
    assert response.status_code == 422
    pending = factory.request(person=factory.person(cpf="11144477735", email="c@cliente.example"))
    response = client.post(f"/solicitacoes/{pending.id}/videoconferencia/agendar",
                           data=sent_form(tomorrow_at()), follow_redirects=True)
    assert "depois que os documentos forem aprovados" in response.text
    assert db.session.execute(select(func.count(Conference.id))).scalar_one() == 0
    assert mailbox.messages("conference_scheduled") == []
    # A verifier sees the request but cannot schedule.
    verifier = factory.staff(roles=("verifier",))
    auth.logout()
    auth.login(verifier.email)
    assert "Agendar videoconferência" not in client.get(f"/solicitacoes/{ready.id}").text
    response = client.post(f"/solicitacoes/{ready.id}/videoconferencia/agendar",
                           data=sent_form(tomorrow_at()))
    assert response.status_code == 403


def test_enotariado_iniciar_opens_the_room_at_once(client, auth, agent, factory, db, mailbox):
    person = factory.person()
    auth.login(agent.email)
    response = client.post(f"/pessoas/{person.id}/certificacao/remota",
                           data={"product_id": factory.product("enotariado").id,
                                 "confirmed": "y"})
    assert response.status_code == 302
    cert_request = db.session.execute(select(CertificateRequest)).scalar_one()
    assert response.location.endswith(f"/solicitacoes/{cert_request.id}")
    assert cert_request.state == "requested"  # no documents, no scheduling
    [conference] = cert_request.conferences
    assert (conference.kind, conference.state) == ("instant", "open")
    assert conference.opens_at <= utcnow()
    link = links.current_link(cert_request, "conference")
    page = client.get(response.location).text
    assert "sala aberta" in page
    assert f'value="{links.url_for_link(link)}"' in page and "Copiar link de acesso" in page
    assert f'href="/conferencias/{conference.id}"' in page and "Entrar na conferência" in page
    assert "Agendar videoconferência" not in page and "Reagendar" not in page
    assert mailbox.messages("documents_invitation") == []
    [message] = mailbox.messages("conference_instant")
    text = plain(build_mime(message))
    assert f"Seu código de acesso para videoconferência é: {scheduling.access_code(conference)}" \
        in text
    assert links.url_for_link(link) in text and cert_request.protocol in text
    assert not list(build_mime(message).iter_attachments())  # no appointment, no .ics
    # The client may enter at once.
    scheduling.check_admission(conference)
    # A second "open" returns the same room.
    assert scheduling.open_instant_room(cert_request, agent) is conference
    with pytest.raises(scheduling.SchedulingError):
        scheduling.open_instant_room(approved(db, factory.request(
            person=factory.person(cpf="11144477735", email="d@cliente.example"))), agent)


def _no_show_setup(db, factory, agent):
    """Rooms in every situation: only the first is a no-show."""
    def room(n, minutes_ago, **values):
        person = factory.person(cpf=cpf_with_check_digits(f"{223456780 + n:09d}"),
                                email=f"cliente{n}@cliente.example")
        conference = schedule(db, approved(db, factory.request(person=person, agent=agent)),
                              agent)
        conference = move_opening(db, conference, minutes_ago)
        if values:
            db.session.execute(update(Conference).where(Conference.id == conference.id)
                               .values(**values))
            db.session.commit()
        return conference

    now = utcnow()
    return [
        room(0, 31),  # window over, nobody came: no-show
        room(1, 10),  # still in its window
        room(2, 45, client_first_entry_at=now - timedelta(minutes=20)),  # the client came
        room(3, 45, started_at=now - timedelta(minutes=40), state="open"),  # the agent started
        room(4, -60),  # later today
    ]


def test_no_show_job(app, db, factory, agent, mailbox):
    rooms = _no_show_setup(db, factory, agent)
    assert mark_no_shows() == 1
    assert mark_no_shows() == 0  # once
    db.session.expire_all()
    states = [db.session.get(Conference, c.id).state for c in rooms]
    assert states == ["no_show", "scheduled", "scheduled", "open", "scheduled"]
    no_show = db.session.get(Conference, rooms[0].id)
    assert no_show.ended_at is not None
    cert_request = no_show.request
    assert cert_request.state == "documents_approved"
    [event] = db.session.execute(select(AuditEvent).where(
        AuditEvent.request_id == cert_request.id, AuditEvent.to_state == "documents_approved",
        AuditEvent.from_state == "scheduled")).scalars().all()
    assert event.actor_type == "system"
    assert event.reason == "o cliente não entrou na videoconferência nos 30 minutos do agendamento"
    [message] = mailbox.messages("conference_no_show")
    assert message.request_id == cert_request.id
    assert message.subject == f"Videoconferência não realizada — protocolo {cert_request.protocol}"
    opens = no_show.opens_at.astimezone(SP)
    assert (f"Não foi possível realizar a videoconferência agendada para {opens:%d/%m/%Y} às "
            f"{opens:%H:%M} (horário de Brasília): o prazo de 30 minutos para entrar na sala "
            "terminou.") in message.body_text
    assert "Aguarde o contato do Agente de Registro para reagendar." in message.body_text
    # Its client now reads the window message, and the agent can schedule again.
    with pytest.raises(scheduling.WindowOver):
        scheduling.check_admission(no_show)
    again = schedule(db, cert_request, agent)
    assert scheduling.live_conference(cert_request) is again
    assert audit.verify_chain() == []


def test_cancelling_a_request_cancels_its_room(db, factory, agent, ready, mailbox):
    """The room dies with the request (its code too); the no-show job finds nothing to do."""
    from app.services import requests as request_service

    conference = move_opening(db, schedule(db, ready, agent), 40)
    request_service.cancel_request(ready, "desistiu")
    db.session.commit()
    assert mark_no_shows() == 0
    db.session.expire_all()
    assert db.session.get(Conference, conference.id).state == "cancelled"
    assert db.session.get(CertificateRequest, ready.id).state == "cancelled"
    assert mailbox.messages("conference_no_show") == []


def test_concurrent_no_show_runs_act_once(app, db, factory, agent, mailbox):
    rooms = [_no_show_setup(db, factory, agent)[0]]
    results, errors = [], []
    barrier = threading.Barrier(2)

    def run():
        try:
            with app.app_context():
                barrier.wait(10)
                results.append(mark_no_shows())
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    db.session.rollback()
    assert errors == [] and sorted(results) == [0, 1]
    assert len(mailbox.messages("conference_no_show")) == 1
    assert count_rows(db, AuditEvent, action="conference.no_show",
                      object_id=str(rooms[0].id)) == 1


def test_no_show_by_the_workers_cron(app, db, factory, agent, mailbox, start_worker):
    """Two real workers, each with its cron: the room becomes a no-show once."""
    with writing(db):
        conference = _no_show_setup(db, factory, agent)[0]
    env = dict(CONFERENCE_NO_SHOW_SECONDS=1)
    start_worker(**env)
    start_worker(**env)
    from app.models import BackgroundJob

    wait_until(lambda: count_rows(db, BackgroundJob, name="mark_no_shows", status="done") >= 4,
               timeout=60, message="four runs of mark_no_shows")
    assert fresh(db, Conference, conference.id).state == "no_show"
    assert count_rows(db, EmailMessage, kind="conference_no_show") == 1
    assert count_rows(db, AuditEvent, action="conference.no_show") == 1
    assert count_rows(db, BackgroundJob, name="mark_no_shows", status="failed") == 0
