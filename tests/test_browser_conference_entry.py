"""The client's way into the room in Debian's Chromium, on a phone (domain step 5): the link
of the scheduling email, the access code with "Não sou um robô", "Prosseguir", then the two
"INSTRUÇÕES VIDEOCONFERÊNCIA" pages ("Próximo", "Prosseguir"). Every page passes axe-core.
VIDEOAR_SCREENSHOTS=1 refreshes docs/screenshots/30-*.png and 31-*.png."""
import re

import pytest
from playwright.sync_api import expect

from app.services import links, scheduling
from tests.support.browser import assert_accessible, screenshot
from tests.test_scheduling import approved, move_opening, schedule

pytestmark = pytest.mark.browser


def test_client_enters_the_code_and_reads_the_instructions_on_a_phone(
        app, live_server, phone, db, factory, agent, mailbox):
    app.config["PUBLIC_URL"] = live_server.url  # the link, made in this process
    conference = schedule(db, approved(db, factory.request(agent=agent)), agent)
    conference = move_opening(db, conference, 1)
    code = scheduling.access_code(conference)
    link_url = links.url_for_link(links.current_link(conference.request, "conference"))
    assert link_url.startswith(live_server.url + "/conferencia/")

    page = phone
    page.goto(link_url)
    expect(page.get_by_role("heading", name="CONFIRMAÇÃO DE CADASTRO DE TITULAR")).to_be_visible()
    code_box = page.get_by_label("Informe o código recebido por e-mail")
    assert code_box.get_attribute("inputmode") == "numeric"
    assert code_box.get_attribute("autocomplete") == "one-time-code"
    assert_accessible(page, "code page")

    # A wrong code first: the page says so and how many tries are left.
    code_box.fill(f"{(int(code) + 1) % 10**6:06d}")
    page.get_by_role("checkbox", name="Não sou um robô").tap()
    expect(page.get_by_role("checkbox", name="Verificado: você não é um robô")).to_be_checked(
        timeout=60_000)
    page.get_by_role("button", name="Prosseguir").tap()
    expect(page.get_by_role("alert")).to_contain_text("Tentativas restantes: 4.")
    assert_accessible(page, "code page with an error")

    page.goto(link_url)  # as the client would, opening the email's link again
    page.get_by_label("Informe o código recebido por e-mail").fill(code)
    page.get_by_role("checkbox", name="Não sou um robô").tap()
    expect(page.get_by_role("checkbox", name="Verificado: você não é um robô")).to_be_checked(
        timeout=60_000)
    screenshot(page, "30-conference-code.png")
    page.get_by_role("button", name="Prosseguir").tap()

    expect(page.get_by_role("heading", name="INSTRUÇÕES VIDEOCONFERÊNCIA")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/conferencia/instrucoes/1$"))
    expect(page.get_by_text("A videoconferência pode ser realizada através de computador")
           ).to_be_visible()
    assert_accessible(page, "instructions 1")
    screenshot(page, "31-conference-instructions.png")
    page.get_by_role("link", name="Próximo").tap()

    expect(page).to_have_url(re.compile(r"/conferencia/instrucoes/2$"))
    expect(page.get_by_text("Utilize fone de ouvido pra manter o sigilo")).to_be_visible()
    assert_accessible(page, "instructions 2")
    expect(page.get_by_role("link", name="Prosseguir")).to_have_attribute(
        "href", "/conferencia/dispositivos")


def test_agent_schedules_the_call_on_the_request_page(live_server, desktop, db, factory, agent,
                                                      mailbox):
    """Agent side of "Agendamento da Vídeo Conferência": the e-CPF reminder, date and time in
    the office's zone, then the room's link to copy and "Entrar na conferência"."""
    from datetime import timedelta

    from app.models import utcnow
    from tests.test_browser_documents import login

    cert_request = approved(db, factory.request(agent=agent))
    page = desktop
    login(page, agent.email)
    page.goto(f"/solicitacoes/{cert_request.id}")
    section = page.locator("#videoconferencia")
    expect(section.get_by_text("CEI/CNO/CAEPF")).to_be_visible()
    day = (utcnow() + timedelta(days=2)).strftime("%Y-%m-%d")
    section.get_by_label("Data").fill(day)
    section.get_by_label("Horário").fill("14:30")
    section.get_by_role("button", name="Agendar videoconferência").click()
    expect(section.get_by_text("agendada")).to_be_visible()
    expect(section.get_by_role("button", name="Copiar link de acesso")).to_be_visible()
    expect(section.get_by_role("link", name="Entrar na conferência")).to_be_visible()
    assert_accessible(page, "request page with the room")
    screenshot(page, "36-agent-schedule.png")
    assert len(mailbox.messages("conference_scheduled")) == 1
