"""Every user-visible string is translated: pt-BR pages show no English, English pages show no
Portuguese, and the catalogs cover every string of the source.

- The catalogs are checked against a fresh extraction of the source (scripts/i18n.sh pot), so a
  string added without a translation fails here, not in front of a user.
- The pages are found in the app's URL map: every GET route is opened (as a visitor and as a
  staff member holding every role), every form on them is sent empty and with bad values, and
  the visible text (with titles, labels and alt texts) is searched for words of the other
  language. A new route whose URL needs a value this module does not know fails until
  `url_values` below gives it one.
"""
import re
import subprocess
import sys
from collections import Counter
from datetime import date
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from werkzeug.datastructures import MultiDict

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "app" / "translations"
CATALOGS = {"pt_BR": TRANSLATIONS / "pt_BR" / "LC_MESSAGES" / "messages.po",
            "en": TRANSLATIONS / "en" / "LC_MESSAGES" / "messages.po"}
HTML_LANG = {"pt_BR": "pt-BR", "en": "en"}

# --- catalogs ---------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"%\(\w+\)[-#0 +]*\d*(?:\.\d+)?[diouxXeEfFgGcrs]|%[sd]|\{\w*\}")


def _placeholders(text):
    return Counter(_PLACEHOLDER.findall(text))


def _forms(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _read_po(path, locale):
    with open(path, "rb") as f:
        return read_po(f, locale=locale)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """The catalog template extracted now from the source, as scripts/i18n.sh extract does."""
    pot = tmp_path_factory.mktemp("i18n") / "messages.pot"
    pybabel = Path(sys.executable).with_name("pybabel")
    subprocess.run(["bash", str(ROOT / "scripts" / "i18n.sh"), "pot", str(pot)], check=True,
                   env={"PATH": "/usr/bin:/bin", "PYBABEL": str(pybabel)}, cwd=ROOT)
    with open(pot, "rb") as f:
        catalog = read_po(f)
    assert len(catalog) > 100, "the extraction found almost nothing: check babel.cfg"
    return catalog


def test_plural_forms():
    assert _read_po(CATALOGS["pt_BR"], "pt_BR").plural_forms == "nplurals=2; plural=(n > 1);"
    assert _read_po(CATALOGS["en"], "en").plural_forms == "nplurals=2; plural=(n != 1);"


def test_every_string_of_the_source_has_an_english_translation(extracted):
    english = _read_po(CATALOGS["en"], "en")
    problems = []
    for message in extracted:
        if not message.id:
            continue
        msgid = _forms(message.id)
        entry = english.get(message.id)
        where = ", ".join(f"{f}:{n}" for f, n in message.locations[:2])
        if entry is None:
            problems.append(f"missing: {msgid[0]!r} ({where})")
            continue
        if entry.fuzzy:
            problems.append(f"fuzzy (review it): {msgid[0]!r}")
        strings = _forms(entry.string)
        if len(strings) != len(msgid) or not all(s.strip() for s in strings):
            problems.append(f"not translated: {msgid[0]!r} ({where})")
            continue
        for source, text in zip(msgid, strings):
            if _placeholders(source) != _placeholders(text):
                problems.append(f"placeholders differ: {source!r} → {text!r}")
    assert not problems, ("English catalog incomplete; run scripts/i18n.sh extract, translate "
                          "app/translations/en/LC_MESSAGES/messages.po, then scripts/i18n.sh "
                          "compile:\n" + "\n".join(problems))


def test_the_pt_br_catalog_is_complete(extracted):
    portuguese = _read_po(CATALOGS["pt_BR"], "pt_BR")
    problems = []
    for message in extracted:
        if not message.id:
            continue
        entry = portuguese.get(message.id)
        if entry is None or entry.fuzzy or _forms(entry.string) != _forms(message.id):
            problems.append(repr(_forms(message.id)[0]))
    assert not problems, ("pt_BR catalog out of date (its msgstr repeat the msgids); run "
                          "scripts/i18n.sh extract:\n" + "\n".join(problems))


@pytest.mark.parametrize("locale", sorted(CATALOGS))
def test_compiled_catalogs_are_current(locale):
    """The app reads the .mo files: a stale one shows an old text or none."""
    po = _read_po(CATALOGS[locale], locale)
    mo_path = CATALOGS[locale].with_suffix(".mo")
    assert mo_path.exists(), "run scripts/i18n.sh compile"
    with open(mo_path, "rb") as f:
        mo = read_mo(f)
    stale = [m.id for m in po if m.id and not m.fuzzy and all(_forms(m.string))
             and (mo.get(m.id) is None or _forms(mo.get(m.id).string) != _forms(m.string))]
    assert not stale, f"{len(stale)} messages differ from the .mo; run scripts/i18n.sh compile"


# --- library messages ---------------------------------------------------------------------------

def test_the_library_table_covers_every_wtforms_message():
    import wtforms

    from app.i18n import PLURAL, SINGULAR

    with open(Path(wtforms.__file__).parent / "locale" / "wtforms.pot", "rb") as f:
        catalog = read_po(f)
    missing = [m.id for m in catalog if m.id and (
        (m.pluralizable and m.id[0] not in PLURAL) or (not m.pluralizable and m.id not in SINGULAR))]
    assert not missing, f"add these WTForms messages to app/i18n.py: {missing}"


@pytest.fixture(scope="module")
def bare_app():
    """The app without a database: enough for forms and error pages that touch no table."""
    from app import create_app
    from app.config import TestConfig

    return create_app(TestConfig)


def _library_errors(app, locale):
    from flask import request
    from wtforms import (DateField, EmailField, IntegerField, SelectField, SelectMultipleField,
                         StringField)
    from wtforms.validators import Email, EqualTo, InputRequired, Length, NumberRange

    from app.forms import FlaskForm

    class Sample(FlaskForm):
        class Meta:
            csrf = False

        day = DateField()
        count = IntegerField()
        small = IntegerField(validators=[NumberRange(1, 10)])
        short = StringField("Curto", validators=[Length(max=3)])
        one = StringField(validators=[Length(max=1)])
        long = StringField(validators=[Length(min=5)])
        email = EmailField(validators=[Email()])
        again = StringField("Repita", validators=[EqualTo("short")])
        needed = StringField(validators=[InputRequired()])
        kind = SelectField(choices=[("a", "A")])
        number = SelectField(choices=[(1, "1")], coerce=int)
        many = SelectMultipleField(choices=[("a", "A")])

    data = MultiDict([("day", "31/02/2024"), ("count", "três"), ("small", "50"),
                      ("short", "abcdef"), ("one", "ab"), ("long", "ab"), ("email", "x@"),
                      ("again", "outro"), ("kind", "z"), ("number", "z"), ("many", "z")])
    headers = {"Cookie": f"videoar_lang={locale}"}
    with app.test_request_context("/", headers=headers):
        assert str(request.cookies.get("videoar_lang")) == locale
        form = Sample(formdata=data)
        assert not form.validate()
        return {name: " ".join(map(str, errors)) for name, errors in form.errors.items()}


def test_wtforms_messages_in_pt_br(bare_app):
    assert _library_errors(bare_app, "pt_BR") == {
        "day": "Data inválida.",
        "count": "Informe um número inteiro.",
        "small": "Informe um número entre 1 e 10.",
        "short": "Use no máximo 3 caracteres.",
        "one": "Use no máximo 1 caractere.",
        "long": "Use pelo menos 5 caracteres.",
        "email": "E-mail inválido.",
        "again": "Deve ser igual ao campo “Curto”.",
        "needed": "Preencha este campo.",
        "kind": "Escolha uma das opções da lista.",
        "number": "Escolha uma das opções da lista.",
        "many": "'z' não é uma opção válida.",
    }


def test_wtforms_messages_in_english(bare_app):
    assert _library_errors(bare_app, "en") == {
        "day": "Invalid date.",
        "count": "Enter a whole number.",
        "small": "Enter a number between 1 and 10.",
        "short": "Use at most 3 characters.",
        "one": "Use at most 1 character.",
        "long": "Use at least 5 characters.",
        "email": "Invalid email address.",
        "again": "Must match the field “Curto”.",
        "needed": "Please fill in this field.",
        "kind": "Choose one of the options in the list.",
        "number": "Choose one of the options in the list.",
        "many": "'z' is not a valid option.",
    }


# --- visible text -------------------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
        "source", "track", "wbr"}
# Not read: scripts, styles and codes (Message-ID, audit action names, a generated password).
HIDDEN = {"script", "style", "code", "template"}
TEXT_ATTRIBUTES = {"title", "alt", "placeholder", "aria-label", "aria-description",
                   "aria-roledescription", "aria-valuetext", "label",
                   "data-copied"}  # what a "Copiar" button says once it copied


class Page(HTMLParser):
    """The text a person sees or hears on a page, and its forms."""

    def __init__(self, body, lang_tag):
        super().__init__(convert_charrefs=True)
        self.lang_tag = lang_tag
        self.html_lang = None
        self.parts = []
        self.forms = []
        self._stack = []  # (tag, hidden) of the open elements
        self.feed(body)
        self.close()
        self.text = " ".join(" ".join(self.parts).split())

    def _hidden(self):
        return any(hidden for _, hidden in self._stack)

    def _open(self, tag, attrs, push):
        attrs = {k: v or "" for k, v in attrs}
        if tag == "html":
            self.html_lang = attrs.get("lang")
        # An element in another language says so with `lang` (the language switch does).
        hidden = tag in HIDDEN or (tag != "html" and "lang" in attrs
                                   and attrs["lang"] != self.lang_tag)
        if not hidden and not self._hidden():
            self.parts.extend(attrs[a] for a in TEXT_ATTRIBUTES if attrs.get(a))
            if tag == "input" and attrs.get("type") in ("submit", "button", "reset"):
                self.parts.append(attrs.get("value", ""))
        self._form_element(tag, attrs)
        if push and tag not in VOID:
            self._stack.append((tag, hidden))

    def handle_starttag(self, tag, attrs):
        self._open(tag, attrs, push=True)

    def handle_startendtag(self, tag, attrs):
        self._open(tag, attrs, push=False)

    def handle_endtag(self, tag):
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                del self._stack[i:]
                break

    def handle_data(self, data):
        if not self._hidden():
            self.parts.append(data)

    def _form_element(self, tag, attrs):
        if tag == "form":
            self.forms.append({"action": attrs.get("action", ""),
                               "method": attrs.get("method", "get").lower(),
                               "fields": [], "formactions": []})
            return
        if not self.forms:
            return
        form = self.forms[-1]
        if tag == "input" and attrs.get("name"):
            form["fields"].append({"name": attrs["name"], "type": attrs.get("type", "text"),
                                   "value": attrs.get("value", "")})
        elif tag in ("select", "textarea") and attrs.get("name"):
            form["fields"].append({"name": attrs["name"], "type": tag, "value": ""})
        elif tag == "button" and attrs.get("formaction"):
            form["formactions"].append(attrs["formaction"])


# pt-BR pages: English words (function words and the words of web forms and HTTP errors), with
# word boundaries. Words that are also Portuguese (a, as, do, no, me, se) or that pt-BR uses as
# they are (link, token, software, site, e-mail, spam, hash, login) are not listed.
ENGLISH = re.compile(r"\b(?:" + "|".join("""
the and is are was were be been being not of to in on at by for from with without this that
these those there here your you our we it its has have had will can cannot could should would
must please field fields required invalid error errors found submit value values choice choices
page pages request requests too many method allowed forbidden unauthorized internal server bad
missing expired session characters character least most between number integer date time valid
enter select sign log back home next previous save cancel delete edit new name user users
search filter loading close yes send sent failed queued sending attempts subject created active
inactive products product people person queue agent settings office day days month months
business overdue today since less than help contact phone address city state company document
documents protocol certificate upload password account try again later wait minute minutes
hour hours per when where what which who how all any some none only also just out up off if or
an""".split()) + r")\b", re.IGNORECASE)

# English pages: Portuguese words, and any word with a Portuguese accent.
PORTUGUESE = re.compile(r"\b(?:\w*[ãõçáéíóúâêôà]\w*|" + "|".join("""
de da das dos para com uma um seu sua seus suas pelo pela ao aos em na nas nos foi ser mais sem
este esta isso nenhum nenhuma que ou os dados senha entrar sair salvar cancelar voltar pessoa
pessoas produto produtos fila protocolo titular agente estado nome telefone enviar enviado
documentos certificado campo obrigatorio erro tentativas ajuda solicitar cadastrar cadastro
consultar emitir preencha informe escolha confira novo nova""".split()) + r")\b", re.IGNORECASE)

# Brazilian place names in the time-zone choices, and the states' abbreviations (UF).
PROPER_NOUNS = ["Fernando de Noronha", "Mato Grosso do Sul", "Mato Grosso", "Brasília", "Rondônia",
                "Roraima", "Amazonas", "Acre"]
UF_CODES = re.compile(r"\b(?:AC|AL|AP|AM|BA|CE|DF|ES|GO|MA|MT|MS|MG|PA|PB|PR|PE|PI|RJ|RN|RS|RO|"
                      r"RR|SC|SP|SE|TO)\b")
EMAILS_AND_URLS = re.compile(r"\S+@\S+|https?://\S+|\b\w+(?:/\w+)+\b")


def _without_names(text, stored):
    """The page's text less what is data rather than interface: e-mail addresses, URLs, UF
    codes, proper nouns and (for the English pages) the strings stored in the database, which
    stay as people typed them (names, product names, the e-mails sent in pt-BR)."""
    for value in stored:
        text = text.replace(value, " ")
    for noun in PROPER_NOUNS:
        text = text.replace(noun, " ")
    return UF_CODES.sub(" ", EMAILS_AND_URLS.sub(" ", text))


class Walk:
    """Opens pages and sends forms, and collects every text in the wrong language."""

    def __init__(self, client, locale, db=None):
        self.client = client
        self.locale = locale
        self.lang_tag = HTML_LANG[locale]
        self.db = db
        self.problems = []
        self.forms = {}
        self.texts = []

    def check(self, label, response, server_error_expected=False):
        if response.status_code >= 500 and not server_error_expected:
            self.problems.append(f"{label}: answered {response.status_code}")
        if "text/html" not in response.content_type:
            return None
        page = Page(response.text, self.lang_tag)
        if "<html" in response.text and page.html_lang != self.lang_tag:
            self.problems.append(f"{label}: <html lang={page.html_lang!r}>")
        stored = _stored_strings(self.db) if self.db is not None and self.locale == "en" else ()
        text = _without_names(page.text, stored)
        self.texts.append(page.text)
        pattern = ENGLISH if self.locale == "pt_BR" else PORTUGUESE
        words = sorted({m.group(0) for m in pattern.finditer(text)}, key=str.lower)
        if words:
            first = pattern.search(text)
            context = text[max(0, first.start() - 60): first.end() + 60]
            self.problems.append(f"{label}: {words} … {context!r}")
        return page

    def get(self, url, label=None, **kwargs):
        response = self.client.get(url, follow_redirects=True, **kwargs)
        page = self.check(label or f"GET {url}", response)
        if page is not None:
            here = response.request.path
            for form in page.forms:
                action = form["action"] or here
                for target in [action] + form["formactions"]:
                    self.forms.setdefault((form["method"], urlsplit(target).path), form)
        return response

    def send_forms(self, skip=()):
        """Each form sent empty, then with a long text and with a negative number in every
        visible field (a form of buttons only is sent once)."""
        for (method, action), form in sorted(self.forms.items()):
            if any(action.startswith(prefix) for prefix in skip):
                continue
            visible = [f for f in form["fields"] if f["type"] != "hidden"]
            passes = ("", "x" * 1001, "-5") if visible else (None,)
            for bad in passes:
                data = [(f["name"], f["value"]) for f in form["fields"] if f["type"] == "hidden"]
                if bad:
                    data += [(f["name"], bad) for f in visible if f["type"] != "submit"]
                elif bad == "":
                    data += [(f["name"], "") for f in visible
                             if f["type"] not in ("checkbox", "radio", "submit")]
                label = f"{method.upper()} {action} with {bad[:5] + '…' if bad else bad!r}"
                if method == "post":
                    response = self.client.post(action, data=MultiDict(data), csrf=False,
                                                follow_redirects=True)
                else:
                    response = self.client.get(f"{action}?{urlencode(data)}",
                                               follow_redirects=True)
                self.check(label, response)


def _send_public_request(client, factory):
    """A valid request from the public site, with the robot check solved as the widget does."""
    import altcha

    challenge = altcha.Challenge.from_dict(client.get("/altcha/desafio").get_json())
    payload = altcha.Payload(challenge, altcha.solve_challenge(challenge, timeout=30))
    response = client.post("/solicitar", follow_redirects=True, data={
        "product_id": factory.product().id, "cpf": "390.533.447-05", "name": "João Pedro Alves",
        "email": "joao@cliente.example", "phone": "(21) 99876-5432",
        "altcha": payload.to_base64()})
    assert response.status_code == 200, response.status_code
    return response


def _set_language(client, locale):
    response = client.post(f"/equipe/idioma/{locale}", data={"next": "/"})
    assert response.status_code == 303


def _stored_strings(db):
    """Every string stored in the database, longest first."""
    from sqlalchemy import String, select

    values = set()
    for table in db.metadata.sorted_tables:
        columns = [c for c in table.columns if isinstance(c.type, String)]
        if columns:
            for row in db.session.execute(select(*columns)):
                values.update(" ".join(v.split()) for v in row
                              if isinstance(v, str) and len(v.strip()) >= 3)
    return sorted(values, key=len, reverse=True)


@pytest.fixture
def office_data(app, factory, mailbox):
    """One of each object a URL can name, with the roles and states that show most of the UI."""
    from sqlalchemy import select

    from app.extensions import db
    from app.models import EmailMessage
    from app.services import admin as admin_service
    from app.services import links, people
    from app.services import requests as request_service

    admin = factory.staff(roles=("agent", "verifier", "admin"), email="admin@ar-teste.example",
                          name="Alice Admin")
    other = factory.staff(roles=("verifier",), email="vera@ar-teste.example", name="Vera Lima")
    person = factory.person()
    cert_request = factory.request(person=person, agent=admin)
    company = people.find_or_register_company("11444777000161", "Padaria Pão Quente Ltda",
                                              "Campinas", "SP", person)
    factory.request(person=person, product_code="ecnpj-a1", company=company)
    cancelled = factory.request(person=person, product_code="ecpf-a3")
    request_service.cancel_request(cancelled, "Cliente desistiu")
    closure = admin_service.add_closure(date(2031, 1, 2), "Recesso do escritório")
    from app.services import scheduling
    room = scheduling.open_instant_room(
        factory.request(person=person, product_code="enotariado", agent=admin), admin)
    db.session.commit()
    email = db.session.execute(select(EmailMessage).order_by(EmailMessage.id)).scalars().first()
    link = links.current_link(cert_request, "documents")
    return {
        "admin": admin,
        "url_values": {"person_id": person.id, "request_id": cert_request.id,
                       "product_id": factory.product().id, "user_id": other.id,
                       "email_id": email.id, "closure_id": closure.id,
                       "token": links.token_for(link),
                       # Pages of uploaded documents (files, or a 404 page without one).
                       "step": 1, "page_id": 1, "variant": "web", "index": 0,
                       # The call's console (a room just opened; no capture yet).
                       "conference_id": room.id, "capture_id": 1},
    }


# Not pages: static files.
NOT_PAGES = {"static"}
# Sent on their own at the end: they change the language or end the session.
LAST_FORMS = ("/equipe/idioma/", "/equipe/sair")


def _page_urls(app, url_values):
    urls = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if "GET" not in rule.methods or rule.endpoint in NOT_PAGES:
            continue
        unknown = set(rule.arguments) - set(url_values) - set(rule.defaults or ())
        assert not unknown, (f"{rule.rule}: give tests/test_i18n.py a value for {unknown} "
                             f"(office_data's url_values)")
        values = {k: url_values[k] for k in rule.arguments if k in url_values}
        urls.append(rule.build(values)[1])
    return urls


# Texts the walk must have seen: messages that the bad values sent to the forms bring up (ours
# and WTForms'), the queue, and the confirmation of the client's request.
EXPECTED_TEXTS = {
    "pt_BR": ["Preencha este campo.", "Informe um número inteiro.", "Use no máximo 200 caracteres.",
              "Escolha uma das opções da lista.", "CPF inválido. Confira os números digitados.",
              "Fila de solicitações", "Solicitação recebida"],
    "en": ["Please fill in this field.", "Enter a whole number.", "Use at most 200 characters.",
           "Choose one of the options in the list.", "Invalid CPF. Check the digits you typed.",
           "Request queue", "Request received"],
}


@pytest.mark.parametrize("locale", ["pt_BR", "en"])
def test_no_page_shows_text_in_the_other_language(app, client, auth, db, factory, office_data,
                                                  locale):
    """pt-BR pages have no English words; English pages have no Portuguese ones."""
    if locale != "pt_BR":
        _set_language(client, locale)
    walk = Walk(client, locale, db)
    public_extras = ["/documentos/" + "x" * 43,      # an unknown link
                     "/nao-existe",                  # 404
                     "/equipe/sair"]                 # 405: a POST-only address opened with GET
    urls = _page_urls(app, office_data["url_values"])

    # As a visitor: the public pages; a staff page leads to the login page.
    for url in urls + public_extras:
        walk.get(url)
    walk.send_forms(skip=LAST_FORMS)
    # The client's own request, sent as it should be: the confirmation page.
    walk.check("POST /solicitar (valid)", _send_public_request(client, factory))

    # As staff with every role.
    walk.forms.clear()
    assert auth.login(office_data["admin"].email).status_code == 302
    for url in urls + public_extras + ["/painel/?estado=documents_pending&produto=1&agente=0"]:
        walk.get(url)
    walk.get("/painel/", label="GET /painel/ (htmx)",
             headers={"HX-Request": "true", "HX-Target": "queue"})
    walk.send_forms(skip=LAST_FORMS)
    walk.check("POST /equipe/sair", client.post("/equipe/sair", follow_redirects=True))

    # The walk saw the pages and the library's messages, not only error pages.
    seen = "\n".join(walk.texts)
    expected = EXPECTED_TEXTS[locale]
    assert len(walk.texts) > 60 and all(text in seen for text in expected), (
        [text for text in expected if text not in seen])
    assert not walk.problems, "\n".join(walk.problems)


def test_http_errors_have_translated_pages(app, client):
    """Every HTTP error, with a handler of its own or not, shows the translated page."""
    from flask import abort

    app.config["PROPAGATE_EXCEPTIONS"] = False

    def fail():
        raise RuntimeError("boom")

    app.add_url_rule("/_teste/falha", "test_fail", fail)
    app.add_url_rule("/_teste/409", "test_409", lambda: abort(409))
    app.add_url_rule("/_teste/418", "test_418", lambda: abort(418))
    app.add_url_rule("/_teste/503", "test_503", lambda: abort(503))
    cases = {
        ("GET", "/nao-existe"): (404, "Página não encontrada", "Page not found"),
        ("GET", "/equipe/sair"): (405, "Ação não permitida", "Action not allowed"),
        ("POST", "/"): (405, "Ação não permitida", "Action not allowed"),
        ("GET", "/_teste/409"): (409, "Conflito", "Conflict"),
        ("GET", "/_teste/418"): (418, "Não foi possível atender o pedido",
                                 "The request could not be completed"),
        ("GET", "/_teste/503"): (503, "Serviço indisponível", "Service unavailable"),
        ("GET", "/_teste/falha"): (500, "Erro interno", "Internal error"),
        ("POST", "/equipe/entrar"): (400, "Não foi possível confirmar o envio",
                                     "Your submission could not be confirmed"),
    }
    for locale in ("pt_BR", "en"):
        if locale == "en":
            _set_language(client, "en")
        walk = Walk(client, locale)
        for (method, url), (status, pt_title, en_title) in cases.items():
            response = client.open(url, method=method, **({"csrf": False} if method == "POST" else {}))
            assert response.status_code == status, (method, url, response.status_code)
            title = pt_title if locale == "pt_BR" else en_title
            assert f"<h1>{title}</h1>" in response.text, (method, url, locale)
            walk.check(f"{method} {url}", response, server_error_expected=status >= 500)
            if status == 405:  # the page keeps the methods the address accepts
                assert response.headers["Allow"] and method not in response.headers["Allow"]
        assert not walk.problems, "\n".join(walk.problems)
    # An error asked for by htmx gets the fragment, translated too.
    response = client.get("/nao-existe", headers={"HX-Request": "true"})
    assert response.status_code == 404 and "<html" not in response.text
    assert "Page not found" in response.text


def test_rate_limit_page_is_translated(app, client):
    """Flask-Limiter's 429 shows the app's page, not the library's English one."""
    limit = int(app.config.get("ALTCHA_CHALLENGE_RATE_LIMIT", "30 per minute").split()[0])
    for _ in range(limit):
        assert client.get("/altcha/desafio").status_code == 200
    response = client.get("/altcha/desafio")
    assert response.status_code == 429
    assert "Muitas tentativas" in response.text
    Walk(client, "pt_BR").check("429", response)
    _set_language(client, "en")
    response = client.get("/altcha/desafio")
    assert response.status_code == 429 and "Too many attempts" in response.text


def test_language_switch(client, auth, agent):
    page = client.get("/equipe/entrar")
    assert '<html lang="pt-BR">' in page.text and "<h1>Acesso da equipe</h1>" in page.text
    switch = Page(page.text, "pt-BR")
    assert ("post", "/equipe/idioma/en") in {(f["method"], a) for f in switch.forms
                                            for a in f["formactions"]}
    # A real button, named in its own language, inside a labelled landmark.
    assert re.search(r'<nav class="lang-switch" aria-label="Idioma">.*?<button type="submit" '
                     r'class="link" lang="en" formaction="/equipe/idioma/en">English</button>',
                     page.text, re.S)
    assert 'name="next" value="/equipe/entrar"' in page.text

    # The switch needs the form's CSRF token, like every POST.
    assert client.post("/equipe/idioma/en", data={"next": "/equipe/entrar"},
                       csrf=False).status_code == 400
    # An unknown language is refused; a foreign `next` is not followed.
    assert client.post("/equipe/idioma/fr").status_code == 404
    response = client.post("/equipe/idioma/en", data={"next": "//evil.example/"})
    assert response.status_code == 303 and "evil" not in response.location

    response = client.post("/equipe/idioma/en", data={"next": "/equipe/entrar"})
    assert response.status_code == 303 and response.location.endswith("/equipe/entrar")
    page = client.get("/equipe/entrar")
    assert '<html lang="en">' in page.text and "<h1>Staff sign-in</h1>" in page.text
    walk = Walk(client, "en")
    walk.check("GET /equipe/entrar (en)", page)
    assert not walk.problems, walk.problems
    assert 'lang="pt-BR" formaction="/equipe/idioma/pt_BR">Português</button>' in page.text

    # The choice outlives logging in (a new session) and out.
    auth.login(agent.email)
    assert "<h1>Request queue</h1>" in client.get("/painel/").text
    auth.logout()
    assert "<h1>Staff sign-in</h1>" in client.get("/equipe/entrar").text

    client.post("/equipe/idioma/pt_BR", data={"next": "/equipe/entrar"})
    assert "<h1>Acesso da equipe</h1>" in client.get("/equipe/entrar").text


def test_client_emails_stay_pt_br_when_the_agent_reads_english(client, auth, agent, factory,
                                                                mailbox):
    """The client reads pt-BR whatever language the agent's screen is in."""
    person = factory.person()
    _set_language(client, "en")
    auth.login(agent.email)
    response = client.post(f"/pessoas/{person.id}/certificacao/remota", follow_redirects=True,
                           data={"product_id": factory.product().id, "confirmed": "y"})
    assert "The client has been emailed the link to upload the documents." in response.text
    (message,) = mailbox.messages()
    assert message.subject.startswith("Importe seus documentos — protocolo ")
    assert "Prezado(a) Maria da Silva Souza," in message.body_text
    assert '<html lang="pt-BR">' in message.body_html


@pytest.mark.browser
def test_language_switch_with_the_keyboard_alone(live_server, phone):
    """The footer's switch is reached with Tab and used with Enter or Space, on a phone."""
    from playwright.sync_api import expect

    from tests.support.browser import assert_accessible

    page = phone
    page.goto("/")
    expect(page.locator("html")).to_have_attribute("lang", "pt-BR")
    # The last link before the switch: the privacy notice's contact.
    page.locator(".privacy-notice a").last.focus()
    page.keyboard.press("Tab")
    english = page.get_by_role("navigation", name="Idioma").get_by_role("button", name="English")
    expect(english).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Digital certificate by video call")).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    assert_accessible(page, "home in English")

    page.locator(".privacy-notice a").last.focus()
    page.keyboard.press("Tab")
    portuguese = page.get_by_role("navigation", name="Language").get_by_role("button",
                                                                           name="Português")
    expect(portuguese).to_be_focused()
    page.keyboard.press("Space")
    expect(page.get_by_role("heading", name="Certificado digital por videoconferência")
           ).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", "pt-BR")
