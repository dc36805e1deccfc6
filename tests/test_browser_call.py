"""The call end to end: two Chromium browsers with their own fake camera and microphone join
one room through the real web (gunicorn + flask-sock), media (aiortc), worker (RQ) and Redis.

The client (Android phone emulation) enters with the access code and the robot check, reads the
two instruction pages, picks devices, accepts the consent and starts; the agent enters, starts
the conference and the recording, takes a still, asks for the face photo and accepts it, asks
for the password, which the client creates, and ends. Then the processed recording is opened
with PyAV: both participants' pictures and tones all along, duration as long as the call, no
gap over 1 s; the still and the photo are 1280×720 and show the client's camera; the password
is nowhere but as a hash.
"""
import io
import re
import json
import os
import secrets
import signal
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from tests.support.browser import (CHROMIUM, CHROMIUM_ARGS, EXPECT_TIMEOUT_MS, _close_checking_errors,
                                   _page_in, assert_accessible, screenshot)
from tests.support.call_media import (AGENT_HZ, AGENT_RGB, CLIENT_HZ, CLIENT_RGB, colour_distance,
                                      mean_rgb, tone_strengths, write_wav, write_y4m)
from tests.support.media import media_process  # noqa: F401 (fixture)
from tests.support.processes import wait_until
from tests.test_browser_documents import login

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PASSWORD = "Teste2026abc"


def media_args(y4m, wav):
    return CHROMIUM_ARGS + [
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={y4m}", f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
    ]


@pytest.fixture
def call_browsers(playwright, tmp_path, live_server):
    """Two Chromium instances: the client's (Pixel 7) and the agent's (desktop)."""
    from playwright.sync_api import expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    client_media = (write_y4m(tmp_path / "client.y4m", CLIENT_RGB), write_wav(tmp_path / "client.wav", CLIENT_HZ))
    agent_media = (write_y4m(tmp_path / "agent.y4m", AGENT_RGB), write_wav(tmp_path / "agent.wav", AGENT_HZ))
    client_browser = playwright.chromium.launch(executable_path=CHROMIUM, args=media_args(*client_media))
    agent_browser = playwright.chromium.launch(executable_path=CHROMIUM, args=media_args(*agent_media))
    phone_ctx = client_browser.new_context(**playwright.devices["Pixel 7"], locale="pt-BR",
                                           timezone_id="America/Sao_Paulo", base_url=live_server.url)
    desk_ctx = agent_browser.new_context(viewport={"width": 1280, "height": 800}, locale="pt-BR",
                                         timezone_id="America/Sao_Paulo", base_url=live_server.url)
    for ctx in (phone_ctx, desk_ctx):
        ctx.grant_permissions(["camera", "microphone"], origin=live_server.url)
    desk_ctx.grant_permissions(["clipboard-read", "clipboard-write", "camera", "microphone"],
                               origin=live_server.url)
    phone, desktop = _page_in(phone_ctx), _page_in(desk_ctx)
    yield phone, desktop
    try:
        _close_checking_errors(phone_ctx)
        _close_checking_errors(desk_ctx)
    finally:
        client_browser.close()
        agent_browser.close()


def scheduled_room(db, factory, agent, opens_in=timedelta(minutes=-1)):
    """An e-CPF request whose documents were approved, with a room that opens at `opens_at`."""
    from app.models import Conference, utcnow
    from app.services import audit, links, workflow

    cert_request = factory.request(agent=agent)
    cert_request.state = "documents_approved"  # the document review is tested elsewhere
    conference = Conference(request=cert_request, kind="scheduled", state="scheduled",
                            opens_at=utcnow() + opens_in, code_nonce=secrets.token_hex(16),
                            agent=agent, created_by=agent)
    db.session.add(conference)
    workflow.transition(cert_request, "scheduled", actor=audit.staff_actor(agent))
    links.create_link(cert_request, "conference")
    db.session.commit()
    return conference


def conference_url(conference):
    from app.services import links

    from urllib.parse import urlsplit

    return urlsplit(links.url_for_link(links.current_link(conference.request, "conference"))).path


def client_enters(page, conference, url):
    from app.services import scheduling

    page.goto(url)
    page.get_by_label("Informe o código recebido por e-mail").fill(scheduling.access_code(conference))
    page.get_by_role("checkbox", name="Não sou um robô").tap()
    from playwright.sync_api import expect
    expect(page.get_by_role("checkbox", name="Verificado: você não é um robô")).to_be_checked(
        timeout=60_000)
    page.get_by_role("button", name="Prosseguir").tap()
    page.get_by_role("button", name="Próximo").or_(page.get_by_role("link", name="Próximo")).tap()
    page.get_by_role("button", name="Prosseguir").or_(page.get_by_role("link", name="Prosseguir")).tap()


def video_size(page, selector):
    return page.evaluate(f"() => {{ const v = document.querySelector('{selector}');"
                         " return [v.videoWidth, v.videoHeight]; }")


def test_recorded_call_between_two_browsers(live_server, start_worker, media_process,
                                           call_browsers, db, factory, app, tmp_path, mailbox):
    from playwright.sync_api import expect

    from app.models import Conference, ConferenceCapture, RecordingSegment
    from app.services.storage import get_storage

    agent = factory.staff(roles=("agent",), email="agente@ar-teste.example", name="Ana Agente")
    conference = scheduled_room(db, factory, agent)
    url = conference_url(conference)
    worker = start_worker(PUBLIC_URL=live_server.url)
    from app.services.recording import recordings_root
    media = media_process(REDIS_URL=app.config["REDIS_URL"],
                          RECORDINGS_ROOT=str(recordings_root(app.config)))
    phone, desk = call_browsers

    # The agent enters the room and starts the conference (agent manual 8–9).
    login(desk, agent.email)
    desk.goto(f"/conferencias/{conference.id}")
    desk.get_by_role("button", name="Entrar na conferência").click()
    desk.get_by_role("button", name="Iniciar conferência").click()
    expect(desk.get_by_role("button", name="Iniciar gravação")).to_be_visible()

    # The client: code, robot check, two instruction pages, devices, consent.
    client_enters(phone, conference, url)
    expect(phone.get_by_role("heading", name="CONFIRMAÇÃO DE CADASTRO DE TITULAR/RESPONSÁVEL")).to_be_visible()
    phone.wait_for_function("() => document.querySelector('#preview').videoWidth > 0")
    expect(phone.get_by_label("Câmera", exact=True)).to_be_visible()
    assert_accessible(phone, "device page")
    screenshot(phone, "32-conference-devices.png")
    phone.get_by_label("Estou ciente do processo de identificação", exact=False).check()
    phone.get_by_role("button", name="Iniciar videoconferência").tap()

    # Both see each other through the media process.
    phone.wait_for_function("() => document.querySelector('#remote').videoWidth > 0", timeout=30_000)
    desk.wait_for_function("() => document.querySelector('#remote').videoWidth > 0", timeout=30_000)
    assert video_size(desk, "#remote") == [1280, 720]
    expect(desk.locator("#call-status")).to_have_text("Cliente na sala.")

    desk.get_by_role("button", name="Iniciar gravação").click()
    expect(desk.get_by_text("Gravando desde")).to_be_visible()
    expect(phone.locator("#rec-indicator")).to_be_visible()
    call_started = time.monotonic()
    assert_accessible(phone, "call page")

    # A still of the document.
    desk.get_by_role("button", name="Capturar documento").click()
    expect(desk.get_by_role("img", name="Imagem do documento 1")).to_be_visible(timeout=20_000)

    # The face photo: the client sees the framing guide; the agent accepts the photo.
    desk.get_by_role("button", name="Solicitar foto do rosto").click()
    expect(phone.locator("#face-guide")).to_be_visible()
    screenshot(phone, "33-conference-face-guide.png", full_page=False)
    expect(desk.get_by_role("img", name="Foto do rosto do cliente")).to_be_visible(timeout=20_000)
    desk.get_by_role("button", name="Aceitar foto").click()
    expect(desk.get_by_text("Foto aceita")).to_be_visible()
    expect(phone.locator("#face-guide")).to_be_hidden()

    # The revocation password, with one mistake first.
    desk.get_by_role("button", name="Solicitar senha").click()
    dialog = phone.get_by_role("dialog")
    expect(dialog.get_by_role("heading", name="Cadastre sua senha")).to_be_visible()
    screenshot(phone, "34-conference-password.png", full_page=False)
    dialog.get_by_label("Senha", exact=True).fill("abc-1234")
    dialog.get_by_label("Confirmação de senha").fill("abc-1234")
    from tests.support.browser import expected_response
    with expected_response(phone, 422, r"/conferencia/senha$"):
        dialog.get_by_role("button", name="Confirmar").tap()
    expect(dialog.get_by_role("alert")).to_contain_text("somente letras")
    dialog.get_by_label("Senha", exact=True).fill(PASSWORD)
    dialog.get_by_label("Confirmação de senha").fill(PASSWORD)
    dialog.get_by_role("button", name="Confirmar").tap()
    expect(dialog.get_by_role("heading", name="Senha cadastrada com sucesso")).to_be_visible()
    dialog.get_by_role("button", name="Ok").tap()
    expect(desk.get_by_text("Senha cadastrada pelo cliente")).to_be_visible()
    assert PASSWORD not in desk.content()
    screenshot(desk, "35-agent-console.png")

    # The agent shares the screen for a moment, then goes back to the camera; the client
    # switches camera ("Trocar câmera"): the call goes on.
    desk.get_by_role("button", name="Compartilhar tela").click()
    expect(desk.get_by_role("button", name="Compartilhar tela")).to_have_attribute("aria-pressed", "true")
    desk.get_by_role("button", name="Compartilhar tela").click()
    expect(desk.get_by_role("button", name="Compartilhar tela")).to_have_attribute("aria-pressed", "false")
    phone.get_by_role("button", name="Trocar câmera").tap()
    phone.wait_for_function("() => document.querySelector('#local').srcObject"
                            ".getVideoTracks()[0].readyState === 'live'")

    # Keep the call going for about 12 s of recording, then end it (confirmed twice).
    while time.monotonic() - call_started < 12:
        time.sleep(0.5)
    desk.get_by_role("button", name="Desligar").click()
    desk.get_by_role("dialog").get_by_role("button", name="Encerrar conferência").click()
    desk.locator("#confirm-end").click()
    expect(desk.get_by_text("processando").or_(desk.get_by_text("concluído"))).to_be_visible()
    expect(phone.get_by_role("heading", name="Videoconferência encerrada")).to_be_visible()
    expect(desk.get_by_text("concluído")).to_be_visible(timeout=120_000)

    # The player can seek (Range) and the agent can download it; downloads are audited.
    part = desk.request.get(f"/conferencias/{conference.id}/gravacao/arquivo",
                            headers={"Range": "bytes=0-999"})
    assert part.status == 206 and len(part.body()) == 1000
    download = desk.request.get(f"/conferencias/{conference.id}/gravacao/arquivo?baixar=1")
    assert download.status == 200 and "attachment" in download.headers["content-disposition"]

    db.session.expire_all()
    conference = db.session.get(Conference, conference.id)
    assert conference.state == "ended" and conference.request.state == "conference_done"
    assert conference.recording_state == "done", conference.recording_notes
    assert not conference.recording_incomplete
    call_seconds = (conference.recording_stopped_at - conference.recording_started_at).total_seconds()
    storage = get_storage()

    # Stills and photo: 1280×720 from the client's camera.
    captures = db.session.execute(select(ConferenceCapture)).scalars().all()
    assert {c.kind for c in captures} == {"still", "face"}
    from PIL import Image
    import numpy as np
    for capture in captures:
        assert (capture.width, capture.height) == (1280, 720)
        with storage.open(capture.file_sha256) as f:
            image = np.asarray(Image.open(f).convert("RGB"))
        assert colour_distance(mean_rgb(image), CLIENT_RGB) < 40, capture.kind

    # Raw segments: hashed into the dossier, each side recorded, no gap over 1 s.
    segments = db.session.execute(select(RecordingSegment)).scalars().all()
    assert {s.role for s in segments} == {"client", "agent"}
    import hashlib
    from app.services.recording import recordings_root
    root = recordings_root(app.config)
    from app.services import encryption
    for s in segments:
        # Encrypted at rest by the processing job, the plaintext still hashes to the record.
        assert encryption.is_encrypted(root / s.path), s.path
        with encryption.open_path(root / s.path, encryption.get_keyring) as f:
            assert hashlib.sha256(f.read()).hexdigest() == s.sha256
    for capture in captures:  # the photos too, on the storage's disk
        assert encryption.is_encrypted(storage._path(capture.file_sha256))

    # The processed file: both pictures, both tones, all along.
    import av
    with storage.open(conference.recording_sha256) as f:
        data = f.read()
    container = av.open(io.BytesIO(data))
    duration = float(container.duration) / av.time_base
    assert abs(duration - call_seconds) <= 2, (duration, call_seconds)
    vstream = container.streams.video[0]
    last_seen = {"client": None, "agent": None}
    max_gap = {"client": 0.0, "agent": 0.0}
    for frame in container.decode(vstream):
        t = float(frame.pts * vstream.time_base)
        if t < 1.5:  # the first keyframes arrive after the recording starts
            continue
        image = frame.to_ndarray(format="rgb24")
        half = image.shape[1] // 2
        sides = {"client": image[:, :half], "agent": image[:, half:]}
        for role, rgb in (("client", CLIENT_RGB), ("agent", AGENT_RGB)):
            # The participant's pane: its colour fills the middle of the pane.
            h, w = sides[role].shape[:2]
            centre = sides[role][h // 3: 2 * h // 3, w // 4: 3 * w // 4]
            if colour_distance(mean_rgb(centre), rgb) < 50:
                if last_seen[role] is not None:
                    max_gap[role] = max(max_gap[role], t - last_seen[role])
                last_seen[role] = t
    for role in ("client", "agent"):
        assert last_seen[role] is not None and last_seen[role] > duration - 2, (role, last_seen)
        assert max_gap[role] <= 1.0, (role, max_gap)
    container.close()
    container = av.open(io.BytesIO(data))
    astream = container.streams.audio[0]
    rate = astream.rate
    chunks = [frame.to_ndarray().mean(axis=0) if frame.to_ndarray().ndim > 1 else frame.to_ndarray()
              for frame in container.decode(astream)]
    container.close()
    audio = np.concatenate([c.reshape(-1) for c in chunks]).astype(np.float64)
    window = rate  # one second at a time
    for start in range(int(1.5 * rate), len(audio) - window, window):
        strengths = tone_strengths(audio[start:start + window], rate, (CLIENT_HZ, AGENT_HZ))
        assert strengths[CLIENT_HZ] > 20 and strengths[AGENT_HZ] > 20, (start / rate, strengths)

    # The password: only its hash, anywhere.
    for table in db.metadata.sorted_tables:
        for row in db.session.execute(select(table)).all():
            assert PASSWORD not in repr(tuple(row)), table.name
    redis = __import__("app.jobs", fromlist=["redis_connection"]).redis_connection()
    for key in redis.scan_iter("*"):
        kind = redis.type(key)
        if kind == b"string":
            assert PASSWORD.encode() not in (redis.get(key) or b"")
        elif kind == b"list":
            assert all(PASSWORD.encode() not in v for v in redis.lrange(key, 0, -1))
        elif kind == b"hash":
            assert all(PASSWORD.encode() not in v for v in redis.hgetall(key).values())
    for log in (live_server.output(), worker.output(), media.output()):
        assert PASSWORD not in log


def join_from_device_page(page):
    """The device page → consent → "Iniciar videoconferência" (after a reload or in a new tab)."""
    from playwright.sync_api import expect

    page.goto("/conferencia/dispositivos")
    page.wait_for_function("() => document.querySelector('#preview').videoWidth > 0")
    page.get_by_label("Estou ciente do processo de identificação", exact=False).check()
    page.get_by_role("button", name="Iniciar videoconferência").tap()
    page.wait_for_function("() => document.querySelector('#remote').videoWidth > 0", timeout=45_000)


def test_call_survives_reload_second_tab_agent_leaving_and_media_killed(
        live_server, start_worker, media_process, call_browsers, db, factory, app, mailbox):
    """The client reloads, opens a second tab; the agent leaves ("Sair") and comes back; the
    media process is killed with SIGKILL mid-recording and started again (as the launcher
    does): the browsers reconnect by themselves, the agent is told, the recording is kept but
    for the segment in progress and marked incomplete."""
    from playwright.sync_api import expect

    from app.models import Conference, ConferenceConnection, RecordingSegment
    from app.services.recording import recordings_root

    agent = factory.staff(roles=("agent",), email="agente@ar-teste.example", name="Ana Agente")
    conference = scheduled_room(db, factory, agent)
    url = conference_url(conference)
    start_worker(PUBLIC_URL=live_server.url)
    env = dict(REDIS_URL=app.config["REDIS_URL"], RECORDINGS_ROOT=str(recordings_root(app.config)))
    media = media_process(**env)
    phone, desk = call_browsers

    login(desk, agent.email)
    desk.goto(f"/conferencias/{conference.id}")
    desk.get_by_role("button", name="Entrar na conferência").click()
    desk.get_by_role("button", name="Iniciar conferência").click()
    client_enters(phone, conference, url)
    join_from_device_page(phone)
    desk.wait_for_function("() => document.querySelector('#remote').videoWidth > 0", timeout=30_000)
    desk.get_by_role("button", name="Iniciar gravação").click()
    expect(desk.get_by_text("Gravando desde")).to_be_visible()
    time.sleep(3)

    # The client's page is reloaded mid-call: same room, a new connection.
    phone.reload()
    join_from_device_page(phone)
    expect(desk.locator("#call-status")).to_have_text("Cliente na sala.", timeout=30_000)

    # A second tab takes over; the first says so.
    second = phone.context.new_page()
    from tests.support.browser import _watch
    _watch(second)
    join_from_device_page(second)
    expect(phone.get_by_role("heading", name="Videoconferência aberta em outra tela")).to_be_visible()

    # "Sair": the agent leaves (confirmed), the recording goes on; the agent comes back.
    desk.get_by_role("button", name="Desligar").click()
    desk.get_by_role("dialog").get_by_role("button", name="Sair").click()
    desk.locator("#confirm-leave").click()
    expect(desk.get_by_role("heading", name=re.compile("Protocolo"))).to_be_visible()
    desk.goto(f"/conferencias/{conference.id}")
    expect(desk.get_by_text("Gravando desde")).to_be_visible()
    desk.get_by_role("button", name="Entrar na conferência").click()
    desk.wait_for_function("() => document.querySelector('#remote').videoWidth > 0", timeout=30_000)
    time.sleep(3)

    # The media process dies; a new one starts; both browsers reconnect on their own.
    media.kill()
    media_process(**env)
    # The status line says so while reconnecting; the panel keeps it.
    expect(desk.get_by_text("Parte da gravação foi perdida")).to_be_visible(timeout=60_000)
    expect(desk.locator("#call-status")).to_have_text("Cliente na sala.", timeout=60_000)
    second.wait_for_function("() => document.querySelector('#remote').videoWidth > 0")
    time.sleep(4)

    desk.get_by_role("button", name="Desligar").click()
    desk.get_by_role("dialog").get_by_role("button", name="Encerrar conferência").click()
    desk.locator("#confirm-end").click()
    expect(second.get_by_role("heading", name="Videoconferência encerrada")).to_be_visible()
    expect(desk.get_by_text("concluído")).to_be_visible(timeout=120_000)
    expect(desk.get_by_text("Gravação incompleta")).to_be_visible()

    db.session.expire_all()
    conference = db.session.get(Conference, conference.id)
    assert conference.recording_incomplete and conference.recording_state == "done"
    connections = db.session.execute(select(ConferenceConnection).where(
        ConferenceConnection.role == "client")).scalars().all()
    assert len(connections) >= 4  # first, reload, second tab, after the media restart
    assert "replaced" in {c.end_reason for c in connections}
    segments = db.session.execute(select(RecordingSegment)).scalars().all()
    series = {(s.role, s.conn_id) for s in segments}
    # Before and after the media process died, for both sides.
    assert len({c for r, c in series if r == "client"}) >= 2
    assert len({c for r, c in series if r == "agent"}) >= 2
    # What was closed before the kill is kept; only segments in progress were lost.
    root = recordings_root(app.config) / str(conference.id)
    leftovers = list(root.glob("*/*.part"))
    assert leftovers, "the segments in progress at the kill are left as .part"
    for s in segments:
        assert (recordings_root(app.config) / s.path).is_file()


@pytest.mark.parametrize("granted, help_text", [
    (False, "O acesso à câmera e ao microfone foi negado"),
    (True, "Nenhuma câmera ou microfone foi encontrado"),
])
def test_device_page_explains_a_refused_permission_and_a_missing_camera(
        live_server, browser, playwright, db, factory, mailbox, granted, help_text):
    """Plain Chromium has no camera: with the permission refused the page says how to allow
    it; with the permission given it says no camera was found. The call cannot start."""
    from playwright.sync_api import expect

    agent = factory.staff(roles=("agent",), email="agente@ar-teste.example", name="Ana Agente")
    conference = scheduled_room(db, factory, agent)
    context = browser.new_context(**playwright.devices["Pixel 7"], locale="pt-BR",
                                  base_url=live_server.url)
    if granted:
        context.grant_permissions(["camera", "microphone"], origin=live_server.url)
    page = _page_in(context)
    try:
        client_enters(page, conference, conference_url(conference))
        expect(page.get_by_role("alert").filter(has_text=help_text)).to_be_visible()
        expect(page.get_by_role("button", name="Iniciar videoconferência")).to_be_disabled()
        assert_accessible(page, "device help")
    finally:
        _close_checking_errors(context)
