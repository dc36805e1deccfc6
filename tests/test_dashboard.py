"""The agents' queue: oldest first, waiting time in business days, the review promise,
filters, pages, and the htmx fragment."""
import html
import re
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from stdnum.br import cpf as cpf_check

from app.models import CertificateRequest, utcnow
from app.services.calendar import BusinessCalendar
from app.services.requests import new_protocol

ROW = re.compile(r'<tr( class="overdue")?>\s*<td><a href="/solicitacoes/\d+">(\d{10})</a></td>'
                 r'(.*?)</tr>', re.S)


def valid_cpf(n: int) -> str:
    """A CPF with correct check digits (mod 11) for the 9-digit body `n`."""
    digits = [int(c) for c in f"{n:09d}"]
    for _ in range(2):
        total = sum(d * w for d, w in zip(digits, range(len(digits) + 1, 1, -1)))
        digits.append(total * 10 % 11 % 10)
    value = "".join(map(str, digits))
    assert cpf_check.is_valid(value)
    return value


def business_days_ago(n: int, hour: int = 12) -> datetime:
    """A moment after which exactly `n` business days have gone by today (office calendar)."""
    cal = BusinessCalendar.for_office()
    if n == 0:
        return utcnow() - timedelta(minutes=1)
    day = cal.local_date(utcnow())
    counted = 0
    while counted < n:
        if cal.is_business_day(day):
            counted += 1
        day -= timedelta(days=1)
    return datetime(day.year, day.month, day.day, hour, tzinfo=cal.tz)


class Queue:
    """Requests placed in the queue directly in a state, as if they had got there on a date."""

    def __init__(self, factory, db):
        self.factory = factory
        self.db = db
        self._people = 0

    def person(self, name):
        self._people += 1
        return self.factory.person(cpf=valid_cpf(123456000 + self._people), name=name,
                                   email=f"pessoa{self._people}@cliente.example")

    def add(self, person, state, since, product="ecpf-a1", agent=None):
        r = CertificateRequest(protocol=new_protocol(), product=self.factory.product(product),
                               holder=person, state=state, origin="agent", assigned_agent=agent,
                               created_at=since, state_changed_at=since)
        self.db.session.add(r)
        self.db.session.commit()
        return r


@pytest.fixture
def queue(factory, db):
    return Queue(factory, db)


def rows(page):
    """(protocol, overdue, visible text) of each row of the queue table, in order."""
    return [(m.group(2), bool(m.group(1)), " ".join(re.sub(r"<[^>]+>", " ", m.group(3)).split()))
            for m in ROW.finditer(page)]


def pager_link(page, rel):
    """The query of the pager's "prev"/"next" link; its href and hx-get must agree."""
    m = re.search(r'<a href="([^"]+)" hx-get="([^"]+)"[^>]*rel="%s">' % rel, page)
    if m is None:
        return None
    href, hx_get = html.unescape(m.group(1)), html.unescape(m.group(2))
    assert href == hx_get and urlsplit(href).path == "/painel/"
    return {k: v[0] for k, v in parse_qs(urlsplit(href).query).items()}


def test_oldest_first_with_the_wait_in_business_days(client, auth, agent, queue):
    maria = queue.person("Maria da Silva Souza")
    newest = queue.add(maria, "documents_pending", business_days_ago(0))
    oldest = queue.add(maria, "scheduled", business_days_ago(3), product="ecpf-a3", agent=agent)
    middle = queue.add(maria, "pendency", business_days_ago(1))
    queue.add(maria, "issued", business_days_ago(9))  # finished: not in the queue
    auth.login(agent.email)
    response = client.get("/painel/")
    assert response.status_code == 200
    found = rows(response.text)
    assert [p for p, _, _ in found] == [oldest.protocol, middle.protocol, newest.protocol]
    texts = [t for _, _, t in found]
    assert texts[0].endswith("Agendado Ana Agente 3 dias úteis")
    assert "Certificado Digital e-CPF A3" in texts[0] and "Maria da Silva Souza" in texts[0]
    assert texts[1].endswith("Pendência — 1 dia útil")
    assert texts[2].endswith("Aguardando documentos — menos de 1 dia útil")
    assert "3 solicitações" in response.text
    assert "prazo vencido" not in response.text  # no request awaits review


def test_review_promise_of_two_business_days(client, auth, agent, queue, db):
    joao = queue.person("João Pereira")
    on_time = queue.add(joao, "documents_submitted", business_days_ago(1))
    last_day = queue.add(joao, "documents_submitted", business_days_ago(2))
    late = queue.add(joao, "documents_submitted", business_days_ago(3))
    # Waiting on the client, not on the office: the promise does not apply.
    waiting_client = queue.add(joao, "pendency", business_days_ago(5))
    auth.login(agent.email)
    found = {p: (overdue, text) for p, overdue, text in rows(client.get("/painel/").text)}
    overdue, text = found[late.protocol]
    assert overdue and text.endswith("3 dias úteis · prazo vencido")
    overdue, text = found[last_day.protocol]
    assert not overdue and text.endswith("2 dias úteis · vence hoje")
    overdue, text = found[on_time.protocol]
    assert not overdue and text.endswith("Documentos enviados — 1 dia útil")
    overdue, text = found[waiting_client.protocol]
    assert not overdue and text.endswith("Pendência — 5 dias úteis")

    # The promise is the office's setting.
    from app.services.office import get_settings

    get_settings().review_promise_business_days = 1
    db.session.commit()
    found = {p: (overdue, text) for p, overdue, text in rows(client.get("/painel/").text)}
    assert found[last_day.protocol][0] is True
    assert found[on_time.protocol][1].endswith("1 dia útil · vence hoje")


def test_filters_by_state_product_and_agent(client, auth, agent, factory, queue):
    bruno = factory.staff(roles=("agent",), email="bruno@ar-teste.example", name="Bruno Bastos")
    ana_req = queue.add(queue.person("Ana Titular"), "documents_submitted",
                        business_days_ago(2), agent=agent)
    bruno_req = queue.add(queue.person("Beto Titular"), "documents_submitted",
                          business_days_ago(1), product="ecpf-a3", agent=bruno)
    nobody_req = queue.add(queue.person("Caio Titular"), "documents_pending",
                           business_days_ago(1))
    a3 = factory.product("ecpf-a3")
    auth.login(agent.email)

    def protocols(**query):
        response = client.get("/painel/", query_string=query)
        assert response.status_code == 200
        return {p for p, _, _ in rows(response.text)}, response.text

    assert protocols()[0] == {ana_req.protocol, bruno_req.protocol, nobody_req.protocol}
    assert protocols(estado="documents_submitted")[0] == {ana_req.protocol, bruno_req.protocol}
    assert protocols(estado="documents_pending")[0] == {nobody_req.protocol}
    assert protocols(estado="issued")[0] == set()
    assert protocols(estado="nao-existe")[0] == {ana_req.protocol, bruno_req.protocol,
                                                 nobody_req.protocol}
    assert protocols(produto=a3.id)[0] == {bruno_req.protocol}
    assert protocols(agente=agent.id)[0] == {ana_req.protocol}
    assert protocols(agente=bruno.id, produto=a3.id)[0] == {bruno_req.protocol}
    assert protocols(agente=bruno.id, produto=factory.product("ecpf-a1").id)[0] == set()
    assert protocols(agente=0)[0] == {nobody_req.protocol}  # "Sem agente"

    # The per-state counts keep every open state under the product and agent filters, and
    # the chosen filters stay selected in the form.
    found, page = protocols(estado="documents_pending", agente=agent.id)
    assert found == set()
    assert "Nenhuma solicitação com estes filtros." in page
    assert re.search(r"<li><span>Documentos enviados</span> <strong>1</strong></li>", page)
    assert f'<option value="{agent.id}" selected>Ana Agente</option>' in page
    assert '<option value="documents_pending" selected>' in page
    _, page = protocols()
    assert re.search(r"<li><span>Documentos enviados</span> <strong>2</strong></li>", page)
    assert re.search(r"<li><span>Aguardando documentos</span> <strong>1</strong></li>", page)


def test_pages_of_fifty_keep_the_filters(client, auth, agent, queue, db):
    people = [queue.person(f"Pessoa {n}") for n in range(3)]
    start = business_days_ago(30)
    created = []
    for n in range(120):
        since = start + timedelta(hours=n)
        r = CertificateRequest(protocol=new_protocol(), product=queue.factory.product("ecpf-a1"),
                               holder=people[n % 3], state="documents_pending", origin="agent",
                               assigned_agent=agent, created_at=since, state_changed_at=since)
        db.session.add(r)
        created.append(r)
    db.session.commit()
    expected = [r.protocol for r in created]
    auth.login(agent.email)

    first = client.get("/painel/", query_string={"agente": agent.id})
    assert [p for p, _, _ in rows(first.text)] == expected[:50]
    assert "Página 1 de 3" in first.text and "120 solicitações" in first.text
    assert pager_link(first.text, "next") == {"agente": str(agent.id), "pagina": "2"}
    assert pager_link(first.text, "prev") is None

    second = client.get("/painel/", query_string={"agente": agent.id, "pagina": 2})
    assert [p for p, _, _ in rows(second.text)] == expected[50:100]
    assert pager_link(second.text, "prev") == {"agente": str(agent.id), "pagina": "1"}
    assert pager_link(second.text, "next") == {"agente": str(agent.id), "pagina": "3"}

    last = client.get("/painel/", query_string={"agente": agent.id, "pagina": 99})
    assert [p for p, _, _ in rows(last.text)] == expected[100:]
    assert "Página 3 de 3" in last.text and pager_link(last.text, "next") is None
    state_filtered = client.get("/painel/", query_string={"estado": "documents_pending"}).text
    assert pager_link(state_filtered, "next") == {"estado": "documents_pending", "pagina": "2"}
    assert [p for p, _, _ in rows(client.get("/painel/?pagina=-4").text)] == expected[:50]


def test_htmx_gets_only_the_queue_fragment(client, auth, agent, queue):
    r = queue.add(queue.person("Maria Fragmento"), "documents_submitted", business_days_ago(1))
    auth.login(agent.email)
    full = client.get("/painel/")
    assert full.text.lstrip().startswith("<!DOCTYPE html>") or "<html" in full.text
    assert '<form class="filters"' in full.text and 'id="queue"' in full.text
    assert 'hx-target="#queue"' in full.text
    assert "HX-Request" in full.headers.get("Vary", "")

    fragment = client.get("/painel/", query_string={"estado": "documents_submitted"},
                          headers={"HX-Request": "true", "HX-Target": "queue"})
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<section id="queue"')
    assert fragment.text.rstrip().endswith("</section>")
    assert "<html" not in fragment.text and '<form class="filters"' not in fragment.text
    assert [p for p, _, _ in rows(fragment.text)] == [r.protocol]
    assert "HX-Request" in fragment.headers.get("Vary", "")

    # Another target, or htmx restoring a page from history, gets the whole page.
    for headers in ({"HX-Request": "true", "HX-Target": "elsewhere"},
                    {"HX-Request": "true", "HX-Target": "queue",
                     "HX-History-Restore-Request": "true"}):
        assert '<form class="filters"' in client.get("/painel/", headers=headers).text


def test_the_queue_needs_a_staff_login(client):
    response = client.get("/painel/", headers={"HX-Request": "true", "HX-Target": "queue"})
    assert response.status_code == 302
    assert "/equipe/entrar" in response.location


def test_the_promise_counts_business_days_of_the_office(app, queue):
    """Sent on a Friday evening before São Paulo's 9 de julho: the deadline moves past the
    weekend and the holiday."""
    from zoneinfo import ZoneInfo

    from app.services.queue import load_queue

    sp = ZoneInfo("America/Sao_Paulo")
    sent = queue.add(queue.person("Rita Feriado"), "documents_submitted",
                     datetime(2025, 7, 4, 19, 30, tzinfo=sp))

    def row_on(day, hour=10):
        [row] = load_queue(now=datetime(2025, 7, day, hour, tzinfo=sp)).rows
        assert row.protocol == sent.protocol
        return row.waiting_business_days, row.due_today, row.overdue

    assert row_on(5) == (0, False, False)  # Saturday
    assert row_on(7) == (1, False, False)  # Monday
    assert row_on(8) == (2, True, False)  # Tuesday: the last day of the promise
    assert row_on(9) == (2, True, False)  # 9 de julho, a holiday in SP: still not late
    assert row_on(10) == (3, False, True)  # Thursday: late
    # 02:00 UTC on Friday the 11th is still Thursday in São Paulo.
    [row] = load_queue(now=datetime(2025, 7, 11, 2, 0, tzinfo=ZoneInfo("UTC"))).rows
    assert row.waiting_business_days == 3
    assert row.since == datetime(2025, 7, 4, 19, 30, tzinfo=sp)
