"""The call's web side without media: the agent's actions, the client's consent, captures and
revocation password, and what is (not) stored. The media path is in test_browser_call.py."""
import io
import secrets
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from app.models import (AuditEvent, Conference, ConferenceCapture, ConferenceConsent, utcnow)
from tests.support.documents import jpeg, pdf
from tests.support.media import media_process  # noqa: F401 (fixture)
from tests.support.processes import wait_until

PASSWORD = "Senha2026ok"


def open_room(db, factory, agent, product_code="enotariado"):
    """A room the agent may start (an instant e-Notariado room)."""
    cert_request = factory.request(product_code=product_code, agent=agent)
    conference = next((c for c in cert_request.conferences if c.state != "cancelled"), None)
    if conference is None:
        conference = Conference(request=cert_request, kind="instant", state="open",
                                opens_at=utcnow(), code_nonce=secrets.token_hex(16), agent=agent)
        db.session.add(conference)
    from app.services import links
    if links.current_link(cert_request, "conference") is None:
        links.create_link(cert_request, "conference")
    db.session.commit()
    return conference


def bind_client(client, conference):
    """What the access-code page does once code and robot check are right."""
    from app.services import links

    link = links.current_link(conference.request, "conference") or links.create_link(
        conference.request, "conference")
    from app.extensions import db
    db.session.commit()
    with client.session_transaction() as session:
        session["client"] = {"request_id": conference.request_id, "link_id": link.id,
                             "purpose": "conference", "seen": int(time.time())}


@pytest.fixture
def room(db, factory, agent):
    return open_room(db, factory, agent)


def started(db, room, agent):
    from app.services import audit, conference as conference_service

    conference_service.start(room, actor=audit.staff_actor(agent))
    db.session.commit()
    return room


def test_start_moves_the_request_into_conference(db, client, auth, agent, room):
    auth.login(agent.email)
    response = client.post(f"/conferencias/{room.id}/iniciar")
    assert response.status_code == 302
    db.session.refresh(room)
    assert room.started_at is not None and room.request.state == "in_conference"
    page = client.get(f"/conferencias/{room.id}").get_data(as_text=True)
    for words in ("Copiar link de acesso", "Entrar na conferência", "Compartilhar tela",
                  "Iniciar gravação", "Capturar documento", "Solicitar foto do rosto",
                  "Solicitar senha", "DADOS DA AUTORIDADE DE REGISTRO", "DADOS DO TITULAR",
                  "Encerrar conferência", "Sair"):
        assert words in page, words


def test_verifier_sees_the_console_but_cannot_act(db, client, auth, factory, room):
    verifier = factory.staff(roles=("verifier",))
    auth.login(verifier.email)
    assert client.get(f"/conferencias/{room.id}").status_code == 200
    assert client.post(f"/conferencias/{room.id}/iniciar").status_code == 403


def test_recording_needs_the_media_process(db, client, auth, agent, room):
    """No media process answers here: the agent reads why, and nothing is marked recording."""
    started(db, room, agent)
    auth.login(agent.email)
    response = client.post(f"/conferencias/{room.id}/gravar", headers={"HX-Request": "true"})
    assert "O servidor de vídeo não respondeu" in response.get_data(as_text=True)
    db.session.refresh(room)
    assert room.recording_state == "none"


def test_client_pages_need_the_client_session(client, room):
    assert client.get("/conferencia/dispositivos").status_code == 401
    assert client.post("/conferencia/senha", data={"password": PASSWORD,
                                                   "confirmation": PASSWORD}).status_code == 401


def test_device_page_and_consent_go_to_the_dossier(db, client, room):
    bind_client(client, room)
    page = client.get("/conferencia/dispositivos")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    for words in ("CONFIRMAÇÃO DE CADASTRO DE TITULAR/RESPONSÁVEL", "Câmera", "Microfone",
                  "Estou ciente do processo de identificação", "Iniciar videoconferência"):
        assert words in html
    assert client.post("/conferencia/consentimento", data={}).status_code == 422
    response = client.post("/conferencia/consentimento", data={"accept": "1"},
                           headers={"User-Agent": "Mozilla/5.0 (Linux; Android 14) Teste"})
    assert response.status_code == 200
    consent = db.session.execute(select(ConferenceConsent)).scalar_one()
    assert consent.text.startswith("Estou ciente do processo de identificação")
    assert consent.ip and "Android 14" in consent.user_agent and consent.locale == "pt_BR"


@pytest.mark.parametrize("password, confirmation, message", [
    ("Abc12345"[:7], "Abc1234", "entre 8 e 15"),
    ("Abcdefgh12345678", "Abcdefgh12345678", "entre 8 e 15"),
    ("Abc-1234", "Abc-1234", "somente letras"),
    ("Abcd 1234", "Abcd 1234", "somente letras"),
    ("Senhaçã12", "Senhaçã12", "somente letras"),
    ("Abcd12345", "Abcd12346", "não é igual"),
])
def test_password_rules(db, client, agent, room, password, confirmation, message):
    started(db, room, agent)
    bind_client(client, room)
    response = client.post("/conferencia/senha", data={"password": password,
                                                       "confirmation": confirmation})
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    db.session.refresh(room.request)
    assert room.request.revocation_password_hash is None


def test_password_is_stored_only_as_argon2(db, client, agent, room, caplog):
    from app.services import conference as conference_service

    started(db, room, agent)
    bind_client(client, room)
    response = client.post("/conferencia/senha", data={"password": PASSWORD,
                                                       "confirmation": PASSWORD})
    assert response.status_code == 200
    assert "Senha cadastrada com sucesso" in response.get_data(as_text=True)
    cert_request = room.request
    db.session.refresh(cert_request)
    assert cert_request.revocation_password_hash.startswith("$argon2id$")
    assert conference_service.verify_password(cert_request, PASSWORD)
    assert not conference_service.verify_password(cert_request, PASSWORD + "x")
    # Nowhere else: not in any table, not in the audit trail, not in the logs.
    for table in db.metadata.sorted_tables:
        for row in db.session.execute(select(table)).all():
            assert PASSWORD not in repr(tuple(row)), table.name
    actions = [e.action for e in db.session.execute(select(AuditEvent)).scalars()]
    assert "password.set" in actions
    assert PASSWORD not in caplog.text
    # The agent sees only that it was set.
    from tests.conftest import Auth
    auth = Auth(client)
    auth.login(agent.email)
    panel = client.get(f"/conferencias/{room.id}/painel").get_data(as_text=True)
    assert "Senha cadastrada pelo cliente" in panel and PASSWORD not in panel


def test_still_and_face_photo(db, client, agent, room):
    from app.services import audit, conference as conference_service

    started(db, room, agent)
    still = conference_service.request_capture(room, "still", actor=audit.staff_actor(agent))
    face = conference_service.request_capture(room, "face", actor=audit.staff_actor(agent))
    db.session.commit()
    bind_client(client, room)
    image = jpeg(1280, 720, text="DOC")
    response = client.post(f"/conferencia/captura/{still.id}",
                           data={"image": (io.BytesIO(image), "captura.jpg")})
    assert response.status_code == 200 and response.json["width"] == 1280
    # Sent twice (a retry after a lost answer): refused, the first stays.
    again = client.post(f"/conferencia/captura/{still.id}",
                        data={"image": (io.BytesIO(image), "captura.jpg")})
    assert again.status_code == 422
    # A disguised file is refused and leaves the request open.
    disguised = client.post(f"/conferencia/captura/{face.id}",
                            data={"image": (io.BytesIO(pdf()), "foto.jpg")})
    assert disguised.status_code == 422
    db.session.refresh(face)
    assert face.status == "requested"
    assert client.post(f"/conferencia/captura/{face.id}",
                       data={"image": (io.BytesIO(jpeg(1280, 720, text="ROSTO")), "f.jpg")}
                       ).status_code == 200
    # Another request's capture id is refused.
    assert client.post("/conferencia/captura/999999",
                       data={"image": (io.BytesIO(image), "x.jpg")}).status_code == 422
    from tests.conftest import Auth
    Auth(client).login(agent.email)
    response = client.post(f"/conferencias/{room.id}/capturas/{face.id}/decisao",
                           data={"decision": "accept"})
    assert response.status_code == 302
    db.session.refresh(face)
    assert face.status == "accepted" and face.width == 1280 and face.height == 720
    img = client.get(f"/conferencias/{room.id}/capturas/{face.id}/imagem")
    assert img.status_code == 200 and img.mimetype == "image/jpeg"
    assert img.headers["X-Content-Type-Options"] == "nosniff"
    viewed = db.session.execute(select(AuditEvent).where(AuditEvent.action == "capture.view")
                                ).scalars().all()
    assert len(viewed) == 1


def test_end_without_the_client_goes_back_and_without_media_marks_nothing_lost(
        db, client, auth, agent, room):
    started(db, room, agent)
    auth.login(agent.email)
    response = client.post(f"/conferencias/{room.id}/encerrar")
    assert response.status_code == 302
    db.session.refresh(room)
    assert room.state == "ended" and room.ended_at is not None
    # Nobody came and nothing was recorded: the request waits for a new room.
    assert room.request.state == "requested"
    assert room.recording_state == "none" and not room.recording_incomplete
    # Ended is ended: no new connection, no password.
    from app.services import conference as conference_service
    with pytest.raises(conference_service.ConferenceError):
        conference_service.open_connection(room, "client")
    bind_client(client, room)
    assert client.get("/conferencia/dispositivos").status_code == 409


def test_room_events_are_published_after_commit(db, app, agent, room):
    from app.jobs import redis_connection
    from app.services import audit, conference as conference_service

    pubsub = redis_connection().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(conference_service.room_channel(room.id))
    started(db, room, agent)
    conference_service.request_password(room, actor=audit.staff_actor(agent))
    db.session.rollback()  # not committed: never published
    conference_service.request_capture(room, "still", actor=audit.staff_actor(agent))
    db.session.commit()
    seen = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and len(seen) < 2:
        message = pubsub.get_message(timeout=0.2)
        if message:
            import json
            seen.append(json.loads(message["data"])["type"])
    assert seen == ["started", "capture_requested"]


@pytest.mark.one_database
def test_full_media_process_and_full_disk_are_told_to_the_agent(db, app, agent, room,
                                                                 media_process):
    """A media process at capacity refuses a new call, and a disk below the free-space setting
    refuses to record: the agent reads why, nothing is marked as recording."""
    from app.services import audit, conference as conference_service

    full = media_process(REDIS_URL=app.config["REDIS_URL"], MEDIA_CAPACITY="0")
    started(db, room, agent)
    connection = conference_service.open_connection(room, "agent", staff=agent)
    db.session.commit()
    with pytest.raises(conference_service.ConferenceError) as refused:
        conference_service.join_media(room, connection, "v=0\r\n")
    assert "todas as salas ocupadas" in str(refused.value.message)
    full.stop()
    media_process(REDIS_URL=app.config["REDIS_URL"], RECORDING_MIN_FREE_MB=str(10**9))
    with pytest.raises(conference_service.ConferenceError) as disk:
        conference_service.start_recording(room, actor=audit.staff_actor(agent))
    assert "Não há espaço livre em disco para gravar" in str(disk.value.message)
    db.session.commit()  # the refusal is audited
    assert room.recording_state == "none"
    refusals = db.session.execute(select(AuditEvent).where(
        AuditEvent.action == "recording.refused")).scalars().all()
    assert len(refusals) == 1 and "disk" in str(refusals[0].details)


@pytest.mark.one_database
def test_rooms_are_placed_on_the_least_busy_media_process(db, app, factory, agent, room,
                                                           media_process):
    """With two media processes, two rooms land on different ones, each room's commands go to
    its own, and a room whose process died moves to a live one (recording marked incomplete)."""
    from app.services import conference as conference_service

    env = dict(REDIS_URL=app.config["REDIS_URL"], MEDIA_CAPACITY="1")
    first, second = media_process(**env), media_process(**env)
    person = factory.person(cpf="39053344705", email="joao@cliente.example")
    cert_request = factory.request(person=person, product_code="enotariado", agent=agent)
    other_room = Conference(request=cert_request, kind="instant", state="open",
                            opens_at=utcnow(), code_nonce=secrets.token_hex(16), agent=agent)
    db.session.add(other_room)
    placed = {conference_service.place(room), conference_service.place(other_room)}
    db.session.commit()
    assert placed == {first.ident, second.ident}
    for conference in (room, other_room):
        reply = conference_service.media_call("status", node=conference.media_node,
                                              room=str(conference.id))
        assert reply["ok"]
    # A third room finds both processes full.
    third_request = factory.request(person=factory.person(cpf="11144477735",
                                                          email="ana@cliente.example"),
                                    product_code="enotariado", agent=agent)
    third = Conference(request=third_request, kind="instant", state="open", opens_at=utcnow(),
                       code_nonce=secrets.token_hex(16), agent=agent)
    db.session.add(third)
    with pytest.raises(conference_service.ConferenceError) as full:
        conference_service.place(third)
    assert "todas as salas ocupadas" in str(full.value.message)
    db.session.rollback()
    # The process holding `room` dies while it records: the room moves, marked incomplete.
    holder = first if room.media_node == first.ident else second
    room.recording_state = "recording"
    db.session.commit()
    holder.kill()
    from app.jobs import redis_connection
    from app.media import NODE_PREFIX
    redis_connection().delete(NODE_PREFIX + holder.ident)  # as when its heartbeat expires
    survivor = second if holder is first else first
    # The survivor is full with `other_room` until that one ends.
    conference_service.media_call("end", node=survivor.ident, room=str(other_room.id))
    wait_until(lambda: survivor.heartbeat() and survivor.heartbeat()["calls"] == 0, 15)
    redis_connection().delete(f"videoar:media:placed:{survivor.ident}")  # 10 s later
    assert conference_service.place(room) == survivor.ident
    db.session.commit()
    assert room.recording_incomplete
